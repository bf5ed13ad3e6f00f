"""A daemon started by the dashboard (`streamemo dash --start-daemon`, i.e. `make run`).

The child's output goes to a log file, not the terminal the dashboard draws on. It runs in
its own session so the terminal's signals do not reach it behind our back, and on Linux it
is told to get SIGTERM if the dashboard dies without cleaning up (even on SIGKILL). `stop()`
is SIGTERM, a grace period for the daemon's orderly shutdown, then SIGKILL.
"""

from __future__ import annotations

import ctypes
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_GRACE_S = 5.0
ERROR_LINE = re.compile(r"streamemo \w+: error: ")  # how cli.main reports a failure
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not glibc: stop() on quit still covers the normal case


class DaemonChild:
    def __init__(self, command: list[str], log_path: Path, title: str | None = None):
        self.command = command
        self.title = title or " ".join(command)  # how the dashboard names it to a person
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None
        self._log_start = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.command)}\n".encode())
            log.flush()
            self._log_start = log.tell()
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def problem(self) -> str | None:
        """None while the daemon runs; once it has exited, a line saying so and why."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        why = self.reason()
        return f"the daemon stopped ({how}){': ' + why if why else ''}\nits log: {self.log_path}"

    def reason(self) -> str:
        """The line of this run's log that says why the daemon stopped: its own error line
        ("streamemo run: error: …", which may go on over more lines, such as the device list
        after "no input device matches"), else the last line (a traceback's exception)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                tail = log.read()[-16384:].decode(errors="replace")
        except OSError:
            return ""
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        errors = [line for line in lines if ERROR_LINE.match(line)]
        return (errors or lines or [""])[-1]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """SIGTERM without waiting: the daemon starts its orderly shutdown now."""
        if self.running():
            self.process.terminate()

    def kill(self) -> None:
        if self.running():
            self.process.kill()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the daemon has not exited within STOP_GRACE_S."""
        if not self.running():
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
