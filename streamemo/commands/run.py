"""streamemo run: the daemon."""

from __future__ import annotations

import logging
import signal

from streamemo.cli import setup_logging
from streamemo.commands._options import add_config_arguments, add_security_arguments, config_from_args


def configure(parser) -> None:
    add_config_arguments(parser)
    add_security_arguments(parser)


def main(args) -> int:
    from streamemo.service import Signals

    # First of all: from here on SIGTERM, SIGINT and SIGHUP only set flags, so one arriving
    # during the seconds of start-up is handled, not fatal. (Until now SIGHUP was ignored,
    # from the package's first line: streamemo/__init__.py.)
    signals = Signals().install()
    config = config_from_args(args)
    if args.print_config:
        print(config.to_toml(), end="")
        return 0
    setup_logging(config.log.level)
    from streamemo.security import check_exposure, curve_server

    # Before the seconds of importing torch: a bad key file or a refused bind fails at once.
    curve = curve_server(config.security.curve_secret, config.security.curve_clients)
    if not config.security.insecure:
        check_exposure(config.publish.bind, secured=curve is not None, insecure=False)
    from streamemo.daemon import Daemon

    # On SIGHUP the daemon calls this again: the config file re-read, the flags re-applied.
    daemon = Daemon(config, reload_config=lambda: config_from_args(args), signals=signals, curve=curve)
    wait = config.publish.wait_subscriber_s
    if wait > 0 and not daemon.publisher.wait_for_subscriber(wait):
        logging.getLogger("streamemo.daemon").warning("no subscriber within %.1f s; starting anyway", wait)
    code = daemon.run()
    # Done and closed. Python restores default signal actions while it shuts down (which takes
    # a moment with torch loaded): a SIGTERM or SIGHUP then would turn this clean exit into a kill.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    return code
