"""Source chunks in, `emotion` messages out: resampling + pipeline + message fields.

The daemon publishes what this produces and `streamemo classify` prints it, so a file
gives the same messages either way (only the wall-clock timestamps differ).
"""

from __future__ import annotations

import time

import numpy as np

from streamemo.audio.resample import StreamResampler
from streamemo.audio.sources import Chunk
from streamemo.dimensions import arousal_valence
from streamemo.protocol import EmotionMessage, rounded
from streamemo.stream.pipeline import Estimate, Pipeline

# Float files may go a little past full scale; far beyond it is not sound but corruption, and
# would overflow the frontend's float32 spectra into inf and NaN. Samples that are NaN or
# infinite become silence, samples past this are clipped to it; both are counted.
MAX_SAMPLE = 8.0  # +18 dBFS


class Processor:
    def __init__(self, pipeline: Pipeline, source_rate: int, source_name: str):
        self.pipeline = pipeline
        self.resampler = StreamResampler(source_rate, pipeline.rate)
        self.source_name = source_name
        self.seq = 0
        self.samples_in = 0  # at the source's rate
        self.repaired = 0  # source samples that were not finite or beyond MAX_SAMPLE
        self.proc_ms: list[float] = []  # per-hop processing times not yet collected by the caller

    def reset(self, source_rate: int, pipeline: Pipeline | None = None) -> None:
        """A new stream after a gap in the audio (an input reopened, perhaps at another rate), or
        into another `pipeline` (a reload that changes the windowing): the windowing starts
        afresh, but sequence numbers and the repaired count go on, so a subscriber sees one
        stream from one publisher."""
        self.pipeline = pipeline or self.pipeline
        self.pipeline.reset()
        self.resampler = StreamResampler(source_rate, self.pipeline.rate)
        self.samples_in = 0

    @property
    def source_rate(self) -> int:
        return self.resampler.in_rate

    @property
    def labels(self) -> list[str]:
        # Read from the running pipeline each time: a reload may swap its model.
        return self.pipeline.labels

    def process(self, chunk: Chunk) -> list[tuple[Estimate, EmotionMessage]]:
        samples = chunk.samples
        self.samples_in += len(samples)
        bad = ~(np.abs(samples) <= MAX_SAMPLE)  # NaN compares false: bad too
        if bad.any():  # before the resampler, whose filter would smear one NaN over many samples
            self.repaired += int(bad.sum())
            samples = np.clip(np.where(np.isfinite(samples), samples, 0.0), -MAX_SAMPLE, MAX_SAMPLE).astype(np.float32)
        out = self.resampler(samples)
        # The resampler holds back a few ms of output (its filter's delay): the last sample
        # out was captured that much before the chunk's last sample in.
        held_back_s = self.samples_in / self.resampler.in_rate - (self.pipeline.total + len(out)) / self.pipeline.rate
        return self._run(out, chunk.t_end - held_back_s, flush=False)

    def source_samples_wanted(self) -> int:
        """Source-rate samples that bring the pipeline's next task, usually the next window
        (give or take the resampler's few held-back milliseconds, which later, smaller reads
        make up)."""
        needed = self.pipeline.samples_to_next_task * self.resampler.in_rate
        return -(-needed // self.pipeline.rate)  # rounded up: integer ceiling division

    def prepare(self) -> None:
        """Between reads: the pipeline's work ahead (Pipeline.prepare)."""
        self.pipeline.prepare()

    def finish(self) -> list[tuple[Estimate, EmotionMessage]]:
        """End of stream: drains the resampler and lets a short stream have its one window."""
        return self._run(self.resampler(np.zeros(0, np.float32), last=True), time.time(), flush=True)

    def _run(self, samples: np.ndarray, t_end: float, flush: bool) -> list[tuple[Estimate, EmotionMessage]]:
        start = time.perf_counter()
        estimates = self.pipeline.feed(samples, t_end)
        if flush:
            estimates += self.pipeline.flush(t_end)
        if estimates:
            per_hop = (time.perf_counter() - start) * 1000.0 / len(estimates)
            self.proc_ms.extend([per_hop] * len(estimates))
        return [(e, self._message(e)) for e in estimates]

    def _message(self, e: Estimate) -> EmotionMessage:
        model, labels = self.pipeline.model, self.labels
        probs, raw = rounded(e.smoothed), rounded(e.raw)
        dims = None if e.top is None else arousal_valence(labels, e.smoothed)
        message = EmotionMessage(
            seq=self.seq,
            t_capture=e.t_capture if e.t_capture is not None else time.time(),
            t_audio=round(e.t_audio, 6),
            labels=tuple(labels),
            emotions=None if self.pipeline.keep is None else tuple(labels),
            probs=None if probs is None else tuple(probs),
            raw=None if raw is None else tuple(raw),
            top=None if e.top is None else labels[e.top],
            confidence=None if e.top is None else round(float(e.smoothed[e.top]), 5),
            arousal=None if dims is None else dims[0],
            valence=None if dims is None else dims[1],
            voiced=e.voiced,
            speech=e.speech,
            level_db=round(max(e.level_db, -120.0), 2),
            source=self.source_name,
            model=model.id,
        )
        self.seq += 1
        return message
