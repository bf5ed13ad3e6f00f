"""Scripted daemon messages: for the dashboard's tests, its benchmark, and for looking at it
without a microphone (`.venv/bin/python tests/feedgen.py tcp://127.0.0.1:5556`).

The bodies are exactly what `protocol.encode` accepts (as dicts, so a test can spoil them;
as typed messages, `*_message`, to send), so a feed sent through a real `Publisher`
exercises the same path as the daemon's. `StillReceiver` is a dashboard receiver that
receives nothing: a test fills its states itself.
"""

from __future__ import annotations

import argparse
import math
import time

from streamemo import EMOTIONS
from streamemo.dimensions import arousal_valence
from streamemo.dashboard.receiver import Receiver
from streamemo.protocol import SCHEMA_VERSION, EmotionMessage, StatusMessage

MODEL = "test@0123456789ab"


def emotion_body(seq: int, probs, *, raw=None, voiced: bool = True, t_capture: float, t_publish: float | None = None,
                 level_db: float = -20.0, labels=EMOTIONS, source: str = "feedgen") -> dict:
    """An emotion message whose top label is the argmax of `probs` (None when unvoiced)."""
    probs = [round(float(p), 5) for p in probs] if probs is not None else None
    top = labels[max(range(len(labels)), key=probs.__getitem__)] if voiced and probs else None
    dims = arousal_valence(labels, probs) if top else None  # as the daemon derives them
    return {
        "seq": seq,
        "t_capture": t_capture,
        "t_publish": t_publish if t_publish is not None else t_capture,
        "t_audio": seq * 0.2,
        "labels": list(labels),
        "probs": probs,
        "raw": ([round(float(p), 5) for p in raw] if raw is not None else probs) if voiced else None,
        "top": top,
        "confidence": max(probs) if top else None,
        "arousal": dims[0] if dims else None,
        "valence": dims[1] if dims else None,
        "voiced": voiced,
        "speech": 0.93 if voiced else 0.02,
        "level_db": level_db,
        "source": source,
        "model": MODEL,
    }


def one_hot(label: str, strength: float = 0.7, labels=EMOTIONS) -> list[float]:
    """`label` at `strength`, the rest spread evenly: a clear winner that still sums to 1."""
    rest = (1.0 - strength) / (len(labels) - 1)
    return [strength if name == label else rest for name in labels]


def status_body(seq: int, *, t_publish: float, uptime_s: float = 12.0, message: str = "listening",
                input_state: str = "running", overflows: int = 0, hop_s: float = 0.2) -> dict:
    return {
        "seq": seq,
        "t_publish": t_publish,
        "source": "feedgen",
        "device": "virtual mic",
        "input_state": input_state,
        "sample_rate": 48000,
        "model_rate": 16000,
        "model": MODEL,
        "uptime_s": uptime_s,
        "overflows": overflows,
        "dropped_samples": 0,
        "repaired_samples": 0,
        "messages_sent": seq * 5,
        "hop_s": hop_s,
        "proc_ms_p50": 11.5,
        "proc_ms_p99": 23.0,
        "compute": "cpu",
        "adapted_s": 42.0,
        "speech_share": 0.4,
        "message": message,
    }


def emotion_message(*args, **kwargs) -> EmotionMessage:
    return EmotionMessage.from_body({"v": SCHEMA_VERSION, **emotion_body(*args, **kwargs)})


def status_message(*args, **kwargs) -> StatusMessage:
    return StatusMessage.from_body({"v": SCHEMA_VERSION, **status_body(*args, **kwargs)})


class StillReceiver(Receiver):
    """A dashboard receiver without sockets: the app starts it as always, and it returns at
    once, leaving the states to the test (fixed times, a frozen clock: deterministic screens)."""

    def run(self, notify, cancelled=lambda: False) -> None:
        pass


def wandering(t: float, labels=EMOTIONS) -> list[float]:
    """Smoothly drifting probabilities: each emotion takes a turn at the top."""
    weights = [math.exp(3.0 * math.cos(t / 4.0 - 2 * math.pi * i / len(labels))) for i in range(len(labels))]
    total = sum(weights)
    return [w / total for w in weights]


def main() -> None:
    """Publishes a lively fake feed until interrupted: speech with pauses, status each second."""
    from streamemo.publish import Publisher

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("bind", nargs="?", default="tcp://127.0.0.1:5556")
    parser.add_argument("--rate", type=float, default=5.0, help="emotion messages per second")
    args = parser.parse_args()
    publisher = Publisher(args.bind)
    start = time.time()
    seq = 0
    try:
        while True:
            now = time.time()
            t = now - start
            voiced = (t % 12.0) < 9.0  # 9 s of speech, 3 s of silence
            probs = wandering(t)
            raw = [max(0.0, p + 0.08 * math.sin(7 * t + i)) for i, p in enumerate(probs)]
            raw = [r / sum(raw) for r in raw]  # a window's probabilities sum to 1, as the protocol checks
            publisher.send(emotion_message(seq, probs, raw=raw, voiced=voiced, t_capture=now - 0.03,
                                           level_db=-18 - 6 * math.sin(t) if voiced else -55.0))
            if seq % max(1, round(args.rate)) == 0:
                publisher.send(status_message(seq, t_publish=now, uptime_s=t, hop_s=1 / args.rate))
            seq += 1
            time.sleep(max(0.0, start + seq / args.rate - time.time()))
    except KeyboardInterrupt:
        pass
    finally:
        publisher.close()


if __name__ == "__main__":
    main()
