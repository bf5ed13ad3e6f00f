"""The daemon's audio input: opened once, read, and when a device is lost, reopened with backoff.

Only a microphone gets lost (unplugged, sound server restarted); a file or stdin ends
instead. While the input is lost the daemon goes on with everything else (heartbeats,
reloads, the watchdog): `retry()` waits at most a poll at a time, so it never holds the loop.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

from streamemo import StreamemoError
from streamemo.audio.sources import Chunk, DeviceLost, EndOfStream, open_source, rescan_devices
from streamemo.config import AudioConfig

log = logging.getLogger("streamemo.daemon")

POLL_S = 0.1  # longest a read or a retry waits: the daemon's loop acts on stop requests, reloads and heartbeats between
RETRY_FIRST_S = 0.5  # first wait before reopening a lost input device
RETRY_MAX_S = 5.0  # the wait doubles per failed attempt up to this


class InputState(enum.Enum):
    STARTING = "starting"  # not opened yet
    WAITING = "waiting"  # opened; no audio has arrived yet
    LISTENING = "listening"  # audio arrives
    LOST = "lost"  # lost, and no audio has arrived since (the device may be open again)
    ENDED = "ended"  # the file or stdin has no more audio

    @property
    def wire(self) -> str:
        """The state as `status` messages name it (`input_state`): starting | running | lost | ended."""
        return "running" if self in (InputState.WAITING, InputState.LISTENING) else self.value


class Input:
    def __init__(self, config: AudioConfig, opener: Callable[[AudioConfig], object] = open_source):
        """`opener(config)` opens a source (`audio.sources`: `read(timeout, want)`, `close()`,
        `device`, `rate`, `overflows`, `dropped`). Tests pass their own, e.g. one that hangs."""
        self.config = config
        self.opener = opener
        self.state = InputState.STARTING
        self.source = None  # None before the first open and while a lost device is not open again
        self.device = ""  # the last device opened, still named while it is lost
        self.problem = ""  # while LOST: what went wrong, for the status message
        self.retry_s = RETRY_FIRST_S
        self.next_retry = 0.0

    def open(self) -> None:
        """The first open; a source that cannot be opened raises (StreamemoError)."""
        self._opened(self.opener(self.config))
        self.state = InputState.WAITING

    def read(self, timeout: float, want: int) -> Chunk | None:
        """What the source has (`Source.read`); raises EndOfStream at its end and DeviceLost
        when the device is gone, after closing it: `retry()` then opens it again."""
        try:
            chunk = self.source.read(timeout, want=want)
        except EndOfStream:
            self.state = InputState.ENDED
            raise
        except DeviceLost as e:
            log.warning("%s; retrying in %.1f s", e, self.retry_s)
            self.source.close()
            self.source = None
            self.state = InputState.LOST
            self.problem = f"input lost: {e}; retrying"
            self.next_retry = time.monotonic() + self.retry_s
            raise
        return chunk

    def arrived(self) -> InputState:
        """Audio has arrived (after opening, or after a loss): LISTENING. Returns the state before."""
        before = self.state
        if before is InputState.LOST:
            log.info("input %s is back", self.device)
            self.retry_s = RETRY_FIRST_S
        self.state = InputState.LISTENING
        return before

    def retry(self, wait: Callable[[float], object]) -> bool | None:
        """One step of reopening a lost device: `wait(s)` (an Event's wait, so a stop request
        cuts it short) until the next attempt is due, at most a poll at a time. True: open
        again; False: the attempt failed (`problem` says when the next is); None: not yet due."""
        due_in = self.next_retry - time.monotonic()
        if due_in > 0:
            wait(min(due_in, POLL_S))
            return None
        try:
            rescan_devices()  # only a microphone gets lost; PortAudio lists devices at init only
            source = self.opener(self.config)
        except (StreamemoError, DeviceLost) as e:
            self.retry_s = min(self.retry_s * 2, RETRY_MAX_S)
            self.next_retry = time.monotonic() + self.retry_s
            self.problem = f"input lost: {e}; retrying in {self.retry_s:.0f} s"
            log.info("%s", self.problem)
            return False
        self._opened(source)
        # Not "back" until audio arrives: a reopened stream may still deliver nothing, and
        # then it is lost again after the source's silence limit, with a longer wait.
        self.retry_s = min(self.retry_s * 2, RETRY_MAX_S)
        return True

    def _opened(self, source) -> None:
        self.source = source
        self.device = source.device

    @property
    def message(self) -> str:
        """What the input is doing, in a line for a person."""
        return {
            InputState.STARTING: "starting",
            InputState.WAITING: f"waiting for audio from {self.device}",
            InputState.LISTENING: f"listening to {self.device}",
            InputState.LOST: self.problem,
            InputState.ENDED: "source ended",
        }[self.state]

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
