"""The dashboard's ears: one SUB socket per endpoint, read on one thread, newest wins.

The thread drains every socket (each a `streamemo.Client`'s: the same socket options, keys
and reconnection as every other reader) as fast as messages come and folds each into that endpoint's `EndpointState` (cheap: a
JSON parse and a few assignments). It never queues
messages for the UI. Instead it calls `notify()` to say "something changed", at most
`max_rate_hz` times a second and never again until the UI has called `acknowledge()`: so
however fast the daemon publishes, at most one notification waits in the app's queue and
the app always draws the newest state. The app then reads `views()`.

ZeroMQ reconnects by itself; a socket monitor tells us when the connection comes and goes,
which is what separates "disconnected" from "stale" (connected but silent). Connected means
the ZMTP handshake succeeded, not merely TCP: with CURVE a wrong key gets through TCP and
fails the handshake, and that is shown as "refused".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from streamemo.client import Client
from streamemo.dashboard.state import EndpointState, EndpointView

HANDSHAKE_FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the publisher refused this dashboard's CURVE key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake failed: CURVE on one side only, or the wrong server key",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed (wrong or missing CURVE keys?)",
}
MONITORED = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
for _event in HANDSHAKE_FAILURES:
    MONITORED |= _event

POLL_MS = 100  # how often the thread wakes when nothing arrives: bounds stop and stale latency
HEARTBEAT_S = 0.5  # redraw at least this often, so the timeline scrolls and "stale" shows up
DRAIN_MAX = 500  # messages taken from one socket before looking at the others and the clock
RCVHWM = 100  # if this thread ever falls behind, ZeroMQ drops rather than buffers a backlog


def check_endpoint(endpoint: str) -> None:
    """Raises StreamemoError for an endpoint ZeroMQ cannot connect to at all (a typo), before
    the UI starts, so the message lands on a normal terminal line."""
    from streamemo.publish import connect_checked

    socket = zmq.Context.instance().socket(zmq.SUB)
    try:
        connect_checked(socket, endpoint)
    finally:
        socket.close(linger=0)


class Receiver:
    def __init__(self, endpoints: list[str], clock: Callable[[], float] = time.time, max_rate_hz: float = 20.0,
                 curve=None):
        """`curve`: a `streamemo.security.CurveClient` for encrypted publishers (one key set
        for every endpoint, as `streamemo subscribe` has)."""
        if not endpoints:
            raise ValueError("at least one endpoint")
        self.curve = curve
        # Wall clock, not monotonic: latency is receipt time minus the daemon's t_capture.
        self.clock = clock
        self.states = [EndpointState(e) for e in endpoints]
        self.min_interval = 1.0 / max_rate_hz
        self.received = 0  # messages taken off the sockets, malformed included
        self._lock = threading.Lock()
        self._pending = False
        self._stop = threading.Event()

    # --- called from the UI thread -------------------------------------------------------

    def views(self) -> list[EndpointView]:
        now = self.clock()
        with self._lock:
            return [s.view(now) for s in self.states]

    def acknowledge(self) -> None:
        """The UI has drawn the last notification: the next change may notify again."""
        self._pending = False

    def reset_timeline(self, index: int) -> None:
        with self._lock:
            self.states[index].reset_timeline()

    def stop(self) -> None:
        self._stop.set()

    # --- the receiving thread ------------------------------------------------------------

    def run(self, notify: Callable[[], object], cancelled: Callable[[], bool] = lambda: False) -> None:
        """Receives until `stop()` or `cancelled()`; sockets live and die on this thread."""
        context = zmq.Context()
        clients: list[Client] = []
        poller = zmq.Poller()
        try:
            for state in self.states:
                client = Client(state.endpoint, hwm=RCVHWM, context=context, curve=self.curve,
                                monitor_events=MONITORED)
                poller.register(client.socket, zmq.POLLIN)
                poller.register(client.monitor, zmq.POLLIN)
                clients.append(client)
            self._loop(poller, clients, notify, cancelled)
        finally:
            for client in clients:
                client.close()
            context.term()

    def _loop(self, poller, clients: list[Client], notify, cancelled) -> None:
        last_notify = 0.0
        shown: list[str] = []  # connection states as last notified
        changed = True  # draw once at start
        while not (self._stop.is_set() or cancelled()):
            ready = dict(poller.poll(POLL_MS))
            now = self.clock()
            with self._lock:
                for state, client in zip(self.states, clients):
                    if client.monitor in ready:
                        changed |= self._drain_monitor(client.monitor, state, now)
                    if client.socket in ready:
                        changed |= self._drain(client, state, now)
                connections = [s.connection(now) for s in self.states]
            if connections != shown:
                changed = True
            due = now - last_notify >= self.min_interval
            if (changed and due or now - last_notify >= HEARTBEAT_S) and not self._pending:
                self._pending = True
                shown, last_notify, changed = connections, now, False
                notify()

    def _drain(self, client: Client, state: EndpointState, now: float) -> bool:
        # Frames, not client.take(): the state decodes them itself (protocol.decode_message, as
        # the client does), so it can count and show a malformed one.
        n = 0
        while n < DRAIN_MAX:
            try:
                frames = client.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            state.receive(frames, now)
            n += 1
        self.received += n
        return n > 0

    @staticmethod
    def _drain_monitor(monitor, state: EndpointState, now: float) -> bool:
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return True
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                state.set_connected(True, now)
            elif kind == zmq.EVENT_DISCONNECTED:
                state.set_connected(False, now)
            elif kind in HANDSHAKE_FAILURES:
                state.set_refused(HANDSHAKE_FAILURES[kind])
