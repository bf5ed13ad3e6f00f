"""streamemo proxy: one ZeroMQ forwarder between many daemons and many subscribers.

    daemon A (binds 127.0.0.1:5556) ─┐
    daemon B (binds 127.0.0.1:5557) ─┼─ XSUB (connects) ─▶ proxy ─▶ XPUB (binds) ─▶ subscribers
    daemon C (elsewhere, CURVE)     ─┘

The daemons keep publishing on loopback; the proxy is the one socket other machines reach,
so it carries the exposure rule: a non-loopback --backend needs CURVE keys (or --insecure).
Messages pass through untouched (no decoding); subscriptions flow the other way, so a
daemon sends nothing while nobody listens. Like the daemon's publisher, the backend never
blocks: a subscriber whose queue is full loses messages, the others do not wait.
"""

from __future__ import annotations

import logging
import signal
import threading

from streamemo.cli import setup_logging

log = logging.getLogger("streamemo.proxy")

POLL_MS = 100  # how often the loop looks at the stop flag when no message moves


def configure(parser) -> None:
    parser.add_argument("--frontend", action="append", required=True, metavar="ENDPOINT",
                        help="a daemon's endpoint to read from (the proxy connects); repeat for several")
    parser.add_argument("--backend", required=True, metavar="ENDPOINT",
                        help="where subscribers connect (the proxy binds), e.g. tcp://0.0.0.0:5560")
    parser.add_argument("--curve-secret", metavar="FILE",
                        help="the proxy's secret key (NAME.key_secret): encrypts the backend, and identifies "
                             "the proxy to daemons given --frontend-curve-server")
    parser.add_argument("--curve-clients", metavar="DIR", help="folder of allowed subscribers' public keys (NAME.key)")
    parser.add_argument("--frontend-curve-server", metavar="FILE",
                        help="the daemons' public key, when they publish with CURVE (the proxy's NAME.key must "
                             "then be in their allowed-clients folder)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a backend reachable from other machines without CURVE (results in the clear)")
    parser.add_argument("--hwm", type=int, default=1000, metavar="N", help="messages queued per subscriber before dropping")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")


def main(args) -> int:
    import zmq

    from streamemo.publish import Publisher, connect_checked
    from streamemo.security import curve_client, curve_server

    setup_logging(args.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    upstream = curve_client(args.frontend_curve_server, args.curve_secret) if args.frontend_curve_server else None
    # The backend is encrypted when given an allowed-clients folder; --curve-secret alone only
    # identifies the proxy to CURVE daemons upstream.
    server = curve_server(args.curve_secret, args.curve_clients) if args.curve_clients or upstream is None else None
    backend = Publisher(args.backend, args.hwm, curve=server, insecure=args.insecure)
    frontend = backend.context.socket(zmq.XSUB)
    frontend.setsockopt(zmq.LINGER, 0)
    if upstream is not None:
        upstream.secure(frontend)
    try:
        for endpoint in args.frontend:
            connect_checked(frontend, endpoint)
        log.info("forwarding %s -> %s%s", ", ".join(args.frontend), args.backend,
                 " (CURVE)" if backend.curve is not None else "")
        forwarded, dropped = _forward(frontend, backend.socket, stop)
        log.info("stopping: %d messages forwarded, %d dropped", forwarded, dropped)
    finally:
        frontend.close(linger=0)
        backend.close(drain_s=0.2)
    return 0


def _forward(frontend, backend, stop: threading.Event) -> tuple[int, int]:
    """Messages frontend -> backend, subscriptions backend -> frontend, until `stop`.

    A loop of our own rather than zmq.proxy(): it checks the stop flag between polls, so
    SIGTERM ends it promptly and cleanly, and it counts what it drops."""
    import zmq

    poller = zmq.Poller()
    poller.register(frontend, zmq.POLLIN)
    poller.register(backend, zmq.POLLIN)
    forwarded = dropped = 0
    while not stop.is_set():
        for sock, _ in poller.poll(POLL_MS):
            if sock is frontend:
                frames = frontend.recv_multipart(copy=False)
                try:
                    backend.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                    forwarded += 1
                except zmq.Again:
                    dropped += 1
            else:  # a subscription or unsubscription from a subscriber: pass it upstream
                frontend.send_multipart(backend.recv_multipart())
    return forwarded, dropped
