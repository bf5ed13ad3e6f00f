"""Exponential smoothing of class probabilities, with hysteresis on the top label.

The time constant is in seconds, so changing the hop does not change how fast the output
follows the voice. The top label only changes when a challenger leads the current label
by `hysteresis`, so two close classes do not make it flicker.
"""

from __future__ import annotations

import math

import numpy as np


class Smoother:
    def __init__(self, hop_s: float, tau_s: float, hysteresis: float, reset_after_s: float):
        # alpha = 1 - exp(-dt/tau): the discrete form of a first-order low-pass with time constant tau.
        self.alpha = 1.0 - math.exp(-hop_s / tau_s) if tau_s > 0 else 1.0
        self.hop_s = hop_s
        self.hysteresis = hysteresis
        self.reset_after_s = reset_after_s
        self.reset()

    def reset(self) -> None:
        self.state: np.ndarray | None = None
        self.top: int | None = None
        self.silent_s = 0.0

    def update(self, raw: np.ndarray | None) -> tuple[np.ndarray | None, int | None]:
        """Takes a window's probabilities (None when unvoiced); returns (smoothed, top index).

        Unvoiced windows hold the state and give no top label; after `reset_after_s` of them
        the state is dropped, so a new speaker does not inherit the last one's emotion.
        """
        if raw is None:
            self.silent_s += self.hop_s
            if self.silent_s >= self.reset_after_s:
                self.state, self.top = None, None
            return self.state, None
        self.silent_s = 0.0
        raw = np.asarray(raw, dtype=np.float64)
        if self.state is None:
            self.state = raw.copy()  # start from the first observation, not from a uniform prior
        else:
            self.state = self.state + self.alpha * (raw - self.state)
        best = int(np.argmax(self.state))
        if self.top is None or self.state[best] >= self.state[self.top] + self.hysteresis:
            self.top = best
        return self.state, self.top
