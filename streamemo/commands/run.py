"""streamemo run: the daemon."""

from __future__ import annotations

import logging

from streamemo.cli import setup_logging
from streamemo.commands._options import add_config_arguments, config_from_args


def configure(parser) -> None:
    add_config_arguments(parser)


def main(args) -> int:
    config = config_from_args(args)
    if args.print_config:
        print(config.to_toml(), end="")
        return 0
    setup_logging(config.log.level)
    from streamemo.daemon import Daemon

    daemon = Daemon(config)
    daemon.install_signal_handlers()
    wait = config.publish.wait_subscriber_s
    if wait > 0 and not daemon.publisher.wait_for_subscriber(wait):
        logging.getLogger("streamemo.daemon").warning("no subscriber within %.1f s; starting anyway", wait)
    return daemon.run()
