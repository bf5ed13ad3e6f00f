"""Real background noise for training and for the degraded test condition: the noise
recordings (by default the shared data's nonspeech/, without its speech), split by a stable
hash into a training part and a disjoint test part, and mixed into speech at a given SNR
measured on the speech's active level."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np

from streamemo import StreamemoError
from streamemo.audio.files import UnreadableAudio, load_audio

log = logging.getLogger(__name__)

NOISE_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"}
TEST_NOISE_SHARE = 0.2


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def default_noise_dir() -> Path:
    """$STREAMEMO_NOISE_DIR, else the shared data folder's nonspeech/."""
    from streamemo.train.datasets import shared_data_dir

    if os.environ.get("STREAMEMO_NOISE_DIR"):
        return Path(os.environ["STREAMEMO_NOISE_DIR"])
    return shared_data_dir() / "nonspeech"


def resolve_noise_dir(noise_dir: str) -> Path:
    return Path(noise_dir).expanduser() if noise_dir else default_noise_dir()


def _stable_fraction(name: str) -> float:
    # sha256, not hash(): Python salts str hashes per process, and the split must never move.
    return int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) / 16**12


def noise_split(root: Path) -> tuple[list[str], list[str]]:
    """The audio files under `root` (relative POSIX paths, sorted) split into a training part
    and a disjoint test part (about TEST_NOISE_SHARE), by a stable hash, with every folder
    (category) in both parts when it has two sources or more. Numbered takes of one source
    (`aircon_0`, `aircon_1`, ...) stay together, so the test never hears a machine training
    heard. Folders named `speech` are left out: speech as "background" would teach the model
    other voices' emotions (GTZAN's speech half)."""
    root = Path(root)
    by_category: dict[str, dict[str, list[str]]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix.lower() in NOISE_SUFFIXES and path.is_file() and "speech" not in rel.parts[:-1]:
            source = f"{rel.parent.as_posix()}/{re.sub(r'_[0-9]+$', '', rel.stem)}"
            by_category.setdefault(rel.parent.as_posix(), {}).setdefault(source, []).append(rel.as_posix())
    train, test = [], []
    for sources in by_category.values():
        ranked = sorted(sources, key=_stable_fraction)
        n_test = sum(_stable_fraction(s) < TEST_NOISE_SHARE for s in sources)
        # A small category could hash entirely to one side: move its extreme source across.
        if len(sources) >= 2:
            n_test = min(max(n_test, 1), len(sources) - 1)
        test += [f for s in ranked[:n_test] for f in sources[s]]
        train += [f for s in ranked[n_test:] for f in sources[s]]
    return sorted(train), sorted(test)


class NoiseSet:
    """Noise recordings (relative paths under `root`), read lazily with `load_audio` and kept
    in memory: the whole shared nonspeech folder at 16 kHz is about 150 MB of float32."""

    def __init__(self, root: Path, files: list[str]):
        self.root = Path(root)
        self.files = list(files)
        self._audio: dict[tuple[str, int], np.ndarray | None] = {}

    def key(self) -> str:
        """Names the set by its files' relative names: the same noises in another folder
        (another machine's checkout) give the same cached copies."""
        return hashlib.sha256("\n".join(self.files).encode()).hexdigest()[:16]

    def _load(self, name: str, rate: int) -> np.ndarray | None:
        if (name, rate) not in self._audio:
            try:
                audio = load_audio(self.root / name, rate)
                self._audio[name, rate] = audio if rms(audio) > 0 else None
            except UnreadableAudio as e:
                log.warning("skipping unreadable noise file %s", e)
                self._audio[name, rate] = None
        return self._audio[name, rate]

    def excerpt(self, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
        """`n` samples from a random file at a random offset, looped when the file is shorter.
        Unreadable or silent files and silent stretches are skipped by drawing again."""
        for _ in range(20):
            audio = self._load(self.files[int(rng.integers(len(self.files)))], rate)
            if audio is None:
                continue
            start = int(rng.integers(len(audio)))
            piece = np.take(audio, np.arange(start, start + n), mode="wrap")
            if rms(piece) > 1e-6:
                return piece
        raise StreamemoError(f"no usable audio in the noise files under {self.root} (unreadable or silent)")


def load_noise_set(noise_dir: str, part: str) -> NoiseSet:
    """The training or test part ("train"/"test") of the noise folder; a missing or empty
    folder is a configuration mistake, reported before any training starts."""
    root = resolve_noise_dir(noise_dir)
    train, test = noise_split(root) if root.is_dir() else ([], [])
    files = train if part == "train" else test
    if not files:
        problem = ("holds too few noise sources to set some apart for testing" if train or test
                   else "is missing or holds no audio files")
        raise StreamemoError(
            f"background noise folder {root} {problem}: point noise_dir (augmentation config) or "
            "STREAMEMO_NOISE_DIR at a folder of noise recordings, e.g. ../shared/data/nonspeech, or leave "
            "background noise out", 2)
    return NoiseSet(root, files)


def active_rms(audio: np.ndarray, rate: int) -> float:
    """The RMS of the speech while it is active, in the spirit of ITU-T P.56's active speech
    level: the RMS over the 20 ms frames within 15.9 dB of that level itself, found by
    fixed-point iteration from the plain RMS. Pauses then do not count, so "10 dB SNR" means
    the same for a clip with long silences as for one without."""
    frame = max(1, int(0.02 * rate))
    n = len(audio) // frame
    if n == 0:
        return rms(audio)
    power = np.mean(np.square(audio[: n * frame].reshape(n, frame), dtype=np.float64), axis=1)
    level = float(power.mean())
    for _ in range(20):
        active = power[power >= level * 10 ** (-15.9 / 10)]
        new = float(active.mean()) if len(active) else level
        if abs(new - level) <= 1e-9 * level:
            break
        level = new
    return float(np.sqrt(level))


def add_noise(speech: np.ndarray, noise: np.ndarray, snr_db: float, rate: int) -> np.ndarray:
    """`speech` plus `noise` scaled so the speech's active level (`active_rms`) is `snr_db`
    above the noise's plain RMS over the clip (noise has no pauses to leave out)."""
    speech_level, noise_level = active_rms(speech, rate), rms(noise)
    if speech_level == 0 or noise_level == 0:
        return speech.astype(np.float32)
    gain = speech_level / noise_level * 10 ** (-snr_db / 20)
    return (speech.astype(np.float64) + gain * noise).astype(np.float32)
