"""streamemo proxy: one ZeroMQ forwarder between many daemons and many subscribers
(`streamemo.forward` draws it and does the forwarding).

The daemons keep publishing on loopback; the proxy is the one socket other machines reach,
so it carries the exposure rule: a non-loopback --backend needs CURVE keys (or --insecure).
Its --curve-secret also identifies the proxy to CURVE daemons given --frontend-curve-server.
"""

from __future__ import annotations

import logging
import signal
import threading

from streamemo.cli import setup_logging
from streamemo.security import add_server_arguments

log = logging.getLogger("streamemo.proxy")


def configure(parser) -> None:
    parser.add_argument("--frontend", action="append", required=True, metavar="ENDPOINT",
                        help="a daemon's endpoint to read from (the proxy connects); repeat for several")
    parser.add_argument("--backend", required=True, metavar="ENDPOINT",
                        help="where subscribers connect (the proxy binds), e.g. tcp://0.0.0.0:5560")
    add_server_arguments(parser)  # --curve-secret, --curve-clients, --insecure: as the daemon's
    parser.add_argument("--frontend-curve-server", metavar="FILE",
                        help="the daemons' public key, when they publish with CURVE (the proxy's NAME.key must "
                             "then be in their allowed-clients folder)")
    parser.add_argument("--hwm", type=int, default=1000, metavar="N", help="messages queued per subscriber before dropping")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")


def main(args) -> int:
    from streamemo.forward import Forwarder
    from streamemo.security import curve_client, curve_server

    setup_logging(args.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    upstream = curve_client(args.frontend_curve_server, args.curve_secret) if args.frontend_curve_server else None
    # The backend is encrypted when given an allowed-clients folder; --curve-secret alone only
    # identifies the proxy to CURVE daemons upstream.
    server = curve_server(args.curve_secret, args.curve_clients) if args.curve_clients or upstream is None else None
    forwarder = Forwarder(args.frontend, args.backend, args.hwm, curve=server, upstream=upstream,
                          insecure=args.insecure)
    try:
        log.info("forwarding %s -> %s%s", ", ".join(args.frontend), args.backend,
                 " (CURVE)" if forwarder.backend.curve is not None else "")
        forwarder.run(stop)
        log.info("stopping: %d messages forwarded, %d dropped", forwarder.forwarded, forwarder.dropped)
    finally:
        forwarder.close()
    return 0
