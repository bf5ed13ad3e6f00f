"""Speakers on the training side: validation speakers held out whole, and each training
speaker's voice statistics as the daemon would hold them partway through a session."""

from __future__ import annotations

import numpy as np
import torch

from streamemo import StreamemoError
from streamemo.features import BandStats, frame_windows
from streamemo.stream.adaptation import VoiceStats, affine, reference_stats, shrunk
from streamemo.stream.speech import SpeechGate
from streamemo.train.datasets import Clip


def split_validation(clips: list[Clip], fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Holds out whole speakers: per corpus, `fraction` of its speakers (at least one when it
    has three or more), picked with `seed`. Returns (train, validation)."""
    rng = np.random.default_rng(seed)
    val_speakers: set[str] = set()
    for corpus in sorted({c.corpus for c in clips}):
        speakers = sorted({c.speaker for c in clips if c.corpus == corpus})
        n = round(fraction * len(speakers))
        if n == 0 and len(speakers) >= 3 and fraction > 0:
            n = 1
        val_speakers |= set(rng.permutation(speakers)[:n].tolist())
    return [c for c in clips if c.speaker not in val_speakers], [c for c in clips if c.speaker in val_speakers]


class SpeakerSessions:
    """Speaker normalisation on the training side.

    Each training crop is normalised with the statistics the daemon would hold partway
    through a session with its speaker: its own clip plus a random number of that speaker's
    other clips, shrunk towards the reference by the daemon's prior. Trained so, the network
    copes with a session's early clips as well as with its fiftieth (trained on each
    speaker's full statistics only, it lost most of the gain live). Without a random
    generator, `normalise` uses all of the speaker's clips.

    Not modelled: the daemon's forgetting (sessions here are minutes, its memory ten), and
    that within a session's first clip it has heard only part of that clip. Augmented copies
    are normalised with their clean clip's statistics.
    """

    def __init__(self, clips: list[Clip], heard: list[VoiceStats], prior_frames: float,
                 ref: BandStats | None = None, reference_from: int | None = None):
        self.prior_frames = prior_frames
        self.heard = heard
        self.members: dict[str, list[int]] = {}
        for i, clip in enumerate(clips):
            self.members.setdefault(clip.speaker, []).append(i)
        self.speaker_of = [c.speaker for c in clips]
        # The same sums as arrays, one row per clip: a session's statistics are then one
        # vectorised sum over its clips (a speaker may have 500 clips; summing VoiceStats
        # one by one cost more than the training step itself).
        self.members = {s: np.array(idx) for s, idx in self.members.items()}
        self._packed = np.array([np.concatenate([[h.frames], h.sum, h.sum_sq]) for h in heard])
        self.full = {s: VoiceStats.total([heard[i] for i in idx]) for s, idx in self.members.items()}
        if ref is None:  # the average of the speakers among the first `reference_from` clips
            speakers = {c.speaker for c in clips[:reference_from]}
            measured = [self.full[s].stats() for s in sorted(speakers) if self.full[s].frames > 0]
            if not measured:
                raise StreamemoError("no training clip has a voiced window to measure its speaker on (silent or "
                                     "very quiet recordings?); check the data, or train with --no-speaker-norm", 1)
            ref = reference_stats(measured)
        self.ref = ref

    def normalise(self, x: np.ndarray, items, rng: np.random.Generator | None = None) -> np.ndarray:
        """(n, F, T) maps of clips `items` -> normalised, float32."""
        out = np.empty(x.shape, dtype=np.float32)
        for k, i in enumerate(items):
            speaker = self.speaker_of[i]
            if rng is None:
                heard = self.full[speaker]
            else:
                members = self.members[speaker]
                others = members[members != i]
                earlier = rng.choice(others, rng.integers(0, len(others) + 1), replace=False) if len(others) else others
                heard = self._total(np.concatenate(([i], earlier)))
            scale, shift = affine(shrunk(self.ref, heard, self.prior_frames), self.ref)
            out[k] = x[k] * scale[:, None] + shift[:, None]
        return out

    def _total(self, items: np.ndarray) -> VoiceStats:
        """`VoiceStats.total` of clips `items` (an index array)."""
        packed = self._packed[items].sum(axis=0)
        n = (len(packed) - 1) // 2
        out = VoiceStats(n)
        out.frames, out.sum, out.sum_sq = float(packed[0]), packed[1 : 1 + n], packed[1 + n :]
        return out


def measure_voice(audio: np.ndarray, frontend, window: int, hop: int, config, feats: np.ndarray | None = None
                  ) -> VoiceStats:
    """A recording's statistics (mono float32 at the model rate), over exactly the windows
    the daemon would adapt on: every `hop`, those the voice gate of `config` (a
    PipelineConfig) accepts. `feats`: an encoder frontend's features of the whole recording,
    when already computed."""
    spec = frontend.spec
    rate, acc = spec.sample_rate, VoiceStats(spec.n_features, select_active=spec.has_energy)
    gate = SpeechGate(rate, config.speech_threshold, config.speech_share, config.speech_lookback_s)
    voiced = np.asarray(gate.decisions(audio, window, hop), bool)
    if spec.kind == "whisper":  # the daemon's windows are crops of the stream's blocks, not encoded alone
        if feats is None:
            padded = np.pad(audio, (0, max(0, window - len(audio)))).astype(np.float32)
            with torch.inference_mode():
                feats = frontend(torch.from_numpy(padded)[None])[0].numpy()
        width, step = spec.frames(window), hop // spec.frame_hop
        maps = [feats[:, i * step : i * step + width] for i in np.flatnonzero(voiced)]
    elif voiced.any():
        with torch.inference_mode():
            maps = frontend(torch.from_numpy(frame_windows(audio, window, hop)[voiced])).numpy()
    else:
        maps = []
    if len(maps):
        for m in maps:
            acc.update(m, hop / window)
    return acc
