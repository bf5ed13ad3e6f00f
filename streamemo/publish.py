"""ZeroMQ publishing and subscribing.

The publisher never blocks the pipeline: a PUB socket drops messages for a subscriber
whose queue (high-water mark) is full, sends are non-blocking, and linger is 0 so closing
never waits for a dead peer. A slow or vanished subscriber costs the daemon nothing.
"""

from __future__ import annotations

import errno
import logging

import zmq

from streamemo import StreamemoError
from streamemo.protocol import ProtocolError, decode, encode
from streamemo.security import CurveClient, CurveServer, check_exposure

log = logging.getLogger(__name__)


class Publisher:
    """An XPUB socket bound to `bind`. With `curve`, connections are encrypted and only allowed
    client keys get in; without it, a bind reachable from other machines is refused unless
    `insecure` (security.check_exposure)."""

    def __init__(self, bind: str, hwm: int = 1000, context: zmq.Context | None = None,
                 curve: CurveServer | None = None, insecure: bool = False):
        check_exposure(bind, secured=curve is not None, insecure=insecure)
        self.context = context or zmq.Context.instance()
        self.curve = curve
        # XPUB sends exactly like PUB, and also tells us when a subscriber arrives.
        self.socket = self.context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.start(self.context)
            curve.secure(self.socket)
        self.endpoint = bind
        try:
            self.socket.bind(bind)
        except zmq.ZMQError as e:
            self.socket.close()
            if curve is not None:
                curve.stop()
            raise StreamemoError(_bind_problem(bind, e), 1) from None
        self.sent = {"emotion": 0, "status": 0}
        self.dropped = 0

    def send(self, topic: str, body: dict) -> None:
        try:
            self.socket.send_multipart(encode(topic, body), flags=zmq.NOBLOCK)
            self.sent[topic] += 1
        except zmq.Again:  # only possible with no room at all; PUB normally drops silently
            self.dropped += 1

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        """Blocks until some subscriber subscribes, or `timeout_s` passes."""
        if self.socket.poll(int(timeout_s * 1000)):
            self.socket.recv()  # the subscription message itself: b"\x01" + topic
            return True
        return False

    def close(self, drain_s: float = 0.5) -> None:
        # Linger is 0 while running; at shutdown allow a bounded moment for queued messages
        # (the last of a file, the final status) to reach live subscribers. A dead peer
        # cannot hold the exit longer than this.
        self.socket.close(linger=int(drain_s * 1000))
        if self.curve is not None:
            self.curve.stop()


def _bind_problem(bind: str, e: zmq.ZMQError) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"cannot bind {bind}: the address is already in use (another streamemo daemon?); choose another with --bind"
    if e.errno in (errno.EINVAL, zmq.EPROTONOSUPPORT) or "Invalid argument" in str(e):
        return f"cannot bind {bind}: not a valid ZeroMQ endpoint; use tcp://HOST:PORT or ipc:///path"
    if e.errno == errno.EACCES:
        return f"cannot bind {bind}: permission denied; use a port above 1023 or a writable ipc path"
    return f"cannot bind {bind}: {e.strerror}"


class Subscriber:
    """A SUB socket that yields decoded messages; bad ones are counted, never raised."""

    def __init__(self, connect: str | list[str], topics=("emotion", "status"), context: zmq.Context | None = None,
                 hwm: int = 1000, curve: CurveClient | None = None):
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:  # the same keys for every endpoint: one server key per subscriber
            curve.secure(self.socket)
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        for endpoint in [connect] if isinstance(connect, str) else connect:
            try:
                self.socket.connect(endpoint)
            except zmq.ZMQError as e:
                self.socket.close()
                raise StreamemoError(f"cannot connect to {endpoint}: {e.strerror}; use tcp://HOST:PORT or ipc:///path", 2) from None
        self.malformed = 0
        self.last_error: str | None = None

    def receive(self, timeout_ms: int | None = None) -> tuple[str, dict] | None:
        """The next valid message, or None when `timeout_ms` passes without one."""
        while True:
            if timeout_ms is not None and not self.socket.poll(timeout_ms):
                return None
            frames = self.socket.recv_multipart()
            try:
                return decode(frames)
            except ProtocolError as e:
                self.malformed += 1
                self.last_error = str(e)
                log.warning("malformed message: %s", e)

    def close(self) -> None:
        self.socket.close(linger=0)
