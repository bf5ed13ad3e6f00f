"""The wire format: ZeroMQ multipart messages [topic, JSON body], schema version 1.

Two topics. `emotion`: one message per hop. `status`: a heartbeat about once a second.
A subscriber in any language needs only this: subscribe to the topic prefix, read two
frames, parse the second as UTF-8 JSON, check `v`. The README shows an example of each.
"""

from __future__ import annotations

import json
import math

SCHEMA_VERSION = 1
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
    "probs": (list, None),  # smoothed probabilities; null before the first voiced window
    "raw": (list, None),  # this window's probabilities; null when unvoiced (not classified)
    "top": (str, None),  # top label after hysteresis; null when unvoiced
    "confidence": (*_NUMBER, None),  # smoothed probability of `top`
    "voiced": bool,
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
    "messages_sent": int,  # emotion messages since start
    "hop_s": _NUMBER,
    "proc_ms_p50": (*_NUMBER, None),  # processing time per hop over the last ~30 s
    "proc_ms_p99": (*_NUMBER, None),
    "compute": str,  # torch device the frontend and model run on
    "adapted_s": (*_NUMBER, None),  # seconds of voice speaker adaptation has learnt from (decaying);
    #                                null when the model or config has no speaker adaptation
    "message": str,  # a line a person can read: what the daemon is doing or what went wrong
}
FIELDS = {"emotion": EMOTION_FIELDS, "status": STATUS_FIELDS}
# Fields added within schema version 1: a reader accepts messages from daemons that predate them.
OPTIONAL = {"status": {"adapted_s"}}


def encode(topic: str, body: dict) -> list[bytes]:
    body = {"v": SCHEMA_VERSION, **body}
    _validate(topic, body)
    return [topic.encode(), json.dumps(body, separators=(",", ":"), allow_nan=False).encode()]


def decode(frames: list[bytes]) -> tuple[str, dict]:
    """Parses and validates one message; raises ProtocolError saying what is wrong."""
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames [topic, body], got {len(frames)}")
    try:
        topic = frames[0].decode()
        body = json.loads(frames[1], parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"not UTF-8 JSON: {e}") from None
    if not isinstance(body, dict):
        raise ProtocolError("body is not a JSON object")
    _validate(topic, body)
    return topic, body


def _validate(topic: str, body: dict) -> None:
    if topic not in FIELDS:
        raise ProtocolError(f"unknown topic {topic!r}")
    if body.get("v") != SCHEMA_VERSION:
        raise ProtocolError(f"schema version {body.get('v')!r}, this build reads {SCHEMA_VERSION}")
    for name, kind in FIELDS[topic].items():
        if name not in body:
            if name in OPTIONAL.get(topic, ()):
                continue
            raise ProtocolError(f"{topic} message lacks field {name!r}")
        kinds = kind if isinstance(kind, tuple) else (kind,)
        value = body[name]
        if value is None and None in kinds:
            continue
        types_ = tuple(k for k in kinds if k is not None)
        if not isinstance(value, types_) or (isinstance(value, bool) and bool not in types_):
            raise ProtocolError(f"{topic} field {name!r} has the wrong type ({type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):  # e.g. 1e400 parses as inf
            raise ProtocolError(f"{topic} field {name!r} is not finite")
    if topic == "emotion":
        n = len(body["labels"])
        if not all(isinstance(label, str) for label in body["labels"]):
            raise ProtocolError("emotion field 'labels' must hold strings")
        for name in ("probs", "raw"):
            values = body[name]
            if values is None:
                continue
            if len(values) != n:
                raise ProtocolError(f"emotion field {name!r} has {len(values)} values for {n} labels")
            if not all(isinstance(v, _NUMBER) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                raise ProtocolError(f"emotion field {name!r} must hold finite numbers")


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
