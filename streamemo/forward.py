"""The proxy's forwarder: one ZeroMQ XSUB -> XPUB relay between many daemons and many
subscribers (`streamemo proxy` parses the flags and signals; this moves the messages).

    daemon A (binds 127.0.0.1:5556) ─┐
    daemon B (binds 127.0.0.1:5557) ─┼─ XSUB (connects) ─▶ proxy ─▶ XPUB (binds) ─▶ subscribers
    daemon C (elsewhere, CURVE)     ─┘

Messages pass through untouched (no decoding); subscriptions flow the other way, so a
daemon sends nothing while nobody listens. Like the daemon's publisher, the backend never
blocks: a subscriber whose queue is full loses messages, the others do not wait.
"""

from __future__ import annotations

import logging
import threading

import zmq

from streamemo.publish import Publisher, connect_checked
from streamemo.security import CurveClient, CurveServer

log = logging.getLogger("streamemo.proxy")

POLL_MS = 100  # how often the loop looks at the stop flag when no message moves


class Forwarder:
    """Binds the backend and connects the frontends at construction, so a bad endpoint or
    key fails before anything runs; `run(stop)` relays until `stop` is set."""

    def __init__(self, frontends: list[str], backend: str, hwm: int = 1000, curve: CurveServer | None = None,
                 upstream: CurveClient | None = None, insecure: bool = False):
        self.endpoints = frontends
        self.backend = Publisher(backend, hwm, curve=curve, insecure=insecure)
        self.frontend = self.backend.context.socket(zmq.XSUB)
        self.frontend.setsockopt(zmq.LINGER, 0)
        try:
            if upstream is not None:
                upstream.secure(self.frontend)
            for endpoint in frontends:
                connect_checked(self.frontend, endpoint)
        except BaseException:
            self.close()
            raise
        self.forwarded = self.dropped = 0

    def run(self, stop: threading.Event) -> None:
        """Messages frontend -> backend, subscriptions backend -> frontend, until `stop`.

        A loop of our own rather than zmq.proxy(): it checks the stop flag between polls, so
        SIGTERM ends it promptly and cleanly, and it counts what it drops."""
        frontend, backend = self.frontend, self.backend.socket
        poller = zmq.Poller()
        poller.register(frontend, zmq.POLLIN)
        poller.register(backend, zmq.POLLIN)
        while not stop.is_set():
            for sock, _ in poller.poll(POLL_MS):
                if sock is frontend:
                    frames = frontend.recv_multipart(copy=False)
                    try:
                        backend.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                        self.forwarded += 1
                    except zmq.Again:
                        self.dropped += 1
                else:  # subscriptions from subscribers: those to streamemo's topics go upstream
                    for subscription in self.backend.take_subscriptions():
                        frontend.send(subscription)

    def close(self) -> None:
        self.frontend.close(linger=0)
        self.backend.close(drain_s=0.2)
