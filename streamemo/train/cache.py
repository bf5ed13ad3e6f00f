"""Whole-clip features, and each clip's voice statistics for speaker normalisation,
computed once and kept on disk.

A clip's features are the frontend's (n_features, frames) map of the whole clip (mono, model
rate, zero-padded to at least one window, as the daemon pads a short stream). Training cuts
window-sized crops out of it; a crop starting on a hop boundary equals the features of that
window cut from the waveform (for end-aligned frames exactly; centred frames differ in the
reflect padding at the crop's edges).

The cache key is the SHA-256 of the file's bytes plus everything that shapes the features
(frontend parameters, trimming, padding, the augmentation recipe and copy number), so a
renamed file hits the cache and a changed parameter misses it. Files are plain `.npy`
(loaded with allow_pickle=False): nothing executable is ever read back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from streamemo.features import FrontendSpec, build_frontend
from streamemo.stream.adaptation import ACTIVE_RANGE, VoiceStats
from streamemo.audio.files import UnreadableAudio, load_audio, trim_silence
from streamemo.train.datasets import Clip
from streamemo.train.sessions import measure_voice

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the way features are computed changes (2: frames placed as the daemon's)


def default_cache_dir() -> Path:
    """$STREAMEMO_CACHE, else the XDG user cache dir (~/.cache/streamemo/features)."""
    if os.environ.get("STREAMEMO_CACHE"):
        return Path(os.environ["STREAMEMO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streamemo" / "features"


@dataclass(frozen=True)
class FeatureRecipe:
    """Everything besides the file's bytes that determines its cached features."""

    frontend: FrontendSpec
    window_samples: int  # clips shorter than this are zero-padded at the end
    trim: bool = False

    def key_parts(self) -> dict:
        return {"v": CACHE_VERSION, "frontend": self.frontend.to_dict(), "window": self.window_samples,
                "trim": self.trim}


class FeatureStore:
    """Computes, caches and returns clip features. `wave_augment`, when given, is a callable
    (audio, rate, seed) -> audio applied before the frontend, for augmented copies."""

    def __init__(self, recipe: FeatureRecipe, cache_dir: Path | None = None, use_cache: bool = True):
        self.recipe = recipe
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.use_cache = use_cache
        self.frontend = build_frontend(recipe.frontend)
        self.computed = 0  # counters for the run summary and the cache benchmark
        self.hits = 0

    def _key(self, clip: Clip, extra: dict) -> str:
        digest = hashlib.sha256(Path(clip.path).read_bytes()).hexdigest()
        params = json.dumps({**self.recipe.key_parts(), **extra}, sort_keys=True)
        return hashlib.sha256((digest + params).encode()).hexdigest()

    def waveform(self, clip: Clip) -> np.ndarray:
        rate = self.recipe.frontend.sample_rate
        audio = load_audio(clip.path, rate)
        if self.recipe.trim:
            audio = trim_silence(audio, rate)
        return audio

    def features_of_audio(self, audio: np.ndarray) -> np.ndarray:
        window, hop = self.recipe.window_samples, self.recipe.frontend.hop_length
        if len(audio) < window:
            audio = np.pad(audio, (0, window - len(audio)))
        if self.recipe.frontend.align == "end":
            # Frames sit where the daemon's windows put them (windows start on whole hops from
            # the clip's start): the last few ms that make no whole frame go.
            audio = audio[: len(audio) - (len(audio) - window) % hop]
        with torch.inference_mode():
            feats = self.frontend(torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None])[0].numpy()
        # An encoder's 384 bands at 50 frames a second are 20x a log-mel map's bytes: kept as
        # float16 (its weights' own precision), converted back per batch.
        return feats.astype(np.float16 if self.recipe.frontend.kind == "whisper" else np.float32)

    def get(self, clip: Clip, augment=None, copy: int = 0) -> np.ndarray:
        """(n_features, frames) for one clip; raises UnreadableAudio for a bad file."""
        extra = {} if augment is None else {"augment": augment.key(), "copy": copy}

        def compute(key: str) -> np.ndarray:
            audio = self.waveform(clip)
            if augment is not None:
                audio = augment(audio, self.recipe.frontend.sample_rate, seed=int(key[:8], 16) + copy)
            self.computed += 1
            return self.features_of_audio(audio)

        return self._cached(clip, extra, compute, count=True)

    def voice(self, clip: Clip, window: int, hop: int, pipeline) -> VoiceStats:
        """The clip's voice statistics as the daemon would measure them (untrimmed audio,
        voiced `window`s every `hop` by `pipeline`'s voice gate; stream/adaptation.py)."""
        gate = ("silero-v6", pipeline.speech_threshold, pipeline.speech_share, pipeline.speech_lookback_s)
        extra = {"voice": {"window": window, "hop": hop, "gate": gate, "active_range": ACTIVE_RANGE}}

        def compute(_key: str) -> np.ndarray:
            audio = load_audio(clip.path, self.recipe.frontend.sample_rate)
            # An encoder's windows are crops of the clip's features, which the cache already holds.
            whisper = self.recipe.frontend.kind == "whisper" and not self.recipe.trim
            feats = self.get(clip).astype(np.float32) if whisper else None
            stats = measure_voice(audio, self.frontend, window, hop, pipeline, feats)
            return np.concatenate([[stats.frames], stats.sum, stats.sum_sq])

        packed = self._cached(clip, extra, compute)
        stats = VoiceStats(self.recipe.frontend.n_features)
        stats.frames, stats.sum, stats.sum_sq = float(packed[0]), packed[1 : 1 + len(stats.sum)], packed[1 + len(stats.sum) :]
        return stats

    def _cached(self, clip: Clip, extra: dict, compute, count: bool = False) -> np.ndarray:
        """The array cached for (clip content, recipe, `extra`), else `compute(key)`'s, stored."""
        try:
            key = self._key(clip, extra)
        except OSError as e:
            raise UnreadableAudio(f"{clip.path}: {e}") from None
        path = self.cache_dir / key[:2] / f"{key}.npy"
        if self.use_cache and path.exists():
            try:
                array = np.load(path, allow_pickle=False)
                self.hits += count
                return array
            except (ValueError, OSError):
                log.warning("cache entry %s unreadable; recomputing", path)
        array = compute(key)
        if self.use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with tmp.open("wb") as f:
                np.save(f, array, allow_pickle=False)
            os.replace(tmp, path)  # atomic: parallel fold runs may write the same entry
        return array

    def get_many(self, clips: list[Clip], desc: str = "features", augment=None, copy: int = 0,
                 progress: bool = True) -> tuple[list[Clip], list[np.ndarray], list[str]]:
        """Features for every readable clip: (kept clips, their features, skipped "path: why")."""
        kept, feats, skipped = [], [], []
        for clip in tqdm(clips, desc=desc, unit="clip", disable=not progress, leave=False):
            try:
                feats.append(self.get(clip, augment, copy))
                kept.append(clip)
            except UnreadableAudio as e:
                log.warning("skipping unreadable audio %s", e)
                skipped.append(str(e))
        return kept, feats, skipped
