"""Voice-activity gate: is there enough sound in a window to be worth classifying?

An energy gate on 20 ms frames. Deliberately simple: it keeps silence and room tone away
from the classifier (a CNN-LSTM will happily call hiss "calm"); it does not tell speech
from other loud sounds.
"""

from __future__ import annotations

import numpy as np

FRAME_S = 0.02


def frame_levels_db(window: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS level of each whole 20 ms frame, in dBFS (a full-scale square wave is 0 dB)."""
    frame = max(1, int(FRAME_S * sample_rate))
    n = len(window) // frame
    frames = window[: n * frame].reshape(n, frame).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return 20.0 * np.log10(rms + 1e-10)


def level_db(samples: np.ndarray) -> float:
    """RMS level of a stretch of samples in dBFS (-200 for digital silence)."""
    if len(samples) == 0:
        return -200.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * np.log10(rms + 1e-10)


def is_voiced(window: np.ndarray, sample_rate: int, threshold_db: float, min_fraction: float) -> bool:
    levels = frame_levels_db(window, sample_rate)
    return bool(len(levels)) and float(np.mean(levels > threshold_db)) >= min_fraction
