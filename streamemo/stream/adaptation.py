"""Speaker adaptation: each feature band's level and spread, measured on the voice heard.

Speakers differ in how loud, how high and how animated they sound by more than one
speaker's emotions differ from each other, and a network trained on twenty-odd actors
learns some of those differences as if they were emotion. So every speaker's bands are
mapped to one reference mean and spread. Live, the statistics are a running estimate over
the voice heard so far (`SpeakerAdapter`): it starts at the reference (the mapping starts
as the identity) and forgets slowly, so a new speaker takes over within minutes. The
trainer normalises each example with statistics drawn as that estimate would be partway
through a session (`train.sessions.SpeakerSessions`), from the same `VoiceStats`.

Mapping each band's mean alone did not help; mapping mean and spread did (the measured
effects are in benchmarks/RESULTS-train.md).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from streamemo.features import BandStats

# Frames whose mean log-mel lies more than this below the loudest frame of the same map are
# pauses, not voice: 7 natural-log units of power, about 30 dB.
ACTIVE_RANGE = 7.0
MIN_STD = 1e-3  # a band that never varies (digital silence) must not divide by zero
# A voice's spread is scaled onto the reference's by at most this factor either way: a band
# a narrow-band microphone leaves empty would otherwise be amplified into pure noise.
MAX_SCALE = 4.0


def active_frames(feats: np.ndarray) -> np.ndarray:
    """(n_features, frames) -> the frames within ACTIVE_RANGE of the map's loudest."""
    energy = feats.mean(axis=0)
    return feats[:, energy > energy.max() - ACTIVE_RANGE] if feats.shape[1] else feats


class VoiceStats:
    """Running sums over active frames of voiced windows, optionally decaying: the one
    definition of "a voice's statistics", shared by training and the daemon."""

    def __init__(self, n_features: int, memory_frames: float = math.inf, select_active: bool = True):
        """`select_active`: count only a window's frames near its loudest (log-mel maps); an
        encoder's features carry no energy to tell pauses by, and every frame of a voiced
        window counts."""
        self.memory_frames = memory_frames
        self.select_active = select_active
        self.frames, self.sum, self.sum_sq = 0.0, np.zeros(n_features), np.zeros(n_features)

    def update(self, feats: np.ndarray, weight: float) -> None:
        """Adds one voiced window's map; each of its active frames counts `weight` (windows
        overlap: a window's share of its frames is hop / window)."""
        feats = np.asarray(feats, dtype=np.float64)
        if not np.isfinite(feats).all():  # one bad map must not poison the estimate for good
            return
        frames = active_frames(feats) if self.select_active else feats
        decay = math.exp(-weight * feats.shape[1] / self.memory_frames)
        self.frames = self.frames * decay + weight * frames.shape[1]
        self.sum = self.sum * decay + weight * frames.sum(axis=1)
        self.sum_sq = self.sum_sq * decay + weight * np.square(frames).sum(axis=1)

    def stats(self) -> BandStats:
        n = max(self.frames, 1e-9)
        mean = self.sum / n
        var = np.maximum(self.sum_sq / n - np.square(mean), 0.0)  # rounding can dip below 0
        return BandStats(mean, np.maximum(np.sqrt(var), MIN_STD))

    @classmethod
    def total(cls, parts: list[VoiceStats]) -> VoiceStats:
        """What one VoiceStats would hold after all of `parts`' windows (no decay)."""
        out = cls(len(parts[0].sum))
        for p in parts:
            out.frames, out.sum, out.sum_sq = out.frames + p.frames, out.sum + p.sum, out.sum_sq + p.sum_sq
        return out


def shrunk(ref: BandStats, heard: VoiceStats, prior_frames: float) -> BandStats:
    """The heard voice's mean and spread, each shrunk towards the reference's by
    `prior_frames` (blended separately: a voice far from the average must not look more varied)."""
    k, n = prior_frames, heard.frames
    if n <= 0:
        return ref
    own = heard.stats()
    return BandStats((k * ref.mean + n * own.mean) / (k + n),
                     np.sqrt((k * np.square(ref.std) + n * np.square(own.std)) / (k + n)))


def reference_stats(per_speaker: list[BandStats]) -> BandStats:
    """The average speaker: what every speaker is mapped onto."""
    return BandStats(np.mean([s.mean for s in per_speaker], axis=0), np.mean([s.std for s in per_speaker], axis=0))


def affine(own: BandStats, ref: BandStats) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) per band with scale * x + shift mapping `own` onto `ref`."""
    scale = np.clip(ref.std / own.std, 1 / MAX_SCALE, MAX_SCALE)
    return scale, ref.mean - own.mean * scale


class SpeakerAdapter:
    """The statistics of the voice heard so far, blended with the reference.

    `prior_frames` of reference statistics weigh in from the start, so the first words are
    scored almost as the training set's average speaker; what was heard decays with a time
    constant of `memory_frames` voiced frames, so the estimate follows a change of speaker.
    """

    def __init__(self, ref: BandStats, prior_frames: float, memory_frames: float, select_active: bool = True):
        self.ref = ref
        self.select_active = select_active
        self.prior_frames = float(prior_frames)
        self.memory_frames = float(memory_frames)
        self.learning = True
        self.reset()

    def reset(self) -> None:
        self.heard = VoiceStats(len(self.ref.mean), self.memory_frames, self.select_active)

    def update(self, feats: np.ndarray, weight: float = 1.0) -> None:
        if self.learning:
            self.heard.update(feats, weight)

    def current(self) -> BandStats:
        return shrunk(self.ref, self.heard, self.prior_frames)

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        return affine(self.current(), self.ref)

    @contextlib.contextmanager
    def frozen(self):
        """Scores without learning: for a second look at audio already judged unvoiced."""
        self.learning, before = False, self.learning
        try:
            yield self
        finally:
            self.learning = before
