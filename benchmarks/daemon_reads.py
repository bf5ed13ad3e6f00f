"""Feeding a Processor as the daemon reads its input: what the pipeline asks for (the rest of
the next window, or half a hop while an encoder model may encode ahead), then its work
ahead (`Processor.prepare`). The CPU benchmarks (`anchor.py --live`, `latency.py`'s
pipeline cost) measure the live pipeline this way."""

from __future__ import annotations

import time

import numpy as np

from streamemo.audio.sources import Chunk


def feed_as_the_daemon_reads(processor, audio: np.ndarray) -> None:
    at = 0
    while at < len(audio):
        take = processor.source_samples_wanted()
        processor.process(Chunk(audio[at : at + take], time.time()))
        processor.prepare()
        at += take
