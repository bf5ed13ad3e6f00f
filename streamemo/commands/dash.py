"""`streamemo dash`: the terminal dashboard, optionally with the daemon it watches.

With --start-daemon it runs `streamemo run --bind ENDPOINT ARGS…` as a child (arguments
after `--` go to it), logs the child's output to a file, and stops it when the dashboard
quits: this is what `make run` does. With --web the same app is served to browsers
instead (streamemo/dashboard/web.py), one per tab, all watching the one daemon.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import threading
from pathlib import Path

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
WEB_HOST, WEB_PORT = "127.0.0.1", 8556  # --web: this machine only; a port beside the daemon's, rarely taken
EXIT_WATCHDOG_S = 10.0  # after SIGTERM/SIGHUP, the longest the process may take to end
DEFAULT_LOG = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamemo" / "daemon.log"


def configure(parser: argparse.ArgumentParser) -> None:
    from streamemo.security import add_client_arguments

    parser.usage = ("%(prog)s [--connect ENDPOINT ...] [--light] [--curve-server FILE --curve-secret FILE]\n"
                    "       [--web [--port N] [--host HOST]] [--start-daemon [--daemon-log FILE] [-- RUN-ARGS ...]]")
    parser.epilog = f"keys: q quit, p pause/resume, r reset timeline, tab next endpoint, ? help\n\n{parser.epilog}"
    parser.add_argument("--connect", action="append", metavar="ENDPOINT",
                        help=f"a daemon's ZeroMQ endpoint; repeat for several, Tab switches (default: {DEFAULT_ENDPOINT})")
    parser.add_argument("--start-daemon", action="store_true",
                        help="also start `streamemo run --bind ENDPOINT` (the first endpoint) and stop it on quit; "
                             "arguments after `--` go to it")
    parser.add_argument("--daemon-log", type=Path, default=DEFAULT_LOG, metavar="FILE",
                        help=f"where the started daemon's output goes (default: {DEFAULT_LOG})")
    parser.add_argument("--light", action="store_true", help="light colour theme")
    parser.add_argument("--web", action="store_true",
                        help="serve the dashboard to web browsers instead of drawing it here; "
                             "each browser tab gets its own, all watching the same daemon")
    parser.add_argument("--port", type=_port, metavar="N", help=f"--web's port (default: {WEB_PORT})")
    parser.add_argument("--host", metavar="HOST",
                        help=f"--web's address (default: {WEB_HOST}, this machine only; 0.0.0.0: every network, "
                             "with no login)")
    add_client_arguments(parser)  # --curve-server, --curve-secret: encrypted publishers
    parser.add_argument("daemon_args", nargs="*", metavar="RUN-ARGS", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    from streamemo import StreamemoError
    from streamemo.dashboard.app import DashboardApp
    from streamemo.dashboard.daemon_child import DaemonChild
    from streamemo.dashboard.receiver import Receiver, check_endpoint
    from streamemo.security import curve_client

    endpoints = args.connect or [DEFAULT_ENDPOINT]
    curve = curve_client(args.curve_server, args.curve_secret)
    for endpoint in endpoints:
        check_endpoint(endpoint)
    if args.daemon_args and not args.start_daemon:
        raise StreamemoError(f"unexpected arguments {' '.join(args.daemon_args)}; "
                             "arguments after -- are for the daemon and need --start-daemon", 2)
    if args.start_daemon and "--bind" in args.daemon_args:
        raise StreamemoError("--bind is set by dash --start-daemon from --connect; give --connect instead", 2)
    if (args.port is not None or args.host is not None) and not args.web:
        raise StreamemoError("--port and --host are for --web (the dashboard in a browser); add --web", 2)

    child = None
    if args.start_daemon:
        run_args = ["run", "--bind", endpoints[0], *args.daemon_args]
        child = DaemonChild([sys.executable, "-m", "streamemo", *run_args], args.daemon_log,
                            title=shlex.join(["streamemo", *run_args]))
    if args.web:
        from streamemo.dashboard.web import serve, session_command

        return serve(session_command(args, endpoints), args.host or WEB_HOST, args.port or WEB_PORT, child)
    app = DashboardApp(Receiver(endpoints, curve=curve), child=child,
                       on_exit_signal=lambda signum: _exit_soon(signum, child))
    if args.light:
        app.theme = "textual-light"
    died = None
    try:
        if child is not None:
            child.start()
        app.run()
    finally:
        if child is not None:
            died = child.problem()  # before stop(): our own SIGTERM is not the daemon dying
            child.stop()
    if died:
        print(f"streamemo dash: {died}".replace("\n", "; "), file=sys.stderr)
    return exit_status(app, died)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; give a number from 1 to 65535")
    return int(text)


def exit_status(app, died: str | None) -> int:
    """1 when the started daemon died or the app crashed (Textual has then printed the
    traceback and set its return code): a script or `make run` must not read a crash as a quit."""
    return 1 if died else (app.return_code or 0)


def _exit_soon(signum: int, child) -> None:
    """SIGTERM or SIGHUP: stop the daemon we started now, and make sure we end too.

    The app then quits the normal way, but after a hangup Textual's shutdown can block for
    ever writing to the vanished terminal (seen with Textual 8.2.8: the main thread stuck in
    WriterThread.stop). So the daemon gets its SIGTERM first, not after the app is down, and
    a watchdog ends this process if the normal way has not within EXIT_WATCHDOG_S."""
    if child is not None:
        child.terminate()

    def hard_exit() -> None:
        if child is not None:
            child.kill()
        os._exit(128 + signum)

    watchdog = threading.Timer(EXIT_WATCHDOG_S, hard_exit)
    watchdog.daemon = True  # a normal exit does not wait for it
    watchdog.start()
