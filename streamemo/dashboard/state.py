"""What the dashboard knows about one daemon, built from its messages; no sockets, no UI.

`EndpointState` is fed raw frames with the time they arrived and answers `view(now)`: an
immutable picture the widgets draw. Every time is passed in, never read from a clock, so
the same messages and the same `now` give the same picture (the snapshot tests rely on it).
Everything it keeps is bounded: the latest message of each topic, a fixed number of recent
arrival times and latencies, and 60 s of timeline slots.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

from streamemo import EMOTIONS
from streamemo.protocol import EmotionMessage, ProtocolError, StatusMessage, decode_message

STALE_AFTER_S = 2.0  # no message for this long while connected: the daemon is stuck or gone
TIMELINE_S = 60.0
SLOT_S = 0.5  # timeline resolution; 120 slots cover the 60 s
N_SLOTS = int(TIMELINE_S / SLOT_S)
RATE_WINDOW_S = 2.0  # message rate is counted over this trailing window
LATENCY_SAMPLES = 100  # end-to-end latency median over the last this many messages

SILENCE = "silence"  # a timeline slot whose last message was unvoiced

# Connection states, in the words shown on screen.
DISCONNECTED = "disconnected"  # no TCP/IPC connection to the publisher
REFUSED = "refused"  # reached it, but the handshake failed: CURVE keys wrong or missing
WAITING = "waiting"  # connected, no message yet (for less than STALE_AFTER_S)
STARTING = "starting"  # a daemon this dashboard started, not heard from yet (set by the app)
LIVE = "live"
STALE = "stale"  # connected, but no message for STALE_AFTER_S


@dataclass(frozen=True)
class EndpointView:
    """One endpoint's picture at a moment, for the widgets; copies, safe across threads."""

    endpoint: str
    connection: str
    labels: tuple[str, ...] = EMOTIONS
    emotions: tuple[str, ...] | None = None  # the daemon's chosen set (its --emotions): then `labels`
    probs: tuple[float, ...] | None = None
    raw: tuple[float, ...] | None = None
    top: str | None = None
    confidence: float | None = None
    # Through a pause the daemon holds its smoothed probabilities (until its smoother forgets
    # them, 5 s by default) but names no top label: the last one it named, and its held value.
    held_top: str | None = None
    held_confidence: float | None = None
    arousal: float | None = None  # derived from probs (streamemo/dimensions.py); None when unvoiced
    valence: float | None = None
    voiced: bool = False
    level_db: float | None = None
    seq: int | None = None
    received_at: float | None = None  # when the latest emotion message arrived here
    status: StatusMessage | None = None  # the latest status, as received
    message_rate: float = 0.0  # emotion messages per second, measured here
    latency_ms: float | None = None  # t_capture -> receipt of the latest emotion message
    latency_p50_ms: float | None = None
    seq_gaps: int = 0  # emotion messages the daemon sent that never arrived here
    malformed: int = 0
    last_error: str | None = None
    refused: str | None = None  # why the publisher's handshake failed, when it did
    # Oldest first; each slot is None (no data), SILENCE, or the smoothed probabilities.
    timeline: tuple = field(default=(None,) * N_SLOTS)


class EndpointState:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.connected = False
        self.refused: str | None = None  # why the last handshake failed, until one succeeds
        self.connected_at: float | None = None
        self.last_message_at: float | None = None
        self.emotion: EmotionMessage | None = None
        self.last_top: str | None = None  # the top label of the latest voiced message
        self.status: StatusMessage | None = None
        self.malformed = 0
        self.last_error: str | None = None
        self.seq_gaps = 0
        self._arrivals: deque[float] = deque(maxlen=2000)  # >= RATE_WINDOW_S at 1 kHz
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._slots: deque[tuple[int, object]] = deque(maxlen=N_SLOTS)  # (slot index, value)

    # --- input -------------------------------------------------------------------------

    def set_connected(self, connected: bool, now: float) -> None:
        if connected and not self.connected:
            self.connected_at = now
        if connected:
            self.refused = None
        self.connected = connected

    def set_refused(self, reason: str) -> None:
        """The publisher answered but the security handshake failed; ZeroMQ keeps retrying."""
        self.refused = reason
        self.connected = False

    def receive(self, frames: list[bytes], now: float) -> bool:
        """Applies one message as it came off the socket; False (and counted) when malformed."""
        try:
            message = decode_message(frames)  # the protocol guarantees finite numbers, string labels
        except ProtocolError as e:
            self.malformed += 1
            self.last_error = str(e)
            return False
        # A message proves the connection even if the monitor event has not been seen yet.
        self.set_connected(True, now)
        self.last_message_at = now
        if isinstance(message, StatusMessage):
            self.status = message
        else:
            self._apply_emotion(message, now)
        return True

    def _apply_emotion(self, message: EmotionMessage, now: float) -> None:
        previous = self.emotion
        if previous is not None and message.seq > previous.seq + 1:
            self.seq_gaps += message.seq - previous.seq - 1
        if previous is not None and previous.labels != message.labels:
            self._slots.clear()  # a daemon restarted with another model: old rows mean other labels
            self.last_top = None
        self.emotion = message
        if message.top is not None:
            self.last_top = message.top
        self._arrivals.append(now)
        self._latencies.append((now - message.t_capture) * 1000.0)
        if not message.voiced:
            value = SILENCE
        elif message.probs is not None:
            value = message.probs
        else:
            value = None
        slot = math.floor(now / SLOT_S)
        if self._slots and self._slots[-1][0] == slot:
            self._slots[-1] = (slot, value)  # the newest message in a slot wins
        else:
            self._slots.append((slot, value))

    def reset_timeline(self) -> None:
        self._slots.clear()

    # --- output ------------------------------------------------------------------------

    def connection(self, now: float) -> str:
        if not self.connected:
            return REFUSED if self.refused else DISCONNECTED
        if self.last_message_at is None or (self.connected_at or 0) > self.last_message_at:
            # Connected (again) and nothing heard since: give the publisher STALE_AFTER_S.
            return WAITING if now - (self.connected_at or now) < STALE_AFTER_S else STALE
        return LIVE if now - self.last_message_at < STALE_AFTER_S else STALE

    def view(self, now: float) -> EndpointView:
        e = self.emotion
        # Intervals between the window's arrivals, not arrivals per window: counting arrivals
        # in 2 s gives 4.0 or 4.5/s for a daemon sending 4.17/s (a 0.24 s hop), never 4.2.
        recent = [t for t in self._arrivals if now - t < RATE_WINDOW_S]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        held = e is not None and e.top is None and e.probs is not None and self.last_top in e.labels
        return EndpointView(
            endpoint=self.endpoint,
            connection=self.connection(now),
            labels=e.labels if e else EMOTIONS,
            emotions=e.emotions if e else None,
            probs=e.probs if e else None,
            raw=e.raw if e else None,
            top=e.top if e else None,
            confidence=e.confidence if e else None,
            held_top=self.last_top if held else None,
            held_confidence=e.probs[e.labels.index(self.last_top)] if held else None,
            arousal=e.arousal if e else None,
            valence=e.valence if e else None,
            voiced=bool(e and e.voiced),
            level_db=e.level_db if e else None,
            seq=e.seq if e else None,
            received_at=self._arrivals[-1] if self._arrivals else None,
            status=self.status,  # frozen: safe to share across threads
            message_rate=rate,
            latency_ms=self._latencies[-1] if self._latencies else None,
            latency_p50_ms=statistics.median(self._latencies) if self._latencies else None,
            seq_gaps=self.seq_gaps,
            malformed=self.malformed,
            last_error=self.last_error,
            refused=self.refused,
            timeline=self._timeline(now),
        )

    def _timeline(self, now: float) -> tuple:
        newest = math.floor(now / SLOT_S)
        out = [None] * N_SLOTS
        for slot, value in self._slots:
            i = N_SLOTS - 1 - (newest - slot)
            if 0 <= i < N_SLOTS:
                out[i] = value
        return tuple(out)
