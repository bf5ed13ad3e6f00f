"""Augmentation, applied to training data only (after the split), every transform on/off
with its strength in `AugmentConfig`, and reproducible: each call is driven by an explicit
seed or torch.Generator, never by global state left over from elsewhere.

Two places:
- waveform transforms (audiomentations + a speed change, and the rooms, background noises
  and microphones of rooms.py), used to make cached augmented copies of each training clip
  (`WaveAugmenter`); the trainer draws, each epoch, either the original or one of its copies;
- SpecAugment masks on the feature maps (`spec_augment`), fresh for every batch.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

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
    # Acoustic conditions (rooms.py), applied after the transforms above in the physical
    # order room -> background noise -> microphone/channel, each firing with its own p.
    room: bool = False  # reverberation: a simulated room from the training RIR bank
    room_p: float = 0.5
    room_rt60_s: tuple[float, float] = (0.2, 1.0)  # target RT60 of the bank's rooms (Sabine)
    room_distance_m: tuple[float, float] = (0.5, 3.0)  # talker to microphone
    room_count: int = 64  # rooms in the bank (simulated once, cached next to the features)
    background: bool = False  # real background noise from the training part of noise_dir
    background_p: float = 0.5
    background_snr_db: tuple[float, float] = (0.0, 30.0)  # against the speech's active level
    noise_dir: str = ""  # "" = $STREAMEMO_NOISE_DIR, else ../shared/data/nonspeech
    channel: bool = False  # microphone EQ, sometimes a telephone band, sometimes a lossy codec
    channel_p: float = 0.5
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
        The seed and the acoustic-condition fields are left out while at their defaults, so
        the copies cached before those fields existed stay valid. noise_dir never enters:
        where the noises lie is no part of the recipe (`WaveAugmenter.key` names the files)."""
        defaults = {f.name: f.default for f in fields(self)}
        wave = {k: v for k, v in asdict(self).items()
                if not k.startswith(("freq_", "time_")) and k != "noise_dir"
                and not (k in _KEYED_WHEN_SET and v == defaults[k])}
        return json.dumps(wave, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# Fields added after copies were first cached: in the key only when changed from the default.
_KEYED_WHEN_SET = {"seed", "room", "room_p", "room_rt60_s", "room_distance_m", "room_count", "background",
                   "background_p", "background_snr_db", "channel", "channel_p"}


class WaveAugmenter:
    """(audio, rate, seed) -> augmented audio, the transforms enabled in `config`.

    With background noise on, a missing or empty noise folder raises StreamemoError here,
    before any copy is made. `cache_dir` holds the RIR bank (default: the feature cache)."""

    def __init__(self, config: AugmentConfig, cache_dir: Path | None = None):
        import audiomentations as am  # imported here: slow to import, unused at inference

        from streamemo.train import rooms
        from streamemo.train.noise import load_noise_set

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
        self.conditions = None
        # What the config's key cannot know: which bank version and which noise files.
        self._key_extra: dict = {}
        if c.room:
            self._key_extra["rir_bank"] = rooms.RIR_BANK_VERSION
        if c.room or c.background or c.channel:
            self.conditions = rooms.Conditions(
                rirs=partial(rooms.rir_bank, rooms.TRAIN_RIR_SEED, c.room_count, rt60_s=c.room_rt60_s,
                             distance_m=c.room_distance_m, cache_dir=cache_dir) if c.room else None,
                room_p=c.room_p,
                noise=load_noise_set(c.noise_dir, "train") if c.background else None,
                snr_db=c.background_snr_db, background_p=c.background_p,
                channel=rooms.draw_channel if c.channel else None, channel_p=c.channel_p)
            if self.conditions.noise is not None:
                self._key_extra["noise_files"] = self.conditions.noise.key()

    def key(self) -> str:
        if not self._key_extra:
            return self.config.key()
        return json.dumps({**json.loads(self.config.key()), **self._key_extra}, sort_keys=True)

    def __call__(self, audio: np.ndarray, rate: int, seed: int) -> np.ndarray:
        # audiomentations draws from the `random` and numpy global generators: seed both.
        random.seed(seed)
        np.random.seed(seed % 2**32)
        out = audio
        if self.compose is not None:
            out = self.compose(samples=out, sample_rate=rate)
        if self.conditions is not None:
            # After the speaker-side transforms and gain; draws from its own generators
            # (rooms.py), so the global draws below stay what they were without it.
            out = self.conditions(out, rate, seed)
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
