"""The wire format: ZeroMQ multipart messages [topic, JSON body], schema version 2.

Two topics. `emotion`: one message per hop. `status`: a heartbeat about once a second.
A subscriber in any language needs only this: subscribe to the topic prefix, read two
frames, parse the second as UTF-8 JSON, check `v`. The README shows an example of each.

Version 2 (issue 15): `voiced` means speech heard (it meant sound loud enough), and
`emotion` carries `speech`, `status` carries `speech_share`. This build reads version 1
messages too (their new fields are null); a version 1 reader refuses version 2 with its
"schema version" error, which names the version it got.

A field a reader can do without is added within a version, not by a new one (`ADDED_IN_V2`):
a daemon older than it omits it, and readers take it as null. A version 2 reader ignores
fields it does not know, so none had to change when `emotions` came (issue 29).

Decoding is the one validation every reader goes through: types, sizes, each number's
range (`RANGES`), and what must agree (probabilities summing to 1, `top` among the labels).
What fails is one `ProtocolError` line, never a value a reader would have to doubt.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields
from typing import ClassVar

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
TOPICS = ("emotion", "status")


class ProtocolError(ValueError):
    """A message that is not valid streamemo protocol (bad JSON, wrong version, missing field)."""


# Required fields and their JSON types per topic; optional-null fields say so with None.
_NUMBER = (int, float)
EMOTION_FIELDS = {
    "v": int,
    "seq": int,  # per-publisher counter, consecutive; a gap means messages were dropped
    "t_capture": _NUMBER,  # unix seconds: capture time of the window's last sample
    "t_publish": _NUMBER,  # unix seconds: when this message was sent
    "t_audio": _NUMBER,  # seconds of audio since the stream started, at the window's end
    "labels": list,
    # the chosen set of emotions in force (`--emotions`): the same list as `labels`, which then
    # holds only those; null when none was chosen and `labels` are all the model's. Added within version 2
    "emotions": (list, None),
    "probs": (list, None),  # smoothed probabilities; null before the first voiced window
    "raw": (list, None),  # this window's probabilities; null when unvoiced (not classified)
    "top": (str, None),  # top label after hysteresis; null when unvoiced
    "confidence": (*_NUMBER, None),  # smoothed probability of `top`
    # -1 ... +1, derived from the smoothed probabilities with published places for each
    # emotion (streamemo/dimensions.py: Russell & Mehrabian 1977); null when unvoiced
    "arousal": (*_NUMBER, None),
    "valence": (*_NUMBER, None),
    "voiced": bool,  # the voice gate heard speech: the window was classified
    "speech": (*_NUMBER, None),  # mean speech probability (Silero VAD) over the gate's lookback, 0-1
    "level_db": _NUMBER,  # input level over the last hop, dBFS
    "source": str,
    "model": str,  # model name @ first 12 hex digits of its weights' SHA-256
}
STATUS_FIELDS = {
    "v": int,
    "seq": int,
    "t_publish": _NUMBER,
    "source": str,
    "device": str,  # the input device (or file / stdin) actually opened
    "input_state": str,  # starting | running | lost | ended
    "sample_rate": int,  # the source's native rate; audio is resampled to model_rate
    "model_rate": int,
    "model": str,
    "uptime_s": _NUMBER,
    "overflows": int,  # input overflows: PortAudio's flags plus ring-buffer overruns
    "dropped_samples": int,
    "repaired_samples": int,  # input samples that were NaN, infinite or far past full scale:
    #                          made silent or clipped before they reached the model
    "messages_sent": int,  # emotion messages since start
    "hop_s": _NUMBER,
    "proc_ms_p50": (*_NUMBER, None),  # processing time per hop over the last ~30 s
    "proc_ms_p99": (*_NUMBER, None),
    "compute": str,  # torch device the frontend and model run on
    "speech_share": (*_NUMBER, None),  # share of the last minute's audio that was speech, 0-1;
    #                                    null before the first window
    "adapted_s": (*_NUMBER, None),  # seconds of voice speaker adaptation has learnt from (decaying);
    #                                null when the model or config has no speaker adaptation
    "message": str,  # a line a person can read: what the daemon is doing or what went wrong
}
FIELDS = {"emotion": EMOTION_FIELDS, "status": STATUS_FIELDS}
# Fields a version 1 message may lack (added within version 1, or in version 2), and those added
# within version 2, which a version 2 daemon older than them lacks; a message has every other field.
OPTIONAL_V1 = {"status": {"adapted_s", "repaired_samples", "speech_share"},
               "emotion": {"arousal", "valence", "speech"}}
ADDED_IN_V2 = {"status": set(), "emotion": {"emotions"}}
OPTIONAL = {1: {topic: OPTIONAL_V1[topic] | ADDED_IN_V2[topic] for topic in FIELDS}, 2: ADDED_IN_V2}

# A real message is under a kilobyte and three levels deep. These bounds turn a hostile or
# broken publisher's body (a megabyte of "[", a million labels) into one counted error
# instead of a RecursionError, or a minute of parsing, in every subscriber.
MAX_BODY_BYTES = 1 << 20
MAX_DEPTH = 16
MAX_LABELS = 256
MAX_INT = 2**63  # ints other languages can hold (int64); one past about 10**308 is not even a float
MAX_TOPIC_BYTES = 64  # the topics are a few letters; a longer frame is not ours, and is never echoed whole

# The values each number may take, checked on every decode, so that no reader (the client,
# `subscribe`, the dashboard, `report`) shows an arousal of 50 or a latency of 10**20 ms.
# Generous: anything the daemon can publish fits with room to spare. Unix times are from
# 1970 to 2242 (2**33 s); `t_audio` is seconds of a stream, which no daemon outruns.
TIME = (0.0, 2.0**33)
COUNT = (0, MAX_INT - 1)
UNIT = (0.0, 1.0)
RANGES = {
    "emotion": {"seq": COUNT, "t_capture": TIME, "t_publish": TIME, "t_audio": TIME, "confidence": UNIT,
                "arousal": (-1.0, 1.0), "valence": (-1.0, 1.0), "speech": UNIT,
                # digital silence is -120 (the daemon's floor; older ones sent -200); samples are
                # clipped at +-8 before resampling, about +18 dBFS
                "level_db": (-200.0, 40.0)},
    "status": {"seq": COUNT, "t_publish": TIME, "sample_rate": (0, 10_000_000),  # 0: no input open
               "model_rate": (1, 10_000_000), "uptime_s": TIME, "overflows": COUNT, "dropped_samples": COUNT,
               "repaired_samples": COUNT, "messages_sent": COUNT, "hop_s": (1e-3, 3600.0),
               "proc_ms_p50": (0.0, 1e7), "proc_ms_p99": (0.0, 1e7), "speech_share": UNIT, "adapted_s": TIME},
}
# A distribution's probabilities sum to 1; each is rounded to 5 digits on the wire (rounded()),
# so up to MAX_LABELS of them miss 1 by at most 256 * 5e-6.
SUM_TOLERANCE = 0.01


class _Message:
    """A message as the program handles it: typed fields instead of a dict read by string keys.
    The body on the wire is the same JSON object the protocol has always had."""

    TOPIC: ClassVar[str]

    def to_body(self, t_publish: float | None = None) -> dict:
        """The wire body, fields in the protocol's order. `t_publish`: the moment of sending,
        which only the sender knows (`Publisher.send` passes it); a received message keeps its own."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if t_publish is not None:
            values["t_publish"] = t_publish
        body = {"v": SCHEMA_VERSION}
        for name in FIELDS[self.TOPIC]:
            if name in values:
                value = values[name]
                body[name] = list(value) if isinstance(value, tuple) else value
        return body

    @classmethod
    def from_body(cls, body: dict):
        """The message of a wire body (with its `v`); raises ProtocolError saying what is wrong.
        Fields a newer daemon adds are ignored; optional ones an older daemon lacks take their defaults."""
        if not isinstance(body, dict):
            raise ProtocolError("body is not a JSON object")
        validate(cls.TOPIC, body)
        return cls(**{name: _frozen(body[name]) for name in _FIELD_NAMES[cls] if name in body})


def _frozen(value):
    return tuple(value) if value.__class__ is list else value


@dataclass(frozen=True)
class EmotionMessage(_Message):
    """One hop's estimate; the fields are described in EMOTION_FIELDS."""

    TOPIC: ClassVar[str] = "emotion"
    seq: int
    t_capture: float
    t_audio: float
    labels: tuple[str, ...]
    probs: tuple[float, ...] | None
    raw: tuple[float, ...] | None
    top: str | None
    confidence: float | None
    voiced: bool
    level_db: float
    source: str
    model: str
    arousal: float | None = None  # version 1 messages may lack these (OPTIONAL_V1)
    valence: float | None = None
    speech: float | None = None
    emotions: tuple[str, ...] | None = None  # older version 2 daemons omit it too (ADDED_IN_V2)
    t_publish: float | None = None  # None until sent: the sender stamps it (to_body)


@dataclass(frozen=True)
class StatusMessage(_Message):
    """The daemon's heartbeat; the fields are described in STATUS_FIELDS."""

    TOPIC: ClassVar[str] = "status"
    seq: int
    source: str
    device: str
    input_state: str
    sample_rate: int
    model_rate: int
    model: str
    uptime_s: float
    overflows: int
    dropped_samples: int
    messages_sent: int
    hop_s: float
    proc_ms_p50: float | None
    proc_ms_p99: float | None
    compute: str
    message: str
    repaired_samples: int = 0  # version 1 messages may lack these (OPTIONAL_V1)
    adapted_s: float | None = None
    speech_share: float | None = None
    t_publish: float | None = None  # None until sent, as for EmotionMessage


Message = EmotionMessage | StatusMessage
MESSAGES = {m.TOPIC: m for m in (EmotionMessage, StatusMessage)}
_FIELD_NAMES = {m: tuple(f.name for f in fields(m)) for m in MESSAGES.values()}


def to_json(value) -> str:
    """The one JSON writer (the wire, `classify --json`, `subscribe`): compact, and never NaN
    or Infinity, which are not JSON; a non-finite number here is a bug upstream and raises."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def encode(topic: str, body: dict) -> list[bytes]:
    # A file name that is not UTF-8 reaches Python with lone surrogates in it ("\udcff"),
    # which decoding refuses (they are not text: strict JSON parsers reject them too): the
    # sender writes them as U+FFFD instead, so a daemon reading such a file still publishes.
    body = {"v": SCHEMA_VERSION, **{k: _text(v) for k, v in body.items()}}
    validate(topic, body)
    return [topic.encode(), to_json(body).encode()]


def encode_message(message: Message, t_publish: float) -> list[bytes]:
    """The frames of `message` sent at `t_publish`."""
    return encode(message.TOPIC, message.to_body(t_publish))


def decode_message(frames: list[bytes]) -> Message:
    """Parses and validates one message into its type; raises ProtocolError saying what is wrong."""
    topic, body = _parse(frames)
    if topic not in MESSAGES:
        raise ProtocolError(f"unknown topic {_show(topic)}")
    return MESSAGES[topic].from_body(body)


def decode(frames: list[bytes]) -> tuple[str, dict]:
    """Parses and validates one message; raises ProtocolError saying what is wrong."""
    topic, body = _parse(frames)
    validate(topic, body)
    return topic, body


def _parse(frames: list[bytes]) -> tuple[str, dict]:
    """[topic, body] frames -> (topic, a JSON object within the size and depth limits)."""
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames [topic, body], got {len(frames)}")
    if len(frames[0]) > MAX_TOPIC_BYTES:
        raise ProtocolError(f"topic frame of {len(frames[0])} bytes; the topics are {' and '.join(TOPICS)}")
    if len(frames[1]) > MAX_BODY_BYTES:
        raise ProtocolError(f"body of {len(frames[1])} bytes, more than {MAX_BODY_BYTES}")
    try:
        topic = frames[0].decode()
        body = json.loads(frames[1], parse_constant=_reject_constant)
    except ValueError as e:  # not UTF-8, not JSON, or an integer of more than 4300 digits
        raise ProtocolError(f"not UTF-8 JSON: {e}") from None
    except RecursionError:  # the parser's own limit (about 1000 levels) on the way down
        raise ProtocolError(f"body nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise ProtocolError("body is not a JSON object")
    if _depth(body) > MAX_DEPTH:  # shallower than the parser's limit, but deep enough to hurt a writer
        raise ProtocolError(f"body nested deeper than {MAX_DEPTH} levels")
    return topic, body


def _depth(value) -> int:
    """Nesting depth of parsed JSON, without recursion (the point is to survive deep input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _finite(value) -> bool:
    """A JSON number usable anywhere: a finite float, or an int a float or int64 can hold."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < MAX_INT
    return isinstance(value, float) and math.isfinite(value)


def _field_checks(topic: str) -> list[tuple]:
    """(name, allowed types, nullable, whether bool is allowed, range) per field: worked out
    once, as `streamemo report` validates millions of lines."""
    checks = []
    for name, kind in FIELDS[topic].items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        types_ = tuple(k for k in kinds if k is not None)
        checks.append((name, types_, None in kinds, bool in types_, RANGES[topic].get(name)))
    return checks


_CHECKS = {topic: _field_checks(topic) for topic in FIELDS}
_MISSING = object()


def validate(topic: str, body: dict) -> None:
    """Raises ProtocolError unless `body` (a parsed message, with its `v`) is a valid `topic`
    message: the one check every reader makes (decode, from_body, `streamemo report`)."""
    if topic not in FIELDS:
        raise ProtocolError(f"unknown topic {_show(topic)}")
    version = body.get("v")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ProtocolError(f"schema version {_show(version)}, this build reads "
                            f"{' and '.join(map(str, READABLE_VERSIONS))}; update streamemo")
    for name, types_, nullable, boolean, limits in _CHECKS[topic]:
        value = body.get(name, _MISSING)
        if value is _MISSING:
            if name in OPTIONAL[version][topic]:
                continue
            raise ProtocolError(f"{topic} message lacks field {name!r}")
        if value is None and nullable:
            continue
        if not isinstance(value, types_) or (value.__class__ is bool and not boolean):
            raise ProtocolError(f"{topic} field {name!r} has the wrong type ({type(value).__name__})")
        if limits is not None and not limits[0] <= value <= limits[1]:  # NaN and inf fail this too
            if not _finite(value):
                raise ProtocolError(f"{topic} field {name!r} is not finite")  # 1e400 parses as inf
            raise ProtocolError(f"{topic} field {name!r} must be from {limits[0]:g} to {limits[1]:g}, "
                                f"got {_show(value)}")
        if value.__class__ is str and not value.isascii() and not _is_text(value):
            raise ProtocolError(f"{topic} field {name!r} is not valid Unicode (a lone surrogate)")
    if topic == "emotion":
        _check_distribution(body)


_NUMBER_TYPES = {int, float}


def _check_distribution(body: dict) -> None:
    """The emotion fields that must agree with each other: distinct string labels, a
    probability for each summing to 1, a top label that is one of them, and a chosen set of
    emotions, when one is named, that is those labels."""
    labels = body["labels"]
    n = len(labels)
    try:
        text = "".join(labels)  # one check for all: a TypeError unless each is a string
    except TypeError:
        text = None
    if not 0 < n <= MAX_LABELS or text is None or not _is_text(text):
        raise ProtocolError(f"emotion field 'labels' must hold strings, 1 to {MAX_LABELS} of them")
    if len(set(labels)) != n:
        raise ProtocolError("emotion field 'labels' names a label twice")
    for name in ("probs", "raw"):
        values = body[name]
        if values is None:
            continue
        if len(values) != n:
            raise ProtocolError(f"emotion field {name!r} has {len(values)} values for {n} labels")
        # Exact types: a bool is an int to Python, not a probability. Between 0 and 1 also
        # rules out NaN and the infinity that 1e400 parses as.
        if not set(map(type, values)) <= _NUMBER_TYPES or not (0 <= min(values) and max(values) <= 1):
            raise ProtocolError(f"emotion field {name!r} must hold finite numbers from 0 to 1")
        total = sum(values)
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ProtocolError(f"emotion field {name!r} must sum to 1, got {total:.4g}")
    top = body["top"]
    if top is not None and top not in labels:
        raise ProtocolError(f"emotion field 'top' is {_show(top)}, which is not one of the labels")
    emotions = body.get("emotions")
    if emotions is not None and emotions != labels:
        raise ProtocolError("emotion field 'emotions' must be null or the labels in force, as 'labels' lists them")


def _is_text(value: str) -> bool:
    """Whether `value` is real text: JSON's "\\ud800" escapes parse into lone surrogates,
    which no UTF-8 writer (a file, a terminal, a plot) can take."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value):
    """`value` with lone surrogates (in a string, or in a list of them) as U+FFFD."""
    if isinstance(value, str):
        return value if _is_text(value) else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return [_text(v) for v in value]
    return value


def _show(value, limit: int = 40) -> str:
    """repr(value), cut to `limit` characters: a hostile publisher's megabyte string must not
    be echoed whole into every reader's log."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _reject_constant(name: str):
    # Python's json accepts NaN and Infinity, which are not JSON and which other languages'
    # parsers reject.
    raise ProtocolError(f"not valid JSON: {name} is not a number JSON allows")


def rounded(values, digits: int = 5) -> list[float] | None:
    """Probabilities rounded for the wire: 5 digits is below any difference that matters and
    keeps messages short. Non-finite values would break JSON and are a bug upstream."""
    if values is None:
        return None
    out = [round(float(v), digits) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise ValueError("non-finite probability")
    return out
