"""The voice gate: is someone speaking? Silero VAD v6 decides, not loudness.

A loudness gate lets music, a television or a dishwasher through and the classifier then
gives them emotions. Silero VAD (MIT, github.com/snakers4/silero-vad) is a small network
trained to tell speech from everything else: on held-out music, household noise and the
emotion corpora it passes ~3 % of music windows and none of noise, against 99 % and 47 %
for the loudness gate it replaced (benchmarks/RESULTS-gates.md, which also compares
webrtcvad). It hears sung vocals as voice; nothing that fits here does otherwise.

The weights come from the `silero-vad` wheel (its TorchScript file; its bundled
safetensors file holds other, older weights). They are copied out once into numpy, and
this module runs the network itself: the 16 kHz branch, on 512-sample chunks each
preceded by the 64 samples before it, as the package does. The encoder sees one chunk at
a time, so a hop's chunks go through it as one batch and only the LSTM steps chunk by
chunk; that costs about 0.3 to 0.7 ms per 0.25 s hop on one core (quiet to busy box), a
seventh of the package's own TorchScript model. Each chunk is scored once, when
the window that ends after it is decided.

The decision for a window: at least `share` of the chunks in the newest `lookback_s`
seconds have a speech probability of at least `threshold`. A stream's first window is
judged on all of its audio, which no later window's look-back covers: a recording whose
only words are in its first second is classified. Defaults were chosen on data
(benchmarks/voice_gates.py). Everything depends only on the samples and on where windows
end, so chunking the input cannot change a decision.
"""

from __future__ import annotations

import collections
import functools
import itertools
import math

import numpy as np

from streamemo.audio.resample import StreamResampler

RATE = 16000  # Silero's rate; other model rates are resampled for the gate only
CHUNK = 512  # 32 ms
CONTEXT = 64  # samples before each chunk that the network also sees
SHARE_WINDOW_S = 60.0  # `recent_share` (the status message's speech_share) looks back this far


@functools.cache
def _weights() -> dict[str, np.ndarray]:
    """The 16 kHz network's weights, as the arrays `SileroVAD` multiplies by."""
    import importlib.util
    import warnings
    from pathlib import Path

    import torch

    # Found, not imported: the package's __init__ loads its utilities (and all of torch's
    # TorchScript helpers) for nothing this module uses.
    package = Path(importlib.util.find_spec("silero_vad").submodule_search_locations[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript; it still loads
        net = torch.jit.load(str(package / "data" / "silero_vad.jit"), map_location="cpu")._model  # 16 kHz branch
    w = {n: t.detach().numpy().copy() for n, t in itertools.chain(net.named_parameters(), net.named_buffers())}

    def conv(i: int) -> tuple[np.ndarray, np.ndarray]:
        return w[f"encoder.{i}.reparam_conv.weight"], w[f"encoder.{i}.reparam_conv.bias"]

    def taps(weight: np.ndarray, first: int = 0) -> np.ndarray:
        # (out, in, 3) -> (taps * in, out): rows tap-major, to multiply an im2col matrix
        return np.ascontiguousarray(weight.transpose(2, 1, 0)[first:].reshape(-1, weight.shape[0]))

    def per_tap(weight: np.ndarray) -> np.ndarray:
        # (out, in, 3) -> (in, 3 * out): one product gives every tap's contribution, which
        # `_conv3` then adds up shifted (cheaper than copying the input three times)
        return np.ascontiguousarray(weight.transpose(1, 2, 0).reshape(weight.shape[1], -1))

    (w1, b1), (w2, b2), (w3, b3), (w4, b4) = (conv(i) for i in range(4))
    basis = w["stft.forward_basis_buffer"][:, 0, :]  # (258, 256): cos rows, then sin rows, windowed
    return {
        # The STFT is a windowed DFT (its first row is the window): an FFT computes it for less.
        "window": basis[0].copy(),
        "w1": per_tap(w1), "b1": b1,  # 129 -> 128 channels over 4 frames
        "w2": per_tap(w2), "b2": b2,  # 128 -> 64, stride 2: 2 frames
        # Stride 2 again leaves one output frame, at frame 0: its left tap falls on padding.
        "w3": taps(w3, first=1), "b3": b3,
        "w4": np.ascontiguousarray(w4[:, :, 1].T), "b4": b4,  # one frame in, padded both sides: centre tap only
        "w_ih": np.ascontiguousarray(w["decoder.rnn.weight_ih"].T),
        "w_hh": np.ascontiguousarray(w["decoder.rnn.weight_hh"].T),
        "b_lstm": w["decoder.rnn.bias_ih"] + w["decoder.rnn.bias_hh"],
        "w_out": w["decoder.decoder.2.weight"][0, :, 0].copy(),
        "b_out": w["decoder.decoder.2.bias"].copy(),
    }


# The STFT's 4 frames of 256 samples every 128, over the 576 samples of a chunk and 64 more
# that mirror its end (reflect padding): one gather, as indices into the chunk.
_FRAMES = np.arange(4)[:, None] * 128 + np.arange(256)[None]
_FRAMES = np.where(_FRAMES < CHUNK + CONTEXT, _FRAMES, 2 * (CHUNK + CONTEXT - 1) - _FRAMES)


def chunks(audio: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    """(n, 576): each whole 512-sample chunk of 16 kHz `audio`, after the 64 samples before
    it (`context` for the first chunk: zeros at a stream's start), as the network takes them."""
    n = len(audio) // CHUNK
    stream = np.concatenate([np.zeros(CONTEXT, np.float32) if context is None else context, audio[: n * CHUNK]])
    return stream[np.arange(n)[:, None] * CHUNK + np.arange(CHUNK + CONTEXT)[None]]


class SileroVAD:
    """The network, streaming: consecutive (n, 576) chunks -> n speech probabilities, with the
    LSTM state carried from call to call until `reset`."""

    def __init__(self):
        self.w = _weights()
        self.reset()

    def reset(self) -> None:
        self.h = np.zeros(128, np.float32)
        self.c = np.zeros(128, np.float32)

    def encode(self, chunks: np.ndarray) -> np.ndarray:
        """(n, 576) -> (n, 128): everything before the LSTM, all chunks at once."""
        w, n = self.w, len(chunks)
        frames = chunks[:, _FRAMES] * w["window"]  # (n, 4, 256)
        mag = np.abs(np.fft.rfft(frames, axis=-1)).astype(np.float32, copy=False)  # (n, 4, 129)
        h = _relu(_conv3(mag, w["w1"], stride=1) + w["b1"])  # (n, 4, 128)
        h = _relu(_conv3(h, w["w2"], stride=2) + w["b2"])  # (n, 2, 64)
        h = _relu(h.reshape(n, 128) @ w["w3"] + w["b3"])
        return _relu(h @ w["w4"] + w["b4"])

    def __call__(self, chunks: np.ndarray) -> np.ndarray:
        w = self.w
        gates = self.encode(chunks) @ w["w_ih"] + w["b_lstm"]
        hidden = np.empty((len(chunks), 128), np.float32)
        h, c = self.h, self.c
        for i, g in enumerate(gates):  # LSTM cell; torch's gate order: input, forget, cell, output
            g = g + h @ w["w_hh"]
            s = _sigmoid(g)
            c = s[128:256] * c + s[:128] * np.tanh(g[256:384])
            h = s[384:] * np.tanh(c)
            hidden[i] = h
        self.h, self.c = h, c
        return _sigmoid(_relu(hidden) @ w["w_out"] + w["b_out"][0])


def _conv3(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """(n, 4, in) -> (n, 4 // stride, out): a 3-tap convolution over time, padded by one
    frame each side, as Silero's conv1d(kernel 3, padding 1); `weight` from `per_tap`."""
    n, frames, _ = x.shape
    y = (x.reshape(n * frames, -1) @ weight).reshape(n, frames, 3, -1)  # each frame times each tap
    out = y[:, :, 1].copy()  # centre tap: output t sees frame t ...
    out[:, 1:] += y[:, :-1, 0]  # ... its left tap frame t - 1 ...
    out[:, :-1] += y[:, 1:, 2]  # ... and its right tap frame t + 1
    return out[:, ::stride]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: numpy has no sigmoid, and scipy's would cost the daemon 16 MB of imports
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, out=x)


class SpeechGate:
    """Audio at `rate` in (`feed`), one decision per window out (`decide`, called when a
    window ends): (voiced, speech), `speech` being the mean speech probability over the
    lookback. `threshold`, `share` and `lookback_s` are PipelineConfig's speech_* settings;
    `share` 0 lets every window through (an open gate)."""

    def __init__(self, rate: int, threshold: float, share: float, lookback_s: float):
        self.threshold, self.share = threshold, share
        self.lookback = max(1, round(lookback_s * RATE / CHUNK))
        self.rate = rate
        self.vad = SileroVAD()
        self._recent = collections.deque(maxlen=math.ceil(SHARE_WINDOW_S * RATE / CHUNK))
        self.reset()

    def reset(self) -> None:
        """A new stream: no audio, no LSTM state. The recent-speech share goes on (it
        describes the input, not one stream)."""
        self.vad.reset()
        self._resampler = StreamResampler(self.rate, RATE)  # a pass-through at 16 kHz
        self._pending: list[np.ndarray] = []  # fed since the last decision, at `rate`
        self._rest = np.zeros(0, np.float32)  # at 16 kHz: less than a chunk, left from the last decision
        self._tail = np.zeros(CONTEXT, np.float32)  # the last 64 samples scored: the next chunk's context
        self._probs = collections.deque(maxlen=self.lookback)

    def feed(self, samples: np.ndarray) -> None:
        self._pending.append(np.asarray(samples, dtype=np.float32))

    def decide(self) -> tuple[bool, float]:
        new = self._score_pending()
        if not self._probs:
            return self.share <= 0, 0.0
        # Judged: the newest look-back, or everything since the last decision when that is
        # longer (a stream's first window), so no stretch of audio escapes every decision.
        probs = new if len(new) > self.lookback else np.fromiter(self._probs, np.float32)
        speech_share = float(np.mean(probs >= self.threshold))
        return speech_share >= self.share, float(probs.mean())

    @property
    def recent_share(self) -> float | None:
        """Share of the last minute's chunks (or of all since start) that were speech; None before any."""
        return None if not self._recent else sum(self._recent) / len(self._recent)

    def decisions(self, audio: np.ndarray, window: int, hop: int) -> list[bool]:
        """The decisions for the windows `features.window_starts` puts over `audio` (a whole
        recording at `rate`), exactly as a pipeline fed the recording would make them."""
        from streamemo.features import window_starts

        self.reset()
        audio = np.asarray(audio, np.float32)
        if len(audio) <= window:  # one window, zero-padded: judged on the audio, not the padding
            self.feed(audio)
            return [self.decide()[0]]
        out, fed = [], 0
        for start in window_starts(len(audio), window, hop):
            self.feed(audio[fed : start + window])
            fed = start + window
            out.append(self.decide()[0])
        return out

    def _score_pending(self) -> np.ndarray:
        """Scores the whole chunks fed since the last call; returns their probabilities."""
        if not self._pending:
            return np.zeros(0, np.float32)
        audio = np.concatenate(self._pending)
        self._pending = []
        audio = np.concatenate([self._rest, self._resampler(audio)])
        n = len(audio) // CHUNK
        self._rest = audio[n * CHUNK :]
        if n == 0:
            return np.zeros(0, np.float32)
        scored = chunks(audio, self._tail)
        self._tail = scored[-1, -CONTEXT:].copy()
        probs = self.vad(scored)
        self._probs.extend(probs.tolist())
        self._recent.extend((probs >= self.threshold).tolist())
        return probs
