"""Audio at the model rate in, one `Estimate` per hop out: windowing, voice gate (speech.py),
frontend, network and smoother.

Windows are cut at fixed sample offsets (`features.window_starts`) and each is scored on
its own, so the output does not depend on how the audio was chunked: feeding 1 sample or
48000 at a time gives the same numbers. The daemon, `streamemo classify` and the trainer's
evaluation all score audio through this module.

A model on Whisper's encoder computes each block of its encoder once (stream/blocks.py). A
streaming model (stream/columns.py) at a hop that is a whole number of its column
strides computes each frame and each column of its conv stack once, and runs only its
sequence part per window; any other model, or hop, has each window scored whole. Frames
are computed when a voiced window first needs them, so unvoiced audio costs only the voice
gate. Speaker adaptation then maps frames as it knew the voice when they were first
scored, rather than each window whole by what it knows at the window's end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from streamemo import ModelError, StreamemoError
from streamemo.config import PipelineConfig
from streamemo.emotion_set import chosen_classes, restrict
from streamemo.features import MAX_FRAMES, build_frontend
from streamemo.model import Model
from streamemo.stream.adaptation import SpeakerAdapter
from streamemo.stream.blocks import BlockStream
from streamemo.stream.columns import ColumnStream, can_stream
from streamemo.stream.inference import inference_network
from streamemo.stream.smoothing import Smoother
from streamemo.stream.speech import SpeechGate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Estimate:
    index: int  # window number since the stream started, from 0
    t_audio: float  # seconds of audio from the stream's start to the window's last sample
    t_capture: float | None  # wall-clock time the window's last sample was captured
    voiced: bool  # the voice gate let the window through to the classifier
    speech: float  # mean speech probability over the gate's lookback, 0-1
    level_db: float  # RMS level of the window's last hop, dBFS
    raw: np.ndarray | None  # this window's probabilities, over Pipeline.labels; None when unvoiced (not classified)
    smoothed: np.ndarray | None
    top: int | None  # index of the top label after hysteresis; None when unvoiced


BATCH = 16  # windows scored together at most, when one feed completes many (a file fed whole): per
# window, 16 cost 0.82 ms, 1 cost 1.4 and 64 cost 1.2, their megabytes of temporaries faulting in anew


@dataclass(frozen=True)
class _Window:
    """A completed window, decided by the gate, waiting to be scored."""

    audio: np.ndarray  # its samples (for an encoder model, with the encoder's context before them)
    end: int  # samples fed since reset at its last sample
    t_capture: float | None
    gate_mark: int  # where it ends for the voice gate (SpeechGate.mark)


class Scorer:
    """Frontend + network on one device: waveform windows -> class probabilities."""

    def __init__(self, model: Model, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model
        self.frontend = build_frontend(model.frontend, model.frontend_kernels).to(self.device)
        self.network = inference_network(model.network).to(self.device)

    @torch.inference_mode()
    def features(self, windows: np.ndarray, pad: bool = True) -> torch.Tensor:
        """(n, samples) float32 -> (n, n_features, frames) on the scoring device; `pad` as Frontend's."""
        return self.frontend(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(self.device), pad)

    @torch.inference_mode()
    def probabilities(self, features: torch.Tensor, affine: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Features -> (n, n_classes) probabilities; `affine` is a per-band (scale, shift)
        applied first (speaker adaptation), (n_features,) each or (n, n_features) per window."""
        if affine is not None:
            scale, shift = (torch.as_tensor(a, dtype=features.dtype, device=features.device)[..., None] for a in affine)
            features = features * scale + shift
        logits = self.network(features)
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """(n, samples) float32 -> (n, n_classes) probabilities, without speaker adaptation."""
        return self.probabilities(self.features(windows))


class Pipeline:
    def __init__(self, model: Model, config: PipelineConfig, device: torch.device | str = "cpu",
                 scorer: Scorer | None = None, heard: np.ndarray | None = None):
        """`heard`: recent audio at the model rate to include in the self-test (a reload
        passes what the daemon just heard)."""
        self.model = model
        self.config = config
        self.rate = model.frontend.sample_rate
        # The chosen set of emotions (emotion_set.py): indices of the classes in force, None for all.
        self.keep = chosen_classes(model.labels, config.emotions, model.name)
        window_s = config.window_s or model.window_s
        if config.hop_s > window_s:  # config.py checks this when both are in the config
            raise StreamemoError(f"pipeline.hop_s ({config.hop_s:g} s) is longer than the window of model "
                                 f"{model.name} ({window_s:g} s): audio between windows would never be heard; "
                                 "make the hop at most the window", 2)
        self.window = round(window_s * self.rate)
        if model.frontend.frames(self.window) > MAX_FRAMES:
            raise StreamemoError(f"pipeline.window_s {window_s:g} s makes {model.frontend.frames(self.window)} frames "
                                 f"per window with model {model.name}, more than {MAX_FRAMES}; use a shorter window", 2)
        self.hop = max(1, round(config.hop_s * self.rate))
        self.scorer = scorer or Scorer(model, device)
        self.smoother = Smoother(config.hop_s, config.smoothing_tau_s, config.hysteresis, config.reset_after_s)
        self.adapter = self._adapter(model)
        self.gate = SpeechGate(self.rate, config.speech_threshold, config.speech_share, config.speech_lookback_s)
        self.columns = self._column_stream()
        self.blocks = self._block_stream()
        self._history = np.zeros(self._history_size(), np.float32)
        self.unscored = 0  # voiced windows the model gave non-finite probabilities for
        self.reset()
        self.self_test(heard)

    def self_test(self, heard: np.ndarray | None = None) -> None:
        """Scores silence, a full-scale voice-like tone and `heard` through the frontend,
        speaker adaptation and network, and refuses the model if any probability is not
        finite. A card whose numbers are each in range can still describe a broken model
        (weights holding NaN, or overflowing): it is refused here, on loading or reload,
        instead of at the first voiced window."""
        t = np.arange(self.window) / self.rate
        tone = 0.9 * np.sign(np.sin(2 * np.pi * 150 * t))  # loud and rich in harmonics
        tests = {"silence": np.zeros(self.window), "a loud tone": tone}
        if heard is not None and len(heard):
            fitted = np.zeros(self.window)
            tail = np.asarray(heard[-self.window:])
            fitted[self.window - len(tail):] = tail
            tests["the audio just heard"] = fitted
        try:
            probs = self.scorer.probabilities(self.scorer.features(np.stack(list(tests.values())).astype(np.float32)),
                                              None if self.adapter is None else self.adapter.affine())
        except (RuntimeError, ValueError) as e:  # e.g. pooling that leaves no frames of a short window
            raise ModelError(f"model {self.model.id} cannot score a window of {self.window} samples: "
                             f"{str(e).splitlines()[0]}") from None
        bad = [name for name, p in zip(tests, probs) if not np.isfinite(p).all()]
        if bad:
            raise ModelError(f"model {self.model.id} gives non-finite probabilities for {' and '.join(bad)}: its "
                             "weights or frontend settings are broken; retrain it or choose another model")

    def recent_audio(self) -> np.ndarray:
        """The last window of audio fed, oldest sample first (zeros before any)."""
        return self._current_window()[-self.window :]

    def _history_size(self) -> int:
        """Samples kept (circular): the last window, and an encoder model's context before it."""
        return self.window + (self.scorer.frontend.past_samples if self.blocks is not None else 0)

    def _block_stream(self) -> BlockStream | None:
        """An encoder model's blocks, each computed once at a hop of whole blocks."""
        spec = self.model.frontend
        if spec.kind != "whisper":
            return None
        if self.window % spec.block_samples:
            raise StreamemoError(f"pipeline.window_s {self.window / self.rate:g} s is not a whole number of model "
                                 f"{self.model.name}'s {spec.block_samples / self.rate:g} s encoder blocks; use "
                                 f"{self.model.window_s:g} s (the model's) or leave window_s unset", 2)
        if self.hop % spec.block_samples:
            log.info("model %s encodes each block once only at hops of a whole number of %g s; at %g s each "
                     "window's blocks are encoded anew", self.model.id, spec.block_samples / self.rate,
                     self.config.hop_s)
        return BlockStream(self.scorer.frontend, self.window, self.scorer.device)

    def _adapter(self, model: Model) -> SpeakerAdapter | None:
        if model.speaker_norm is None or not self.config.speaker_adaptation:
            return None
        frame_s = model.frontend.frame_s
        return SpeakerAdapter(model.speaker_norm, self.config.adaptation_prior_s / frame_s,
                              self.config.adaptation_memory_s / frame_s, model.frontend.has_energy)

    def _column_stream(self) -> ColumnStream | None:
        """The model's column stream, or None when it is scored a window at a time: not a
        streaming network, MFCC (whose dB floor follows each window's loudest frame), or a
        hop that is not a whole number of its columns."""
        spec = self.model.frontend
        if spec.kind != "logmel":
            return None
        frames, padded = spec.frames(self.window), spec.padded_frames(self.window)
        if self.hop % spec.hop_length or not can_stream(self.scorer.network, self.hop // spec.hop_length, frames,
                                                         padded):
            if getattr(self.model.network, "streams", False):
                log.info("model %s computes each frame once only at hops of a whole number of %g s; at %g s it "
                         "scores each window whole", self.model.id,
                         self.model.network.time_stride * spec.frame_s, self.config.hop_s)
            return None
        return ColumnStream(self.scorer.network, frames, padded)

    def swap_model(self, model: Model, scorer: Scorer) -> None:
        """Scores from the next window on with another model of the same rate and window,
        keeping the audio history (no gap in messages) and what speaker adaptation has heard.
        The smoother starts afresh: the old model's averages mean nothing to the new one."""
        same_features = model.frontend == self.model.frontend
        # The reload built and tested a pipeline of `model` with this config: the set is valid for it.
        self.keep = chosen_classes(model.labels, self.config.emotions, model.name)
        self.model, self.scorer = model, scorer
        self.columns = self._column_stream()
        self.blocks = self._block_stream()
        size = self._history_size()
        if size != len(self._history):  # another encoder context: keep what of the audio fits
            audio = self._current_window()[-size:]
            self._history = np.zeros(size, np.float32)
            self._history[size - len(audio):] = audio
            self._write = 0
        self._frames, self._pushed_at = None, None  # the next voiced window is encoded whole
        self.smoother.reset()
        if self.adapter is not None and model.speaker_norm is not None and same_features:
            self.adapter.ref = model.speaker_norm  # what was heard is in the same feature space
        else:
            self.adapter = self._adapter(model)

    def reset(self, speaker: bool = False) -> None:
        """Forget all audio and smoothing state: the next sample is sample 0 of a new stream.
        With `speaker`, forget the voice heard too (speaker adaptation starts afresh); without
        it, a gap in the audio is taken to be the same person talking on."""
        if speaker and self.adapter is not None:
            self.adapter.reset()
        self._history[:] = 0.0
        self.gate.reset()
        if self.columns is not None:
            self.columns.reset()
        if self.blocks is not None:
            self.blocks.reset()
        self._frames = None  # with a column stream: the frames the window last scored pushed (n_features, frames)
        self._pushed_at = None  # with a column stream: `total` when frames were last added; None: none since reset
        self._gate_deaf = False  # while flush's padding fills the one short window
        self._write = 0  # next write position in _history
        self.total = 0  # samples fed since reset
        self._next_end = self.window  # a window completes when `total` reaches this
        self._index = 0
        self.smoother.reset()

    def feed(self, samples: np.ndarray, t_end: float | None = None) -> list[Estimate]:
        """Adds mono float32 samples at the model rate; `t_end` is the wall-clock capture time
        of the last one. Returns the estimates of every window completed by them. Windows
        completed by one call (a file fed whole) are scored up to BATCH at a time: the same
        numbers, for a fraction of the per-window cost."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        chunk_end = self.total + len(samples)
        out, batch, pos = [], [], 0
        while pos < len(samples):
            take = min(self._next_end - self.total, len(samples) - pos)
            self._append(samples[pos : pos + take])
            pos += take
            if self.total == self._next_end:
                t_capture = None if t_end is None else t_end - (chunk_end - self.total) / self.rate
                batch.append(_Window(self._current_window(), self.total, t_capture, self.gate.mark()))
                self._next_end += self.hop
                if len(batch) == BATCH:
                    out += self._estimates(batch)
                    batch = []
        return out + self._estimates(batch)

    @property
    def labels(self) -> list[str]:
        """The classes every estimate is over: the model's, or the chosen set of them in the model's order."""
        labels = self.model.labels
        return list(labels) if self.keep is None else [labels[i] for i in self.keep]

    @property
    def adapted_s(self) -> float | None:
        """Seconds of voice the speaker adaptation has learnt from (decayed); None without it."""
        if self.adapter is None:
            return None
        return round(self.adapter.heard.frames * self.model.frontend.frame_s, 1)

    @property
    def samples_to_next_window(self) -> int:
        """Samples still to feed before the next window completes."""
        return self._next_end - self.total

    @property
    def samples_to_next_task(self) -> int:
        """Samples to feed before there is work: the next window, or first the middle of its
        newest hop while `prepare` may have blocks to encode ahead."""
        middle = self._next_end - self.hop // 2
        if self.total < middle and self._blocks_ahead() is not None:
            return middle - self.total
        return self._next_end - self.total

    def prepare(self) -> int:
        """Work ahead, for a live stream between windows (the daemon calls it after each read,
        and reads in the middle of a hop too while there is work ahead): when the voice gate
        has heard speech since its last decision, the blocks of the next window that are
        complete already are encoded now. A window that opens the gate after a silence then
        waits for its newest block only, not for all of them (36 ms of the encoder for eight,
        4.5 for one). Numbers do not change: a block is the same whenever it is encoded.
        Returns the blocks encoded."""
        ahead = self._blocks_ahead()
        if ahead is None or not self.gate.speech_ahead():
            return 0
        end, count = ahead
        audio = self._current_window()
        return self.blocks.prefetch(audio[: len(audio) - (self.total - end)], end, count)

    def _blocks_ahead(self) -> tuple[int, int] | None:
        """(the end of the next window's newest complete block, how many of its blocks are
        complete) while some of them are not encoded yet; None when there is nothing to encode
        ahead, or no working ahead: not an encoder model, or windows not on one block grid."""
        if self.blocks is None or self.hop % self.blocks.block:
            return None
        block = self.blocks.block
        waiting = -(-(self._next_end - self.total) // block)  # its blocks not complete yet
        end, count = self._next_end - waiting * block, self.blocks.n_blocks - waiting
        if all(end - k * block in self.blocks.cache for k in range(count)):
            return None
        return end, count

    def flush(self, t_end: float | None = None) -> list[Estimate]:
        """End of stream. A stream shorter than one window still gets one (zero-padded) window,
        as `features.window_starts` defines; otherwise nothing is left to emit."""
        if self._index == 0 and self.total > 0:
            # The padding is not audio: the gate judges the end of what was heard.
            self._gate_deaf = True
            try:
                return self.feed(np.zeros(self.window - self.total, dtype=np.float32), t_end)
            finally:
                self._gate_deaf = False
        return []

    def _append(self, samples: np.ndarray) -> None:
        if not self._gate_deaf:
            self.gate.feed(samples)
        n, size = len(samples), len(self._history)
        if n >= size:
            self._history[:] = samples[-size:]
            self._write = 0
        else:
            first = min(n, size - self._write)
            self._history[self._write : self._write + first] = samples[:first]
            self._history[: n - first] = samples[first:]
            self._write = (self._write + n) % size
        self.total += n

    def _current_window(self) -> np.ndarray:
        return np.concatenate([self._history[self._write :], self._history[: self._write]])

    def _estimates(self, batch: list[_Window]) -> list[Estimate]:
        """Decides the windows of `batch`, scores the voiced ones together, then smooths every
        window in order."""
        if not batch:
            return []
        decisions = self.gate.decide([w.gate_mark for w in batch])
        voiced = [w for w, (v, _) in zip(batch, decisions) if v]
        if not voiced:
            scored = iter(())
        elif self.blocks is not None:
            scored = iter(self._adapt_and_score(self.blocks.features([(w.audio, w.end) for w in voiced])))
        elif self.columns is not None:
            scored = iter(self._stream(voiced))
        else:
            scored = iter(self._score(voiced))
        out = []
        for w, (classified, speech) in zip(batch, decisions):
            raw = next(scored) if classified else None
            if raw is not None and self.keep is not None:  # before the smoother: it, the top label and
                raw = restrict(raw, self.keep)              # every subscriber see the chosen set only
            if raw is not None and not np.isfinite(raw).all():
                # The model passed its self-test, yet fails on this audio. NaN must not reach a
                # subscriber (JSON has none) nor stop the daemon: the window counts as unclassified.
                self.unscored += 1
                if self.unscored == 1 or self.unscored % 1000 == 0:
                    log.error("model %s gave non-finite probabilities for %d window(s) so far; published as "
                              "unvoiced", self.model.id, self.unscored)
                raw, classified = None, False
            smoothed, top = self.smoother.update(raw)
            out.append(Estimate(
                index=self._index,
                t_audio=w.end / self.rate,
                t_capture=w.t_capture,
                voiced=classified,
                speech=round(speech, 4),
                level_db=level_db(w.audio[-self.hop :]),
                raw=raw,
                smoothed=None if smoothed is None else smoothed.copy(),
                top=top,
            ))
            self._index += 1
        return out

    def _stream(self, windows: list[_Window]) -> np.ndarray:
        """Voiced windows, in order -> their probabilities, from the column stream. Each
        window first adds the frames that arrived since the last voiced one (all of its own
        after a reset or a silence longer than it): unvoiced audio costs nothing here, so a
        quiet room runs only the gate. The frames of a batch go through the conv stack as
        one push, and the windows through the rest as one batch, each completed by its
        newest frames (its slab, which holds its padded last frame)."""
        spec, stream = self.model.frontend, self.columns
        n = len(windows)
        tails = self._slabs_of(windows) if stream.slab_frames else [None] * n  # one frontend call a batch
        heads = self._heads_of(windows) if self.adapter is not None else [None] * n
        probs, frames, slabs, ends = [], [], [], []
        for w, tail, head in zip(windows, tails, heads):
            whole = self._pushed_at is None or w.end - self._pushed_at >= self.window
            fresh = (w.end - self._pushed_at) // spec.hop_length if not whole else stream.pushed_frames
            if whole:  # a new run of columns: score the old one first
                if frames:
                    probs.append(self._push_and_score(frames, slabs, ends))
                    frames, slabs, ends = [], [], []
                stream.reset()
                window = self.scorer.features(w.audio[None])[0]  # (F, window frames)
                new = self._frames = window[:, :fresh]
            else:
                first = stream.pushed_frames - fresh  # the window's first new frame
                at = first - (stream.window_frames - stream.slab_frames)  # where it is in the slab: a hop's are
                new = (tail[:, at : at + fresh] if tail is not None and at >= 0
                       else self._frames_of(w.audio, first, stream.pushed_frames))
                self._frames = torch.cat([self._frames, new], dim=1)[:, fresh:]
            slab = new[:, :0] if tail is None else tail  # without padded frames, empty
            if self.adapter is not None:  # the window's voice counts before it is scored, as in _score
                if not whole:  # the window's frames as it has them, padded edges and all, as training measures them
                    window = torch.cat([head, self._frames[:, stream.lead :],
                                        slab[:, slab.shape[1] - stream.after_push :]], dim=1)
                self.adapter.update(window.cpu().numpy(), weight=self.hop / self.window)
                scale, shift = (torch.as_tensor(a, dtype=new.dtype, device=new.device)[:, None]
                                for a in self.adapter.affine())
                new, slab = new * scale + shift, slab * scale + shift
            frames.append(new)
            slabs.append(slab)
            ends.append((ends[-1] if ends else stream.count) + stream.columns_for(fresh, whole))
            self._pushed_at = w.end
        probs.append(self._push_and_score(frames, slabs, ends))
        return np.concatenate(probs)

    def _frames_of(self, audio: np.ndarray, first: int, end: int) -> torch.Tensor:
        """Frames `first` to `end` - 1 of the window `audio`, none of them padded, from their samples alone."""
        spec = self.model.frontend
        start, stop = spec.frame_start(first, len(audio)), spec.frame_start(end - 1, len(audio)) + spec.n_fft
        return self.scorer.features(audio[None, start:stop], pad=False)[0]

    def _heads_of(self, windows: list[_Window]) -> torch.Tensor:
        """(n, n_features, lead): each window's first frames that reach into its padding."""
        spec, lead = self.model.frontend, self.columns.lead
        if not lead:  # end-aligned: none
            return torch.zeros(len(windows), spec.n_features, 0, device=self.scorer.device)
        heads = np.stack([w.audio[: lead * spec.hop_length + spec.n_fft] for w in windows])
        return self.scorer.features(heads)[:, :, :lead]

    def _slabs_of(self, windows: list[_Window]) -> torch.Tensor:
        """(n, n_features, slab_frames): each window's newest frames, its padded ones as the
        window has them: centred frames of its tail, the tail's own padded first frames left out."""
        spec, stream = self.model.frontend, self.columns
        start = (stream.window_frames - stream.slab_frames - stream.lead) * spec.hop_length
        return self.scorer.features(np.stack([w.audio[start:] for w in windows]))[:, :, stream.lead :]

    def _push_and_score(self, frames: list[torch.Tensor], slabs: list[torch.Tensor], ends: list[int]) -> np.ndarray:
        """The newest window is completed in the push itself (one pass through the conv stack
        a hop, live); the others of a batch by their slabs."""
        stream = self.columns
        completing = slabs[-1][:, stream.slab_frames - stream.after_push :] if stream.slab_frames else None
        stream.push(torch.cat(frames, dim=1), completing)
        earlier = torch.stack(slabs[:-1]) if stream.slab_frames and len(slabs) > 1 else None
        return stream.probabilities(ends, earlier).cpu().numpy()

    def _score(self, windows: list[_Window]) -> np.ndarray:
        """Voiced windows, in order -> their probabilities, each window encoded whole."""
        return self._adapt_and_score(self.scorer.features(np.stack([w.audio for w in windows])))

    def _adapt_and_score(self, features: torch.Tensor) -> np.ndarray:
        """Voiced windows' features, in order -> their probabilities, speaker-adapted."""
        if self.adapter is None:
            return self.scorer.probabilities(features)
        # Each window's voice counts before it is scored: the first words already adapt.
        affines = []
        for f in features:
            self.adapter.update(f.cpu().numpy(), weight=self.hop / self.window)
            affines.append(self.adapter.affine())
        return self.scorer.probabilities(features, (np.stack([a[0] for a in affines]),
                                                    np.stack([a[1] for a in affines])))


def level_db(samples: np.ndarray) -> float:
    """RMS level of a stretch of samples in dBFS (-200 for digital silence)."""
    if len(samples) == 0:
        return -200.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * np.log10(rms + 1e-10)


def file_probabilities(estimates: list[Estimate]) -> np.ndarray | None:
    """A whole recording's probabilities: the mean of its voiced windows' raw probabilities,
    or None when no window was voiced. `classify` and the trainer's evaluation both use it."""
    voiced = [e.raw for e in estimates if e.raw is not None]
    return np.mean(voiced, axis=0) if voiced else None
