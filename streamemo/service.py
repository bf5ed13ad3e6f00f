"""The systemd service protocol (sd_notify) over `$NOTIFY_SOCKET`, with the standard library.

systemd passes a unix datagram socket in `$NOTIFY_SOCKET` (a path, or `@name` for the
abstract namespace) and, with `WatchdogSec=`, the watchdog period in `$WATCHDOG_USEC`.
Each notification is one datagram of newline-separated `KEY=value` lines. Outside systemd
(no `$NOTIFY_SOCKET`) every method does nothing, so the daemon calls them unconditionally.

A notification that cannot be delivered is logged once and dropped: telling systemd how we
are must never be a reason to stop doing the work.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.socket = None
        if self.address:
            self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_s = watchdog_period(env)
        self._failed = False
        # Like sd_notify(unset_environment=1): a child process must not talk for us.
        if environ is None:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(name, None)

    def notify(self, *lines: str) -> None:
        if self.socket is None:
            return
        try:
            self.socket.sendto("\n".join(lines).encode(), self.address)
        except OSError as e:
            if not self._failed:
                log.warning("cannot notify systemd at %s: %s", self.address.replace("\0", "@"), e.strerror)
                self._failed = True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={_one_line(status)}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def reloading(self, status: str = "reloading configuration and model") -> None:
        # systemd >= 253 (Type=notify-reload) wants the time the reload began, to order it
        # against the READY=1 that ends it; older versions ignore the extra field.
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", f"STATUS={_one_line(status)}")

    def stopping(self, status: str = "stopping") -> None:
        self.notify("STOPPING=1", f"STATUS={_one_line(status)}")

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None


def watchdog_period(env) -> float | None:
    """Seconds after which systemd declares us hung, or None without a watchdog (or when the
    watchdog is meant for another process, as `$WATCHDOG_PID` says)."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Signals:
    """SIGTERM and SIGINT ask the daemon to stop, SIGHUP to reload: the handlers only set
    these flags, and the processing loop acts on them between hops. `streamemo run` installs
    them first thing, before the seconds of importing torch and loading the model: until
    then a SIGHUP's default action would kill the process (exit 129)."""

    def __init__(self):
        self.stop = threading.Event()
        self.reload = threading.Event()

    def install(self) -> Signals:
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload.set())
        return self
