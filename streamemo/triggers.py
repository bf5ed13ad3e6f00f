"""Triggers: "when the voice has sounded like this for that long, do something"
(`streamemo watch`). This module reads a trigger's condition and decides, message by
message, when it fires; running the command is `commands/watch.py`'s job.

The grammar, one line:

    trigger    := clause ("and" clause)* ["for" duration]
    clause     := subject comparison number
    subject    := an emotion (neutral, calm, happy, sad, angry, fearful, disgust, surprised)
                  | arousal | valence | speech
    comparison := ">=" | ">" | "<=" | "<"
    duration   := number unit, unit one of ms, s, min      (500ms, 3s, 3 s, 1.5min)

    angry >= 0.8 for 3s
    sad > 0.5 and valence < -0.3 for 10s
    speech < 0.1 for 5min

What each subject reads in an `emotion` message: an emotion, its smoothed probability
(`probs`, 0 to 1); `arousal` and `valence`, the daemon's (-1 to 1); `speech`, the voice
gate's speech probability (0 to 1). Emotions, arousal and valence exist only where the voice
gate heard speech: on a message with `voiced: false` (silence, music, noise) a clause about
them is false, whatever the held probabilities say. `speech` is read on every message, so
`speech < 0.1 for 5min` means five minutes without a voice.

`for D` asks that the condition held on every message from the first on which it was true
to the one on which it fires, over at least D of the messages' own audio clock (`t_audio`),
not the wall clock: a file read faster than real time fires as it would live. Without
`for`, the first message on which it holds fires. A message missed (a gap in `seq`) or a
new stream (a daemon restarted, an input reopened: the audio clock goes back) starts the
count again.

After firing, the trigger rests for its cool-down (seconds of the same clock); after that
the condition must hold for a whole D again before it fires again. Each source (a daemon
behind a proxy) is followed on its own.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from dataclasses import dataclass

from streamemo import EMOTIONS, StreamemoError
from streamemo.protocol import EmotionMessage

DIMENSIONS = ("arousal", "valence")
SUBJECTS = (*EMOTIONS, *DIMENSIONS, "speech")
COMPARISONS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0}
MAX_DURATION_S = 86400.0  # a day: longer is surely a typo (3000s for 3s)
EXAMPLE = "e.g. 'angry >= 0.8 for 3s'"
# Sums of rounded hops (0.24 + 0.24 + ...) miss a round duration by a hair; this much is "held".
CLOCK_SLACK_S = 1e-6
MAX_SOURCES = 1000  # sources followed at once; the one heard from least recently is forgotten

_TOKEN = re.compile(r"""\s*(?:
      (?P<number>[-+]?(?:\d+\.?\d*|\.\d+))(?:(?P<unit>[a-z]+)|\s+(?P<spaced_unit>ms|min|s)\b)?
    | (?P<word>[a-z_][a-z_0-9]*)
    | (?P<op>[<>!=]=?|=>|=<)
    | (?P<other>\S))""", re.VERBOSE | re.IGNORECASE)


@dataclass(frozen=True)
class Clause:
    subject: str
    comparison: str
    threshold: float

    def value(self, message: EmotionMessage) -> float | None:
        """What this clause compares in `message`; None where it has no value (unvoiced, or a
        label the daemon's model does not have)."""
        if self.subject == "speech":
            return message.speech
        if not message.voiced:
            return None
        if self.subject in DIMENSIONS:
            return getattr(message, self.subject)
        if message.probs is None or self.subject not in message.labels:
            return None
        return message.probs[message.labels.index(self.subject)]

    def holds(self, message: EmotionMessage) -> bool:
        value = self.value(message)
        return value is not None and COMPARISONS[self.comparison](value, self.threshold)


@dataclass(frozen=True)
class Condition:
    text: str  # as the user wrote it
    clauses: tuple[Clause, ...]
    hold_s: float  # `for`: 0 when absent

    def holds(self, message: EmotionMessage) -> bool:
        return all(clause.holds(message) for clause in self.clauses)

    def emotions(self) -> list[str]:
        return [c.subject for c in self.clauses if c.subject in EMOTIONS]


def parse(text: str) -> Condition:
    """The condition `text` states; raises a one-line StreamemoError (exit 2) naming what is wrong."""
    text = " ".join(text.split())  # one line, in errors and logs, whatever a config's string held
    try:
        return _Parser(text).condition()
    except _Unreadable as e:
        raise StreamemoError(f"cannot read trigger '{text}': {e}", 2) from None


def parse_duration(text: str, what: str) -> float:
    """Seconds from '30s', '500ms', '2min' or a bare number of seconds ('30'), 0 to a day."""
    match = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+))\s*([a-z]*)\s*", text, re.IGNORECASE)
    if match is None or match[2].lower() not in (*UNITS, ""):
        raise StreamemoError(f"{what} {text!r}: expected a duration such as 30s, 500ms or 2min", 2)
    seconds = _seconds(match[1], match[2] or "s")
    if seconds is None:
        raise StreamemoError(f"{what} {text!r}: must be from 0 to a day (86400s)", 2)
    return seconds


def _seconds(number: str, unit: str) -> float | None:
    """`number` `unit`s (one of UNITS) in seconds; None outside 0 to MAX_DURATION_S."""
    seconds = float(number) * UNITS[unit.lower()]
    return seconds if 0 <= seconds <= MAX_DURATION_S else None


class _Unreadable(Exception):
    """What is wrong with a trigger's text; `parse` adds the text."""


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, str | None]] = []  # (kind, text, unit)
        for match in _TOKEN.finditer(text):
            kind = next(k for k in ("number", "word", "op", "other") if match[k] is not None)
            self.tokens.append((kind, match[kind], match["unit"] or match["spaced_unit"]))
        self.at = 0
        self.duration_text = ""  # 'for 3s' as read, for errors

    def condition(self) -> Condition:
        if not self.tokens:
            raise _Unreadable(f"it is empty; {EXAMPLE}")
        clauses = [self.clause()]
        hold_s = 0.0
        while self.at < len(self.tokens):
            word = self.next("'and' or 'for'")
            if word.lower() == "and":
                clauses.append(self.clause())
            elif word.lower() == "for":
                hold_s = self.duration()
                if self.at < len(self.tokens):
                    raise _Unreadable(f"'{self.duration_text}' ends the trigger, but "
                                      f"'{self.rest()}' follows it; put every clause before 'for'")
            else:
                raise _Unreadable(f"expected 'and' or 'for' after '{self.tokens[self.at - 2][1]}', got '{word}'")
        return Condition(self.text, tuple(clauses), hold_s)

    def clause(self) -> Clause:
        kind, word, _ = self.peek("an emotion, arousal, valence or speech")
        self.at += 1
        subject = word.lower()
        if kind != "word" or subject not in SUBJECTS:
            guess = difflib.get_close_matches(subject, SUBJECTS, n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else ""
            raise _Unreadable(f"unknown emotion '{word}'{hint} (known: {', '.join(SUBJECTS)})")
        comparison = self.next(f"a comparison (>=, >, <= or <) after '{word}'")
        if comparison not in COMPARISONS:
            raise _Unreadable(f"'{comparison}' after '{word}' is not a comparison; use >=, >, <= or <")
        kind, number, unit = self.peek(f"a number after '{word} {comparison}'")
        self.at += 1
        if kind != "number" or unit is not None:
            raise _Unreadable(f"expected a number after '{word} {comparison}', got '{number}{unit or ''}'")
        threshold = float(number)
        low, high, what = (-1.0, 1.0, subject) if subject in DIMENSIONS else (0.0, 1.0, "a probability")
        if not low <= threshold <= high:
            raise _Unreadable(f"{what} is from {low:g} to {high:g}, so '{word} {comparison} {number}' "
                              f"{'never' if (comparison[0] == '>') == (threshold > high) else 'always'} holds")
        return Clause(subject, comparison, threshold)

    def duration(self) -> float:
        kind, number, unit = self.peek("a duration such as 3s or 500ms after 'for'")
        self.at += 1
        if kind != "number":
            raise _Unreadable(f"expected a duration such as 3s or 500ms after 'for', got '{number}'")
        if unit is None and self.at < len(self.tokens) and self.tokens[self.at][0] == "word":
            unit = self.next("")  # 'for 3 sec': read the word, to say what is wrong with it
        if unit is None:
            raise _Unreadable(f"'for {number}' needs a unit: {number}s, {number}ms or {number}min")
        if unit.lower() not in UNITS:
            raise _Unreadable(f"'for {number} {unit}': the unit is ms, s or min, as in {number}s")
        seconds = _seconds(number, unit)
        if seconds is None:
            raise _Unreadable(f"'for {number}{unit}' must be from 0 to a day")
        self.duration_text = f"for {number}{unit}"
        return seconds

    def peek(self, expected: str) -> tuple[str, str, str | None]:
        if self.at >= len(self.tokens):
            raise _Unreadable(f"expected {expected}, but it ends there")
        return self.tokens[self.at]

    def next(self, expected: str) -> str:
        token = self.peek(expected)[1]
        self.at += 1
        return token

    def rest(self) -> str:
        return " ".join(t[1] + (t[2] or "") for t in self.tokens[self.at:])


@dataclass
class _Track:
    """One source's messages as one trigger follows them."""

    seq: int
    t_audio: float
    clock: float = 0.0  # seconds of this source's audio clock seen, carried across its restarts
    since: float | None = None  # `clock` at the first message of the current run of true ones
    rest_until: float = -math.inf  # `clock` at which the cool-down ends


class Trigger:
    """A condition with its cool-down, fed one `emotion` message at a time."""

    def __init__(self, condition: Condition, cooldown_s: float):
        self.condition, self.cooldown_s = condition, cooldown_s
        self.tracks: dict[str, _Track] = {}  # by source, least recently heard first

    def feed(self, message: EmotionMessage) -> float | None:
        """The seconds the condition has held when it fires on `message`; None when it does not."""
        track = self.tracks.pop(message.source, None)
        if track is None:
            if len(self.tracks) >= MAX_SOURCES:
                self.tracks.pop(next(iter(self.tracks)))
            track = _Track(message.seq - 1, message.t_audio)
        elif message.seq > track.seq and message.t_audio > track.t_audio:  # the same stream going on
            track.clock += message.t_audio - track.t_audio
        self.tracks[message.source] = track
        if message.seq != track.seq + 1 or message.t_audio <= track.t_audio:
            track.since = None  # messages missed, or a new stream: what held before is unknown
        track.seq, track.t_audio = message.seq, message.t_audio
        if track.clock < track.rest_until or not self.condition.holds(message):
            track.since = None
            return None
        if track.since is None:
            track.since = track.clock
        held = track.clock - track.since
        if held + CLOCK_SLACK_S < self.condition.hold_s:
            return None
        track.since, track.rest_until = None, track.clock + self.cooldown_s
        return held
