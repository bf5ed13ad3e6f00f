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
instead of a hang. A malformed message is counted and skipped, never raised: `receive`
logs the first and then at most one line every few seconds, so a flood of them cannot
flood the log.
"""

from __future__ import annotations

import logging
import math
import numbers
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
POLL_SLICE_S = 60.0  # ZeroMQ's poll takes a C int of milliseconds: a long wait is cut into these
MALFORMED_LOG_S = 10.0  # after logging a malformed message, this long before logging another
# A subscriber that has heard nothing this long after starting says so once
# (`Client.nothing_yet`), so that a mistyped address or a stopped daemon shows.
QUIET_NOTICE_S = 5.0


def local_endpoint(bind: str) -> str:
    """Where a subscriber on this machine reaches a daemon bound at `bind` (its publish.bind):
    the same endpoint, a wildcard host (tcp://*:5556, 0.0.0.0, [::]) read as loopback."""
    transport, _, address = bind.partition("://")
    host, _, port = address.rpartition(":")
    if transport == "tcp" and host in ("*", "0.0.0.0", "[::]", "::"):
        return f"tcp://{'[::1]' if ':' in host else '127.0.0.1'}:{port}"
    return bind


def timeout_seconds(value, name: str = "timeout") -> float | None:
    """`value` checked as a timeout: a number of seconds from 0 up, or None or infinity
    (wait for ever, returned as None). Anything else raises at once, naming it, rather than
    a TypeError or OverflowError deep inside a later wait."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int past 10**308: longer than any wait
        return None
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{name} must be 0 or more seconds, or None to wait for ever; got {value!r}")
    return None if math.isinf(seconds) else seconds


class Client:
    """Subscribes to one or more daemons (or a proxy).

    `topics`: "emotion", "status" or both (default). `curve_server` / `curve_secret`: the
    publisher's public key file and this client's secret key file, for a CURVE-encrypted
    daemon (`streamemo keys`). `timeout`: seconds; iterating raises TimeoutError when
    nothing arrives for that long (None or infinity: wait for ever)."""

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
        self.timeout = timeout_seconds(timeout)
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
        self._quiet_until = 0.0  # no malformed-message warning before this (monotonic)
        self._unlogged = 0  # malformed messages since the last warning
        self._nothing_yet_at = time.monotonic() + QUIET_NOTICE_S  # inf once said, or once a message came

    def receive(self, timeout: float | None = None) -> Message | None:
        """The next valid message, or None when `timeout` seconds pass without one (None or
        infinity: wait for ever)."""
        timeout = timeout_seconds(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if not self.socket.poll(math.ceil(1000 * max(0.0, min(left, POLL_SLICE_S)))):
                    if left <= POLL_SLICE_S:
                        return None
                    continue
            message = self._decode(self.socket.recv_multipart(), warn=True)
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
            message = self._decode(frames, warn=False)
            if message is not None:
                return message
        return None

    def _decode(self, frames: list[bytes], warn: bool) -> Message | None:
        try:
            message = decode_message(frames)
        except ProtocolError as e:
            self.malformed += 1
            self.last_error = str(e)
            if not warn:
                log.debug("malformed message: %s", e)
            elif time.monotonic() < self._quiet_until:
                self._unlogged += 1
            else:
                since = f" ({self._unlogged} more since the last one logged)" if self._unlogged else ""
                log.warning("malformed message: %s%s", e, since)
                self._quiet_until, self._unlogged = time.monotonic() + MALFORMED_LOG_S, 0
            return None
        key = (message.TOPIC, message.source)
        if key in self._last_seq and message.seq <= self._last_seq[key]:
            self.restarts += 1
        self._last_seq[key] = message.seq
        self._nothing_yet_at = math.inf
        return message

    def nothing_yet(self) -> str | None:
        """Once, when no valid message came in the first QUIET_NOTICE_S: the line a subscriber
        says about it (a mistyped address or a stopped daemon shows); otherwise None."""
        if time.monotonic() < self._nothing_yet_at:
            return None
        self._nothing_yet_at = math.inf
        return (f"nothing yet from {', '.join(self.endpoints)} after {QUIET_NOTICE_S:g} s; "
                "is the daemon running there (streamemo run)?")

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
