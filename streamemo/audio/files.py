"""Reading audio files: any format soundfile reads, any rate, any channel count -> mono
float32 at the model rate (classify, evaluation, the trainer, `spectrogram`). Optional
silence trimming for corpora with long leading and trailing silence."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


class UnreadableAudio(Exception):
    """A file that is corrupt, empty or not audio; the caller skips it with a warning."""


def load_audio(path: str | Path, rate: int) -> np.ndarray:
    """Mono float32 in [-1, 1] at `rate`. Channels are averaged (a stereo recording of one
    voice), then resampled with soxr's high-quality filter."""
    try:
        # soundfile reads by content, not by extension: an AIFF file named .wav still loads.
        # The name as bytes: soundfile encodes a str strictly, and a name that is not UTF-8
        # reaches Python with lone surrogates ("\udcff") that only os.fsencode turns back.
        data, file_rate = sf.read(os.fsencode(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        raise UnreadableAudio(f"{path}: {e}") from None
    if data.size == 0:
        raise UnreadableAudio(f"{path}: no samples")
    mono = data.mean(axis=1)
    if file_rate != rate:
        mono = soxr.resample(mono, file_rate, rate, quality="HQ").astype(np.float32)
    if not np.all(np.isfinite(mono)):
        raise UnreadableAudio(f"{path}: samples are not finite numbers")
    return np.ascontiguousarray(mono, dtype=np.float32)


def trim_silence(audio: np.ndarray, rate: int, threshold_db: float = -50.0, frame_s: float = 0.02,
                 keep_s: float = 0.1) -> np.ndarray:
    """Cuts leading and trailing frames quieter than `threshold_db` below the clip's loudest
    frame, keeping `keep_s` of margin. Relative to the peak, so a quietly recorded corpus is
    trimmed like a loud one. A clip with nothing above the threshold is returned whole."""
    frame = max(1, int(frame_s * rate))
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    levels = 20.0 * np.log10(rms + 1e-10)
    loud = np.flatnonzero(levels > levels.max() + threshold_db)
    if len(loud) == 0:
        return audio
    margin = int(keep_s * rate)
    start = max(0, loud[0] * frame - margin)
    end = min(len(audio), (loud[-1] + 1) * frame + margin)
    return audio[start:end]
