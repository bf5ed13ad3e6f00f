"""Augmentation, applied to training data only (after the split), every transform on/off
with its strength in `AugmentConfig`, and reproducible: each call is driven by an explicit
seed or torch.Generator, never by global state left over from elsewhere.

Two places:
- waveform transforms (audiomentations + a speed change), used to make cached augmented
  copies of each training clip (`WaveAugmenter`); the trainer draws, each epoch, either the
  original or one of its copies;
- SpecAugment masks on the feature maps (`spec_augment`), fresh for every batch.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass

import numpy as np
import soxr
import torch


@dataclass(frozen=True)
class AugmentConfig:
    p: float = 0.5  # probability each enabled waveform transform fires on a copy
    noise: bool = True
    noise_snr_db: tuple[float, float] = (15.0, 40.0)  # white noise at this SNR range
    shift: bool = True
    shift_s: float = 0.3  # circular shift up to ± this many seconds
    stretch: bool = True
    stretch_rate: tuple[float, float] = (0.85, 1.15)  # tempo only, pitch kept
    pitch: bool = True
    pitch_semitones: tuple[float, float] = (-2.0, 2.0)  # pitch only, tempo kept
    gain: bool = True
    gain_db: tuple[float, float] = (-6.0, 6.0)
    dynamic_range: bool = False  # a compressor squashing loud parts: changes loudness contrast
    compress_threshold_db: tuple[float, float] = (-30.0, -15.0)  # relative to the clip's peak level
    compress_ratio: tuple[float, float] = (2.0, 6.0)
    speed: bool = False  # tempo and pitch together, like a tape run fast or slow
    speed_factor: tuple[float, float] = (0.9, 1.1)
    # SpecAugment on features, every batch
    freq_masks: int = 2
    freq_mask_width: int = 6  # bands, at most
    time_masks: int = 2
    time_mask_width: int = 8  # frames, at most (8 x 20 ms: wider masks underfit, see RESULTS-train.md)
    # A waveform copy's randomness comes from its file's content, its copy number and this
    # seed: the same copies every run (so they are cached), another draw for another seed.
    seed: int = 0

    def key(self) -> str:
        """Identifies the waveform recipe in the feature cache (SpecAugment is not cached).
        Seed 0 is left out, so the copies cached before the seed existed stay valid."""
        wave = {k: v for k, v in asdict(self).items()
                if not k.startswith(("freq_", "time_")) and not (k == "seed" and v == 0)}
        return json.dumps(wave, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class WaveAugmenter:
    """(audio, rate, seed) -> augmented audio, the transforms enabled in `config`."""

    def __init__(self, config: AugmentConfig):
        import audiomentations as am  # imported here: slow to import, unused at inference

        c = config
        transforms = []
        if c.noise:
            transforms.append(am.AddGaussianSNR(min_snr_db=c.noise_snr_db[0], max_snr_db=c.noise_snr_db[1], p=c.p))
        if c.shift:
            transforms.append(am.Shift(min_shift=-c.shift_s, max_shift=c.shift_s, shift_unit="seconds",
                                       rollover=True, p=c.p))
        if c.stretch:
            transforms.append(am.TimeStretch(min_rate=c.stretch_rate[0], max_rate=c.stretch_rate[1],
                                             leave_length_unchanged=False, p=c.p))
        if c.pitch:
            transforms.append(am.PitchShift(min_semitones=c.pitch_semitones[0], max_semitones=c.pitch_semitones[1],
                                            p=c.p))
        if c.gain:
            transforms.append(am.Gain(min_gain_db=c.gain_db[0], max_gain_db=c.gain_db[1], p=c.p))
        self.config = config
        self.compose = am.Compose(transforms) if transforms else None

    def key(self) -> str:
        return self.config.key()

    def __call__(self, audio: np.ndarray, rate: int, seed: int) -> np.ndarray:
        # audiomentations draws from the `random` and numpy global generators: seed both.
        random.seed(seed)
        np.random.seed(seed % 2**32)
        out = audio
        if self.compose is not None:
            out = self.compose(samples=out, sample_rate=rate)
        c = self.config
        if c.dynamic_range and random.random() < c.p:
            out = compress(out, rate, random.uniform(*c.compress_threshold_db), random.uniform(*c.compress_ratio))
        if c.speed and random.random() < c.p:
            factor = random.uniform(*c.speed_factor)
            # Play `factor` times faster: resample as if the file's rate were rate*factor.
            out = soxr.resample(out, rate * factor, rate).astype(np.float32)
        return np.clip(out, -1.0, 1.0).astype(np.float32)


def compress(audio: np.ndarray, rate: int, threshold_db: float, ratio: float) -> np.ndarray:
    """A feed-forward compressor: where the 10 ms RMS envelope exceeds `threshold_db` below
    the clip's loudest moment, the excess is divided by `ratio`; then the peak level is
    restored. (audiomentations' Limiter needs an extra compiled package.)"""
    frame = max(1, int(0.01 * rate))
    envelope = np.sqrt(np.convolve(audio.astype(np.float64) ** 2, np.ones(frame) / frame, mode="same")) + 1e-10
    level = 20 * np.log10(envelope)
    threshold = level.max() + threshold_db
    gain_db = np.where(level > threshold, (threshold - level) * (1 - 1 / ratio), 0.0)
    out = audio * 10 ** (gain_db / 20)
    peak_in, peak_out = np.abs(audio).max(), np.abs(out).max()
    return (out * (peak_in / peak_out if peak_out > 0 else 1.0)).astype(np.float32)


def spec_augment(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Masks random frequency bands and time spans of each (B, F, T) example, in place, with
    the example's own mean (after normalisation that is about 0, i.e. 'nothing special')."""
    b, f, t = x.shape
    fill = x.mean(dim=(1, 2))
    for i in range(b):
        for _ in range(config.freq_masks):
            w = int(torch.randint(0, config.freq_mask_width + 1, (1,), generator=generator))
            s = int(torch.randint(0, max(1, f - w), (1,), generator=generator))
            x[i, s : s + w, :] = fill[i]
        for _ in range(config.time_masks):
            w = int(torch.randint(0, config.time_mask_width + 1, (1,), generator=generator))
            s = int(torch.randint(0, max(1, t - w), (1,), generator=generator))
            x[i, :, s : s + w] = fill[i]
    return x
