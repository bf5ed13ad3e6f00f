"""Voice-activity gate: is there enough sound in a window to be worth classifying?

An energy gate on 20 ms frames, relative to the window's own noise floor. Deliberately
simple: it keeps silence and room tone away from the classifier (a CNN-LSTM will happily
call hiss "calm"); it does not tell speech from other loud sounds.

A fixed threshold fails both ways: studio recordings speak softly over a -90 dB floor
(at -45 dBFS, one RAVDESS clip in ten had no voiced window), while a cheap microphone's
hiss can sit at -50 dBFS. So a frame counts when it stands `margin_db` above the window's
floor (its 10th-percentile frame), never when quieter than `threshold_db`, and always
when louder than `threshold_db + LOUD_ABOVE_DB` (continuous loud speech has a high floor).
Everything is computed from the window alone, so chunking cannot change the result.
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


LOUD_ABOVE_DB = 20.0


def is_voiced(window: np.ndarray, sample_rate: int, threshold_db: float, min_fraction: float,
              margin_db: float) -> bool:
    levels = frame_levels_db(window, sample_rate)
    if not len(levels):
        return False
    floor = float(np.percentile(levels, 10))
    frame_threshold = min(max(floor + margin_db, threshold_db), threshold_db + LOUD_ABOVE_DB)
    return float(np.mean(levels > frame_threshold)) >= min_fraction
