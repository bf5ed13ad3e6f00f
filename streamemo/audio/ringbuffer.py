"""A single-producer, single-consumer ring of float32 samples for the audio callback.

The producer (PortAudio's callback thread) only copies into preallocated memory and bumps
a counter: no allocation, no lock, no logging. The consumer detects what it lost instead
of making the producer wait: if it falls more than a ring behind, it skips ahead and
counts the overrun; a read that the producer may have overwritten mid-copy is trimmed to
the part that was certainly intact, so a read is never torn.
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._data = np.zeros(capacity, dtype=np.float32)
        self.written = 0  # total samples ever written; only the producer changes it
        self.max_write = 0  # largest single write, bounds what a write in progress can clobber
        self.seq = 0  # odd while a write is in progress (a seqlock: the consumer checks, never waits)
        # (written, wall-clock capture time of sample written-1): one tuple, replaced whole,
        # so the consumer never pairs a count from one write with a time from another.
        self.stamp = (0, 0.0)

    def write(self, samples: np.ndarray, t_last: float = 0.0) -> None:
        """Producer side. `samples` is 1-D float32; the newest `capacity` of them are kept."""
        self.seq += 1
        n = len(samples)
        if n > self.max_write:
            self.max_write = n
        start_total = self.written
        if n > self.capacity:  # only the newest `capacity` samples can be kept
            samples = samples[n - self.capacity :]
            start_total += n - self.capacity
        m = len(samples)
        start = start_total % self.capacity
        first = min(m, self.capacity - start)
        self._data[start : start + first] = samples[:first]
        self._data[: m - first] = samples[first:]
        self.written += n  # published after the copy: the consumer never reads an unfilled slot
        self.stamp = (self.written, t_last)
        self.seq += 1


class RingReader:
    """Consumer side of a RingBuffer; keeps its own position and counts what it lost."""

    def __init__(self, ring: RingBuffer):
        self.ring = ring
        self.position = ring.written
        self.dropped = 0  # samples lost to overruns
        self.overruns = 0  # times the consumer fell behind by more than the ring

    @property
    def available(self) -> int:
        return self.ring.written - self.position

    def read(self, max_samples: int | None = None) -> np.ndarray:
        """Copies out up to `max_samples` of the oldest unread samples (all, by default)."""
        ring = self.ring
        cap = ring.capacity
        seq_before = ring.seq
        written = ring.written
        if written - self.position > cap:
            self._lose(written - cap - self.position)
        n = written - self.position
        if max_samples is not None:
            n = min(n, max_samples)
        start = self.position % cap
        first = min(n, cap - start)
        out = np.concatenate([ring._data[start : start + first], ring._data[: n - first]])
        seq_after = ring.seq
        if seq_after != seq_before or seq_after % 2:
            # Writes overlapped the copy and may have overwritten our oldest samples: anything
            # older than what has been (or, mid-write, may be) written minus a ring is suspect.
            in_progress = ring.max_write if seq_after % 2 else 0
            unsafe_before = ring.written + in_progress - cap
        else:
            unsafe_before = -1
        if unsafe_before > self.position:
            bad = min(n, unsafe_before - self.position)
            self._lose(bad)
            out = out[bad:]
            n -= bad
        self.position += n
        return out

    def time_of(self, position: int, rate: float) -> float:
        """Wall-clock capture time of sample `position`, from the producer's latest stamp."""
        written, t_last = self.ring.stamp
        return t_last - (written - 1 - position) / rate

    def _lose(self, n: int) -> None:
        self.position += n
        self.dropped += n
        self.overruns += 1
