"""The Python client: the daemon's messages as typed objects, one way to read the wire for
programs, `streamemo subscribe` and the dashboard alike.

    from streamemo import Client

    with Client("tcp://127.0.0.1:5556", topics=["emotion"]) as client:
        for msg in client:                     # EmotionMessage / StatusMessage
            if msg.voiced:
                print(msg.top, msg.confidence, msg.arousal, msg.valence)

Reconnecting is ZeroMQ's: a SUB socket keeps trying its endpoints, so a daemon that
restarts (or starts after the client) is picked up by itself, and `restarts` counts the
times a source's sequence number went back. A timeout makes a silent daemon an error
instead of a hang. A malformed message is counted and skipped, never raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import zmq

from streamemo.protocol import TOPICS, Message, ProtocolError, decode_message
from streamemo.publish import connect_checked
from streamemo.security import CurveClient, curve_client

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
RECONNECT_IVL_MS = 250  # first retry soon after the daemon comes back …
RECONNECT_IVL_MAX_MS = 2000  # … and never waiting longer than this between retries


class Client:
    """Subscribes to one or more daemons (or a proxy).

    `topics`: "emotion", "status" or both (default). `curve_server` / `curve_secret`: the
    publisher's public key file and this client's secret key file, for a CURVE-encrypted
    daemon (`streamemo keys`). `timeout`: seconds; iterating raises TimeoutError when
    nothing arrives for that long (None: wait for ever)."""

    def __init__(self, endpoints: str | Sequence[str] = DEFAULT_ENDPOINT, topics: Sequence[str] = TOPICS,
                 curve_server: str | None = None, curve_secret: str | None = None, timeout: float | None = None,
                 hwm: int = 1000, context: zmq.Context | None = None, curve: CurveClient | None = None,
                 monitor_events: int = 0):
        """`curve`: a ready `CurveClient` instead of the two key files. `monitor_events`: ZeroMQ
        socket events to report on `self.monitor` (a PAIR socket), attached before connecting
        so none is missed (the dashboard tells connected, refused and gone apart this way)."""
        unknown = [t for t in topics if t not in TOPICS]
        if unknown:
            raise ValueError(f"unknown topic {unknown[0]!r}; expected one of {', '.join(TOPICS)}")
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self.timeout = timeout
        self.socket = (context or zmq.Context.instance()).socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        # Retry soon after a daemon goes away, and never wait long between retries.
        self.socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
        self.socket.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
        curve = curve or curve_client(curve_server, curve_secret)
        if curve is not None:  # one server key for every endpoint
            curve.secure(self.socket)
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.monitor = self.socket.get_monitor_socket(monitor_events) if monitor_events else None
        try:
            for endpoint in self.endpoints:
                connect_checked(self.socket, endpoint)
        except BaseException:
            self.close()
            raise
        self.malformed = 0  # messages that failed validation, skipped
        self.last_error = ""  # what was wrong with the last of them
        self.restarts = 0  # times a source's seq went back: its daemon restarted
        self._last_seq: dict[tuple[str, str], int] = {}

    def receive(self, timeout: float | None = None) -> Message | None:
        """The next valid message, or None when `timeout` seconds pass without one (None:
        wait for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if wait is not None and not self.socket.poll(int(wait * 1000)):
                return None
            message = self._decode(self.socket.recv_multipart(), log.warning)
            if message is not None:
                return message

    def take(self, limit: int = 100) -> Message | None:
        """The next valid message already waiting, or None: never blocks, and looks at no
        more than `limit` messages (a flood of malformed ones cannot hold the caller).
        Malformed ones are only counted (`malformed`, `last_error`), not logged: a caller
        drawing a screen shows them itself."""
        for _ in range(limit):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None
            message = self._decode(frames, log.debug)
            if message is not None:
                return message
        return None

    def _decode(self, frames: list[bytes], report) -> Message | None:
        try:
            message = decode_message(frames)
        except ProtocolError as e:
            self.malformed += 1
            self.last_error = str(e)
            report("malformed message: %s", e)
            return None
        key = (message.TOPIC, message.source)
        if key in self._last_seq and message.seq <= self._last_seq[key]:
            self.restarts += 1
        self._last_seq[key] = message.seq
        return message

    def __iter__(self) -> Iterator[Message]:
        while True:
            message = self.receive(self.timeout)
            if message is None:
                raise TimeoutError(f"no message from {', '.join(self.endpoints)} for {self.timeout} s")
            yield message

    def close(self) -> None:
        if self.monitor is not None:
            self.socket.disable_monitor()
            self.monitor.close(linger=0)
        self.socket.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
