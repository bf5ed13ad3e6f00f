"""`streamemo run RUN-ARGS`, except that its input hangs STALL_AFTER_S seconds after it opens,
as a deadlocked pipeline would: the processing loop stops for good, and with it the systemd
watchdog pings, while the process lives on. The watchdog test runs this.

Run: python tests/stalling_daemon.py STALL_AFTER_S RUN-ARGS...
"""

from __future__ import annotations

import logging
import sys
import time

from streamemo.audio.sources import open_source
from streamemo.cli import build_parser, setup_logging
from streamemo.commands._options import config_from_args
from streamemo.daemon import Daemon
from streamemo.service import Signals

log = logging.getLogger("streamemo.daemon")


class StallingSource:
    """The configured source until `stall_at`; from then on a read that never returns."""

    def __init__(self, source, stall_after_s: float):
        self.source = source
        self.stall_at = time.monotonic() + stall_after_s

    def __getattr__(self, name):  # device, rate, overflows, dropped, close: the real source's
        return getattr(self.source, name)

    def read(self, timeout: float, want: int = 1):
        if time.monotonic() >= self.stall_at:
            log.warning("stalling the processing loop on purpose")
            while True:  # hung for good: only SIGKILL ends this
                time.sleep(3600)
        return self.source.read(timeout, want)


def main() -> int:
    stall_after_s = float(sys.argv[1])
    signals = Signals().install()  # as `streamemo run` does, first of all
    config = config_from_args(build_parser("run").parse_args(["run", *sys.argv[2:]]))
    setup_logging(config.log.level)
    daemon = Daemon(config, signals=signals,
                    open_input=lambda audio: StallingSource(open_source(audio), stall_after_s))
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
