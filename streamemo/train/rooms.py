"""The acoustic conditions a clip can be put in: a room (simulated impulse responses), real
background noise, and a microphone/channel (EQ, telephone band, lossy codec).

Used two ways:
- as training augmentation: `WaveAugmenter` (augment.py) draws, per augmented copy, a room
  from the training RIR bank, a noise excerpt from the training noise files and a channel;
- as a fixed degraded test condition (`Degrader`), built only from a test RIR bank and test
  noise files that training never uses, so a degraded score measures generalisation to
  rooms and noises the model has not heard, not memory of them.

Physical order, both ways: reverberation in the room, then noise in the same room (it is
not reverberated with the speaker's RIR: it comes from elsewhere, already recorded in a
room), then the microphone and whatever codec carries the signal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import scipy.signal
import soxr

from streamemo import StreamemoError
from streamemo.train.noise import NoiseSet, add_noise, load_noise_set, rms

log = logging.getLogger(__name__)

# Two seeds, so the test rooms are other rooms than the training ones.
TRAIN_RIR_SEED = 1
TEST_RIR_SEED = 1001
TEST_RIR_COUNT = 16
RIR_BANK_VERSION = 1  # bump when the way rooms are simulated changes: old banks are then ignored
# Samples kept before the direct path: pyroomacoustics draws each arrival as a windowed sinc
# of 81 taps centred on it; keeping its leading half keeps the direct sound's spectrum flat.
RIR_ONSET = 40

DEGRADE_SNR_DB = 10.0
DEGRADE_WORDS = ("reverb", "noise", "channel")

TELEPHONE_P = 0.35  # share of channel draws that are a telephone line (300-3400 Hz-ish)
CODEC_P = 0.5  # share of channel draws that go through a lossy codec (GSM or low-rate MP3)
MP3_RATES = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000}


def _rng(seed: int, stream: int) -> np.random.Generator:
    # One independent stream per stage, so turning the channel on does not change which
    # room or noise a copy got, and a negative or huge seed is still a valid entropy.
    return np.random.default_rng([int(seed) & (2**64 - 1), stream])


def fit_level(audio: np.ndarray) -> np.ndarray:
    """Scales down (never clips) a signal whose peak exceeds full scale: summing reverb and
    noise can overshoot, and clipping would add a distortion no real recorder adds."""
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    return (audio * (0.999 / peak) if peak > 0.999 else audio).astype(np.float32)


# --- Rooms ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RirBank:
    rirs: np.ndarray  # (count, length) float32; each RIR's direct path at index RIR_ONSET
    params: np.ndarray  # (count, 6) float64: target RT60 s, measured RT60 s, talker-mic distance m, room x, y, z m
    rate: int

    def __len__(self) -> int:
        return len(self.rirs)


def rir_bank(seed: int, count: int, rate: int = 16000, rt60_s: tuple[float, float] = (0.2, 1.0),
             distance_m: tuple[float, float] = (0.5, 3.0), cache_dir: Path | None = None) -> RirBank:
    """`count` shoebox-room impulse responses, the same for the same arguments: simulated once
    (about 0.1-0.2 s per RIR on one core), then read back from `cache_dir` (default: the
    feature cache). RIR i depends only on (seed, i), so a bigger bank extends a smaller one."""
    if cache_dir is None:
        from streamemo.train.cache import default_cache_dir  # cache.py imports torch: only when needed

        cache_dir = default_cache_dir()
    spec = {"v": RIR_BANK_VERSION, "seed": seed, "count": count, "rate": rate, "rt60": list(rt60_s),
            "distance": list(distance_m)}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / "rirs"
    paths = folder / f"rirs-{digest}.npy", folder / f"rirs-{digest}-params.npy"
    if all(p.exists() for p in paths):
        try:
            return RirBank(np.load(paths[0], allow_pickle=False), np.load(paths[1], allow_pickle=False), rate)
        except (ValueError, OSError):
            log.warning("RIR bank %s unreadable; simulating it again", paths[0])
    start = time.perf_counter()
    made = [_simulate_rir(seed, i, rate, rt60_s, distance_m) for i in range(count)]
    length = max(len(r) for r, _ in made)
    rirs = np.zeros((count, length), np.float32)
    for i, (r, _) in enumerate(made):
        rirs[i, : len(r)] = r
    params = np.array([p for _, p in made], np.float64)
    log.info("simulated %d room impulse responses in %.1f s", count, time.perf_counter() - start)
    folder.mkdir(parents=True, exist_ok=True)
    for path, array in zip(paths, (rirs, params)):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)  # atomic: parallel fold runs may build the same bank
    return RirBank(rirs, params, rate)


def _simulate_rir(seed: int, index: int, rate: int, rt60_s, distance_m) -> tuple[np.ndarray, list[float]]:
    import pyroomacoustics as pra  # imported here: only the augmentation and the degraded test need it

    rng = np.random.default_rng([seed, index])
    for _ in range(1000):
        dims = np.array([rng.uniform(3.0, 12.0), rng.uniform(2.5, 9.0), rng.uniform(2.4, 4.0)])
        rt60 = rng.uniform(*rt60_s)
        try:
            absorption, _ = pra.inverse_sabine(rt60, dims)
        except ValueError:  # a big room cannot be this dry: draw another room
            continue
        distance = rng.uniform(*distance_m)
        placed = _place(rng, dims, distance)
        if placed is not None:
            break
    else:
        raise StreamemoError(f"no room fits RT60 {rt60_s} s and talker distance {distance_m} m: widen the ranges", 2)
    mic, source = placed
    # Image sources up to order 3 for the early reflections, ray tracing for the diffuse tail:
    # the image method alone needs order 100+ for a 1 s RT60 (seconds per RIR), this takes
    # about 0.1-0.2 s. Ray tracing draws random rays: seed pyroomacoustics' generators too.
    pra.random.seed(numpy=int(rng.integers(2**32)), libroom=int(rng.integers(2**32)))
    room = pra.ShoeBox(dims, fs=rate, materials=pra.Material(absorption, scattering=rng.uniform(0.05, 0.2)),
                       max_order=3, ray_tracing=True, air_absorption=True)
    room.set_ray_tracing(receiver_radius=0.5, n_rays=2000, energy_thres=1e-5)
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], np.float64)
    # The direct path arrives after pyroomacoustics' fixed delay plus the travel time; find
    # its exact sample near there (a reflection can never be earlier) and cut so it sits at
    # RIR_ONSET: convolving then moves no speech later in time.
    expected = pra.constants.get("frac_delay_length") // 2 + int(round(distance / pra.constants.get("c") * rate))
    lo = max(0, expected - 3)
    direct = lo + int(np.argmax(np.abs(rir[lo : expected + 4])))
    rir = rir[max(0, direct - RIR_ONSET) :]
    if direct < RIR_ONSET:
        rir = np.pad(rir, (RIR_ONSET - direct, 0))
    rir = np.trim_zeros(rir, "b")
    # Sabine's formula (used to pick the absorption) is only approximate for these rooms:
    # keep what the RIR really does, extrapolated from its first 20 dB of decay.
    measured = float(pra.experimental.measure_rt60(rir, fs=rate, decay_db=20))
    return (rir / np.abs(rir).max()).astype(np.float32), [rt60, measured, distance, *dims]


def _place(rng: np.random.Generator, dims: np.ndarray, distance: float):
    """A microphone and a talker `distance` apart, both at least 0.5 m from every wall, or
    None when 50 tries fail (the room is too small for that distance)."""
    margin = 0.5
    for _ in range(50):
        mic = np.array([rng.uniform(margin, dims[0] - margin), rng.uniform(margin, dims[1] - margin),
                        rng.uniform(0.7, 1.6)])
        azimuth = rng.uniform(0, 2 * np.pi)
        height = rng.uniform(1.1, 1.9)  # a seated or standing mouth
        dz = height - mic[2]
        flat = distance**2 - dz**2
        if flat < 0:
            continue
        r = np.sqrt(flat)
        source = mic + np.array([r * np.cos(azimuth), r * np.sin(azimuth), dz])
        if np.all(source[:2] >= margin) and np.all(source[:2] <= dims[:2] - margin):
            return mic, source
    return None


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`audio` heard through `rir` (direct path at RIR_ONSET): same length, same timing of the
    direct sound, same RMS as the dry input (the room changes the sound, `gain` the level)."""
    if len(audio) == 0:
        return audio
    wet = scipy.signal.oaconvolve(audio.astype(np.float64), np.trim_zeros(rir.astype(np.float64), "b"))
    wet = wet[RIR_ONSET : RIR_ONSET + len(audio)]
    dry_rms, wet_rms = rms(audio), rms(wet)
    return (wet * (dry_rms / wet_rms) if wet_rms > 0 else wet).astype(np.float32)


# --- Microphone and channel -------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    """One microphone and transmission path."""

    peaks: tuple[tuple[float, float, float], ...] = ()  # (Hz, dB, Q): a cheap capsule's resonances
    low_shelf: tuple[float, float] = (100.0, 0.0)  # (Hz, dB): small capsules lose the bass
    high_shelf: tuple[float, float] = (4000.0, 0.0)  # (Hz, dB): dull or bright top end
    band: tuple[float, float] | None = None  # (low Hz, high Hz): a telephone line
    codec: str = ""  # "", "gsm" (GSM full rate, 8 kHz phone codec) or "mp3"
    mp3_quality: float = 8.0  # LAME VBR quality, 0 best .. 10 worst


def draw_channel(rng: np.random.Generator, telephone_p: float = TELEPHONE_P, codec_p: float = CODEC_P,
                 band: tuple[float, float] | None = None, codecs: tuple[str, ...] = ("gsm", "mp3")) -> Channel:
    """A random microphone EQ; a telephone band with probability `telephone_p` (`band`, or
    drawn around 300-3400 Hz); one of `codecs` with probability `codec_p`."""
    peaks = tuple((float(np.exp(rng.uniform(np.log(150), np.log(6000)))), float(rng.uniform(-8, 8)),
                   float(rng.uniform(0.7, 3.0))) for _ in range(int(rng.integers(1, 4))))
    low_shelf = (float(rng.uniform(80, 300)), float(rng.uniform(-15, 3)))
    high_shelf = (float(rng.uniform(2500, 6000)), float(rng.uniform(-10, 5)))
    telephone = rng.random() < telephone_p
    drawn_band = (float(rng.uniform(200, 400)), float(rng.uniform(3100, 3600)))
    use_codec = rng.random() < codec_p
    codec = codecs[int(rng.integers(len(codecs)))] if codecs else ""
    quality = float(rng.uniform(6.0, 9.5))
    return Channel(peaks, low_shelf, high_shelf, (band or drawn_band) if telephone else None,
                   codec if use_codec else "", quality)


def apply_channel(audio: np.ndarray, rate: int, channel: Channel) -> np.ndarray:
    """`audio` through `channel`'s microphone EQ, line and codec; the RMS level is restored
    afterwards (level changes are `gain`'s job)."""
    import pedalboard as pb  # imported here: only the augmentation and the degraded test need it

    if len(audio) == 0:
        return audio
    n, level = len(audio), rms(audio)
    top = 0.45 * rate  # every filter corner below Nyquist, whatever the rate
    effects = [pb.LowShelfFilter(min(channel.low_shelf[0], top), channel.low_shelf[1]),
               pb.HighShelfFilter(min(channel.high_shelf[0], top), channel.high_shelf[1])]
    effects += [pb.PeakFilter(min(f, top), g, q) for f, g, q in channel.peaks]
    out = pb.Pedalboard(effects)(audio.astype(np.float32), rate)
    # A phone line (and its GSM codec) samples at 8 kHz: going there and back with soxr's
    # steep filters removes everything above 4 kHz as a real line does; a Butterworth skirt
    # alone, or pedalboard's own resampling around GSM, leaves -15..-35 dB up there.
    narrow = (channel.band is not None or channel.codec == "gsm") and rate > 8000
    line_rate = 8000 if narrow else rate
    if narrow:
        out = soxr.resample(out, rate, line_rate)
    if channel.band is not None:  # the line's softer 300-3400 Hz edges
        low, high = channel.band
        sos = scipy.signal.butter(4, [low, min(high, 0.45 * line_rate)], btype="bandpass", fs=line_rate,
                                  output="sos")
        out = scipy.signal.sosfilt(sos, out)
    out = np.asarray(out, np.float32)
    if channel.codec == "gsm":
        out = pb.Pedalboard([pb.GSMFullRateCompressor()])(out, line_rate)
    if narrow:
        out = soxr.resample(out, line_rate, rate)
        out = np.pad(out, (0, max(0, n - len(out))))
    if channel.codec == "mp3" and rate in MP3_RATES:
        out = pb.Pedalboard([pb.MP3Compressor(vbr_quality=channel.mp3_quality)])(np.asarray(out[:n], np.float32), rate)
    out = np.asarray(out, np.float64)[:n]
    out_level = rms(out)
    return (out * (level / out_level) if out_level > 0 else out).astype(np.float32)


# --- Putting a clip in a condition ------------------------------------------------------


@dataclass
class Conditions:
    """room -> background noise -> channel, each stage firing with its probability, every
    draw from the seed (same seed, same output). A stage whose source is None is off."""

    rirs: Callable[..., RirBank] | None = None  # rirs(rate=...) -> the bank, built on first use per rate
    room_p: float = 1.0
    noise: NoiseSet | None = None
    snr_db: tuple[float, float] = (DEGRADE_SNR_DB, DEGRADE_SNR_DB)
    background_p: float = 1.0
    channel: Callable[[np.random.Generator], Channel] | None = None
    channel_p: float = 1.0
    _banks: dict = field(default_factory=dict, repr=False)

    def bank(self, rate: int) -> RirBank:
        if rate not in self._banks:
            self._banks[rate] = self.rirs(rate=rate)
        return self._banks[rate]

    def __call__(self, audio: np.ndarray, rate: int, seed: int) -> np.ndarray:
        out = np.asarray(audio, np.float32)
        room, background, channel = _rng(seed, 1), _rng(seed, 2), _rng(seed, 3)
        in_room = False
        if self.rirs is not None and room.random() < self.room_p:
            bank = self.bank(rate)
            out, in_room = reverberate(out, bank.rirs[int(room.integers(len(bank)))]), True
        if self.noise is not None and background.random() < self.background_p:
            snr = background.uniform(*self.snr_db)
            out, in_room = add_noise(out, self.noise.excerpt(len(out), rate, background), snr, rate), True
        if in_room:  # only what this added is rescaled; the caller's own overshoot stays its business
            out = fit_level(out)
        if self.channel is not None and channel.random() < self.channel_p:
            out = fit_level(apply_channel(out, rate, self.channel(channel)))
        return out


class Degrader:
    """A fixed degraded test condition: `spec` is a '+'-joined subset of reverb, noise,
    channel (e.g. "reverb+noise"). Callable (audio, rate, seed) -> audio, deterministic for a
    seed; the caller derives the seed from the clip, so every run degrades a clip the same.

    - reverb: one of TEST_RIR_COUNT test rooms (RT60 0.2-1.0 s, talker 0.5-3 m away);
    - noise: an excerpt of a test noise file at exactly DEGRADE_SNR_DB (10 dB) SNR against
      the speech's active level (`active_rms`);
    - channel: a random cheap-microphone EQ, a 300-3400 Hz telephone line and the GSM codec.
    The test rooms and noise files are disjoint from the training ones."""

    def __init__(self, spec: str, noise_dir: str = "", cache_dir: Path | None = None):
        words = [w.strip() for w in spec.split("+")]
        unknown = [w for w in words if w not in DEGRADE_WORDS]
        if unknown or not spec.strip():
            raise StreamemoError(f"unknown degradation {unknown[0] if unknown else spec!r} in {spec!r}: use "
                                 f"{', '.join(DEGRADE_WORDS)} joined by '+', e.g. reverb+noise", 2)
        self.spec = "+".join(w for w in DEGRADE_WORDS if w in words)  # canonical: "noise+reverb" == "reverb+noise"
        self.conditions = Conditions(
            rirs=partial(rir_bank, TEST_RIR_SEED, TEST_RIR_COUNT, cache_dir=cache_dir) if "reverb" in words else None,
            noise=load_noise_set(noise_dir, "test") if "noise" in words else None,
            channel=partial(draw_channel, telephone_p=1.0, codec_p=1.0, band=(300.0, 3400.0), codecs=("gsm",))
            if "channel" in words else None)

    def key(self) -> str:
        """Identifies the condition for a cache: the spec and, with noise, the test noise files."""
        noise = self.conditions.noise
        return json.dumps({"degrade": self.spec, "v": RIR_BANK_VERSION, "noise": noise.key() if noise else None})

    def __call__(self, audio: np.ndarray, rate: int, seed: int) -> np.ndarray:
        return self.conditions(audio, rate, seed)
