"""Training batches: which clips an epoch draws, which stretch of each, which of its
waveform copies, normalised for its speaker and masked (SpecAugment); and the windows
validation scores. The same rule cuts windows here as in the daemon (`window_starts`)."""

from __future__ import annotations

import numpy as np
import torch

from streamemo.features import window_starts
from streamemo.train.augment import spec_augment
from streamemo.train.datasets import Clip
from streamemo.train.recipe import TrainConfig
from streamemo.train.sessions import SpeakerSessions


def corpus_draw_probabilities(clips: list[Clip], power: float) -> np.ndarray | None:
    """Per clip, its probability of being drawn (summing to 1) when each corpus's share is
    proportional to its size to `power`; None for power 1, where every clip is drawn once
    an epoch in a random order."""
    if power == 1.0:
        return None
    corpora = [c.corpus for c in clips]
    sizes = {name: corpora.count(name) for name in set(corpora)}
    total = sum(n**power for n in sizes.values())
    return np.array([sizes[name] ** power / total / sizes[name] for name in corpora])


def class_weights(y: np.ndarray, n_classes: int, draw: np.ndarray | None) -> torch.Tensor:
    """Loss weights inverse to each class's share of an epoch's draws."""
    draws = np.bincount(y, weights=None if draw is None else draw * len(y), minlength=n_classes)
    return torch.tensor(len(y) / (n_classes * np.maximum(draws, 1)), dtype=torch.float32)


def crops_at_hop(feats: np.ndarray, width: int, hop: int) -> np.ndarray:
    """(n_windows, F, width): the windows the daemon would score, in frames."""
    return np.stack([feats[:, s : s + width] for s in window_starts(feats.shape[1], width, hop)]).astype(np.float32)


class Batches:
    """Training examples of one run: each clip's features and augmented copies, cropped to
    the window, normalised for its speaker when `sessions` is given."""

    def __init__(self, config: TrainConfig, clips: list[Clip], feats: list[np.ndarray],
                 copies: list[list[np.ndarray]], y: np.ndarray, n_classes: int, width: int,
                 sessions: SpeakerSessions | None):
        self.config, self.feats, self.copies, self.y = config, feats, copies, y
        self.width, self.sessions = width, sessions
        self.draw = corpus_draw_probabilities(clips, config.corpus_sampling_power)
        self.allowed = None  # (n_clips, n_classes) bool: the classes each clip's corpus has
        if config.corpus_classes_only:  # n_classes: the model's, which fine-tuning may make more than y has
            has = {}
            for clip, label in zip(clips, y):
                has.setdefault(clip.corpus, np.zeros(n_classes, bool))[label] = True
            self.allowed = np.stack([has[c.corpus] for c in clips])

    def __len__(self) -> int:
        return len(self.y)

    def epoch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(order of examples, crop position of each as a share of its slack, copy of each:
        0 the original, k its k-th copy). Every rank draws the same from the same `rng`."""
        n = len(self.y)
        order = rng.permutation(n) if self.draw is None else rng.choice(n, n, p=self.draw)
        return order, rng.random(n), rng.integers(0, len(self.config.copy_augments()) + 1, n)

    def make(self, batch: np.ndarray, starts: np.ndarray, pick: np.ndarray, session_rng: np.random.Generator,
             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(features, targets, the classes each example may be scored over or None for all)."""
        x = np.stack([self._crop(self.copies[i][pick[i] - 1] if pick[i] else self.feats[i], starts[i])
                      for i in batch]).astype(np.float32)  # encoder features are cached as float16
        if self.sessions is not None:
            x = self.sessions.normalise(x, batch, session_rng)
        x = torch.from_numpy(x)
        if self.config.spec_augment:
            x = spec_augment(x, self.config.augment, gen)
        allowed = None if self.allowed is None else torch.from_numpy(self.allowed[batch])
        return x, torch.from_numpy(self.y[batch]), allowed

    def _crop(self, feats: np.ndarray, where: float) -> np.ndarray:
        t = feats.shape[1]
        if t <= self.width:  # store pads clips to one window, but be safe
            return np.pad(feats, ((0, 0), (0, self.width - t)), mode="edge")
        s = int(where * (t - self.width + 1))
        return feats[:, s : s + self.width]
