"""The voice gate: is someone speaking? Silero VAD v6 decides, not loudness.

A loudness gate lets music, a television or a dishwasher through and the classifier then
gives them emotions. Silero VAD (MIT, github.com/snakers4/silero-vad) is a small network
trained to tell speech from everything else: on held-out music, household noise and the
emotion corpora it passes ~3 % of music windows and none of noise, against 99 % and 47 %
for the loudness gate it replaced (benchmarks/RESULTS-gates.md, which also compares
webrtcvad). It hears sung vocals as voice; nothing that fits here does otherwise.

The weights are the `silero-vad` 6.2.3 wheel's (its TorchScript file; its own safetensors
file holds other, older weights), copied into silero_vad.safetensors beside this module
(`package_weights`), so loading them runs no code. This module runs the network itself:
the 16 kHz branch, on 512-sample chunks each preceded by the 64 samples before it, as the
package does. The encoder sees one chunk at a time, so the chunks of a hop (of many hops,
for a file) go through it as one batch and only the LSTM steps chunk by chunk; that costs
about 0.3 to 0.7 ms per 0.25 s hop on one core (quiet to busy box), a seventh of the
package's own TorchScript model, and half that per hop in a file. Each chunk is scored
once, when the first window that ends after it is decided.

The decision for a window: at least `share` of the chunks in the newest `lookback_s`
seconds have a speech probability of at least `threshold`. A stream's first window is
judged on all of its audio, which no later window's look-back covers: a recording whose
only words are in its first second is classified. Defaults were chosen on data
(benchmarks/voice_gates.py). Everything depends only on the samples and on where windows
end, so chunking the input cannot change a decision.

Music after speech. The network's LSTM carries what it heard: after speech it expects more,
and hears music that follows a pause as half speech (0.3 to 0.9 where the same music alone
gets 0.0 to 0.4), so a few of its windows passed, seconds into the music. So once speech has
stopped for longer than the look-back (PAUSE_S more: no window whose look-back holds speech
is ever held back), a second copy of the network listens too, with a fresh memory, as if the
stream began there, and windows are held back until that copy hears a chunk of speech (at
the threshold) or the network itself is near certain of one (SURE_RUN chunks in a row at
SURE: a voice the fresh copy is slow to hear); from then on they are decided as before.
Speech after a pause does one or the other within a few chunks; music rarely does. The
probabilities, and every decision outside those stretches, are what they were
(benchmarks/RESULTS-gates.md, "Speech, then music"). The copy runs only while windows are
held back, and shares the encoder's work.
"""

from __future__ import annotations

import collections
import functools
import itertools
import math
from pathlib import Path

import numpy as np

from streamemo import ModelError
from streamemo.audio.resample import StreamResampler

RATE = 16000  # Silero's rate; other model rates are resampled for the gate only
CHUNK = 512  # 32 ms
CONTEXT = 64  # samples before each chunk that the network also sees
# Chunks encoded at once, at most: 64 costs 12 us a chunk, 8 costs 18, but 256 costs 23 with
# glibc's default malloc, as temporaries of megabytes go back to the system after each call
# and fault in again.
ENCODE_BATCH = 64
TORCH_STEPS_FROM = 32  # chunks in one call from which the LSTM steps in torch (SileroVAD._steps_torch)
SHARE_WINDOW_S = 60.0  # `recent_share` (the status message's speech_share) looks back this far
# After speech, the look-back and this long again without a chunk at the threshold is a pause,
# after which windows are held back until a fresh copy of the network hears speech, or the
# network is at SURE for SURE_RUN chunks in a row (the docstring: music after speech).
PAUSE_S = 0.25
SURE, SURE_RUN = 0.9, 4


WEIGHTS = Path(__file__).with_name("silero_vad.safetensors")  # see `package_weights`
USED = ("stft.forward_basis_buffer", *(f"encoder.{i}.reparam_conv.{p}" for i in range(4) for p in ("weight", "bias")),
        *(f"decoder.rnn.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
        "decoder.decoder.2.weight", "decoder.decoder.2.bias")


def package_weights() -> dict[str, np.ndarray]:
    """The tensors of the 16 kHz branch that this module uses, from the `silero-vad` wheel's
    TorchScript file: what WEIGHTS holds. Loading TorchScript unpickles its code, costs the
    daemon 12 MB and is deprecated in torch 2.13, so the daemon reads WEIGHTS instead; this
    is how it was made (`python -m streamemo.stream.speech`, with silero-vad installed), and
    tests/test_speech_gate.py holds the two equal."""
    import importlib.util
    import warnings

    import torch

    # Found, not imported: the package's __init__ loads all of torch's TorchScript helpers.
    package = Path(importlib.util.find_spec("silero_vad").submodule_search_locations[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        net = torch.jit.load(str(package / "data" / "silero_vad.jit"), map_location="cpu")._model  # 16 kHz branch
    tensors = dict(itertools.chain(net.named_parameters(), net.named_buffers()))
    return {name: tensors[name].detach().numpy().copy() for name in USED}


@functools.cache
def _weights() -> dict[str, np.ndarray]:
    """The 16 kHz network's weights, as the arrays `SileroVAD` multiplies by."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        w = load_file(WEIGHTS)
    except (OSError, SafetensorError) as e:
        raise ModelError(f"the voice gate's weights {WEIGHTS} cannot be read ({e}); reinstall streamemo") from None
    if missing := set(USED) - set(w):
        raise ModelError(f"the voice gate's weights {WEIGHTS} lack {', '.join(sorted(missing))}; reinstall streamemo")

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
        "rnn": {name: w[f"decoder.rnn.{name}"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
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

    def __init__(self, torch_steps: bool = True):
        self.w = _weights()
        # Long runs step the LSTM in torch (faster from TORCH_STEPS_FROM chunks on); False keeps
        # it in numpy, for a command that should not import torch for this alone (`record`).
        self.torch_from = TORCH_STEPS_FROM if torch_steps else math.inf
        self.reset()

    def reset(self) -> None:
        self.h = np.zeros(128, np.float32)
        self.c = np.zeros(128, np.float32)

    def encode(self, chunks: np.ndarray) -> np.ndarray:
        """(n, 576) -> (n, 128): everything before the LSTM, up to ENCODE_BATCH chunks at once."""
        if len(chunks) > ENCODE_BATCH:
            return np.concatenate([self.encode(chunks[i : i + ENCODE_BATCH])
                                   for i in range(0, len(chunks), ENCODE_BATCH)])
        w, n = self.w, len(chunks)
        frames = chunks[:, _FRAMES] * w["window"]  # (n, 4, 256)
        mag = np.abs(np.fft.rfft(frames, axis=-1)).astype(np.float32, copy=False)  # (n, 4, 129)
        h = _relu(_conv3(mag, w["w1"], stride=1) + w["b1"])  # (n, 4, 128)
        h = _relu(_conv3(h, w["w2"], stride=2) + w["b2"])  # (n, 2, 64)
        h = _relu(h.reshape(n, 128) @ w["w3"] + w["b3"])
        return _relu(h @ w["w4"] + w["b4"])

    def __call__(self, chunks: np.ndarray) -> np.ndarray:
        return self.listen(self.encode(chunks))

    def listen(self, x: np.ndarray) -> np.ndarray:
        """(n, 128) encoded chunks -> their n speech probabilities: the LSTM, its state carried on."""
        w = self.w
        hidden = self._steps_torch(x) if len(x) >= self.torch_from else self._steps(x @ w["w_ih"] + w["b_lstm"])
        return _sigmoid(_relu(hidden) @ w["w_out"] + w["b_out"][0])

    def _steps(self, gates: np.ndarray) -> np.ndarray:
        """The LSTM over (n, 512) input gates, step by step in numpy: (n, 128) hidden states."""
        w = self.w
        hidden = np.empty((len(gates), 128), np.float32)
        h, c = self.h, self.c
        for i, g in enumerate(gates):  # LSTM cell; torch's gate order: input, forget, cell, output
            g = g + h @ w["w_hh"]
            s = _sigmoid(g)
            c = s[128:256] * c + s[:128] * np.tanh(g[256:384])
            h = s[384:] * np.tanh(c)
            hidden[i] = h
        self.h, self.c = h, c
        return hidden

    def _steps_torch(self, x: np.ndarray) -> np.ndarray:
        """The LSTM over (n, 128) encoded chunks through torch, whose loop is in C++: 5 us a
        step against numpy's 12, once a call's 90 us start is shared by many chunks (a file
        read 8 s at a time). The two agree to 1e-6."""
        import torch

        h = torch.from_numpy(self.h).view(1, 1, 128)
        c = torch.from_numpy(self.c).view(1, 1, 128)
        weights = [torch.from_numpy(self.w["rnn"][name])  # as torch.lstm takes them
                   for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        with torch.inference_mode():
            out, h, c = torch.lstm(torch.from_numpy(x)[:, None], (h, c), weights, True, 1, 0.0, False, False, False)
        self.h, self.c = h.numpy().reshape(128).copy(), c.numpy().reshape(128).copy()
        return out.numpy()[:, 0]


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
    """Audio at `rate` in (`feed`); where each window ends (`mark`); one decision per window
    out (`decide`, for any number of marks at once): (voiced, speech), `speech` being the mean
    speech probability over the lookback. `threshold`, `share` and `lookback_s` are
    PipelineConfig's speech_* settings; `share` 0 lets every window through (an open gate).

    A decision depends only on the chunks heard up to its window's end, so the chunks of many
    windows (a file read 8 s at a time) are scored in one pass: the encoder batches them,
    and only the LSTM steps one by one."""

    def __init__(self, rate: int, threshold: float, share: float, lookback_s: float):
        self.threshold, self.share = threshold, share
        self.lookback = max(1, round(lookback_s * RATE / CHUNK))
        self.pause = self.lookback + round(PAUSE_S * RATE / CHUNK)
        self.rate = rate
        self.vad = SileroVAD()
        self.fresh = SileroVAD()  # the copy that listens afresh after a pause (`_hold`)
        self._recent = collections.deque(maxlen=math.ceil(SHARE_WINDOW_S * RATE / CHUNK))
        self.reset()

    def reset(self) -> None:
        """A new stream: no audio, no LSTM state. The recent-speech share goes on (it
        describes the input, not one stream)."""
        self.vad.reset()
        self.fresh.reset()
        self._resampler = StreamResampler(self.rate, RATE)  # a pass-through at 16 kHz
        self._pending: list[np.ndarray] = []  # fed since the last mark, at `rate`
        self._unscored: list[np.ndarray] = []  # at 16 kHz, resampled at marks: from the first unscored chunk on
        self._unscored_n = 0  # samples in it
        self._tail = np.zeros(CONTEXT, np.float32)  # the last 64 samples scored: the next chunk's context
        self._scored = 0  # chunks scored since the reset
        self._last = np.zeros(0, np.float32)  # the probabilities of the newest `lookback` of them
        self._held = False  # whether a window ending at the newest scored chunk is held back
        self._decided = 0  # the chunks heard at the last decision
        self._ahead: tuple[np.ndarray, list[bool]] = (np.zeros(0, np.float32), [])  # scored by `speech_ahead`, undecided
        # `_hold`'s state: speech heard since the last pause; chunks in a row below the
        # threshold; whether windows are held back (while they are, `fresh` listens); chunks in
        # a row at SURE while they are.
        self._spoken, self._quiet, self._holding, self._sure = False, 0, False, 0

    def feed(self, samples: np.ndarray) -> None:
        self._pending.append(np.asarray(samples, dtype=np.float32))

    def mark(self) -> int:
        """A window ends here: returns the chunks heard so far (whole chunks since the
        reset), for `decide`. Cheap: nothing is scored yet."""
        if self._pending:
            audio = self._resampler(np.concatenate(self._pending))
            self._pending = []
            self._unscored.append(audio)
            self._unscored_n += len(audio)
        return self._scored + self._unscored_n // CHUNK

    def speech_ahead(self) -> bool:
        """Whether the chunks heard since the last decision hold speech (at the threshold):
        the window soon to be decided may be voiced. Scores them ahead of `decide`, which
        then takes them as scored. Only new chunks count: the look-back's older speech would
        also answer yes for the hops after a voice stops, when no window is to be scored."""
        self.mark()
        probs, held = self._score(self._unscored_n // CHUNK)
        self._ahead = (np.concatenate([self._ahead[0], probs]), self._ahead[1] + held)
        return bool((self._ahead[0] >= self.threshold).any())

    def decide(self, marks: list[int]) -> list[tuple[bool, float]]:
        """The decisions for windows ending at `marks` (from `mark`, in order, none decided
        yet), after scoring every chunk up to the last of them."""
        new, new_held = self._score(marks[-1] - self._scored)
        (ahead, ahead_held), self._ahead = self._ahead, (np.zeros(0, np.float32), [])
        new, new_held = np.concatenate([ahead, new]), ahead_held + new_held
        history = np.concatenate([self._last, new])  # chunk `first` onwards
        held = [self._held, *new_held]  # chunk `first + len(self._last) - 1` onwards
        first = self._scored - len(new) - len(self._last)
        out = []
        for end in marks:
            if end == 0:
                out.append((self.share <= 0, 0.0))
                continue
            # Judged: the newest look-back, or everything since the last decision when that is
            # longer (a stream's first window), so no stretch of audio escapes every decision.
            since = end - self._decided
            judged = since if since > self.lookback else self.lookback
            probs = history[max(0, end - first - judged) : end - first]
            speech_share = float(np.mean(probs >= self.threshold))
            held_back = held[end - first - len(self._last)]  # as of the window's last chunk
            out.append((speech_share >= self.share and not held_back, float(probs.mean())))
            self._decided = end
        self._last = history[-self.lookback :]
        self._held = bool(held[-1])
        return out

    def _hold(self, probs: np.ndarray, encoded: np.ndarray) -> list[bool]:
        """For each newly scored chunk, in order: whether a window ending at it is held back
        (music after speech, in the module's docstring). `encoded`: the chunks, encoded."""
        out, fresh, since = [], None, 0  # the fresh copy's probabilities from chunk `since` on
        for i, p in enumerate(probs.tolist()):
            if self._holding:
                if fresh is None:  # the copy hears the rest of these chunks, going on from its state
                    fresh, since = self.fresh.listen(encoded[i:]), i
                self._sure = self._sure + 1 if p >= SURE else 0
                self._holding = fresh[i - since] < self.threshold and self._sure < SURE_RUN
            if p >= self.threshold and not self._holding:
                self._spoken = True
            self._quiet = self._quiet + 1 if p < self.threshold else 0
            if self._spoken and self._quiet >= self.pause and self.share > 0:  # share 0: an open gate
                self._holding, self._spoken, self._sure = True, False, 0
                self.fresh.reset()
                fresh = None  # it starts with the next chunk
            out.append(self._holding)
        return out

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
            return [self.decide([self.mark()])[0][0]]
        marks, fed = [], 0
        for start in window_starts(len(audio), window, hop):
            self.feed(audio[fed : start + window])
            fed = start + window
            marks.append(self.mark())
        return [voiced for voiced, _ in self.decide(marks)]

    def _score(self, n: int) -> tuple[np.ndarray, list[bool]]:
        """Scores the next `n` chunks; returns their probabilities and whether windows ending
        at each are held back."""
        if n <= 0:
            return np.zeros(0, np.float32), []
        audio = np.concatenate(self._unscored)
        scored = chunks(audio[: n * CHUNK], self._tail)
        self._unscored = [audio[n * CHUNK :]]
        self._unscored_n = len(self._unscored[0])
        self._tail = scored[-1, -CONTEXT:].copy()
        self._scored += n
        encoded = self.vad.encode(scored)
        probs = self.vad.listen(encoded)
        self._recent.extend((probs >= self.threshold).tolist())
        return probs, self._hold(probs, encoded)


if __name__ == "__main__":  # writes WEIGHTS from the installed silero-vad wheel
    import importlib.metadata

    from safetensors.numpy import save_file

    save_file(package_weights(), str(WEIGHTS), metadata={
        "source": f"silero-vad {importlib.metadata.version('silero-vad')}, silero_vad/data/silero_vad.jit, "
                  "its 16 kHz branch (_model)",
        "license": "MIT, Copyright (c) 2020-present Silero Team (see SILERO_LICENSE beside this file)",
    })
    print(f"wrote {WEIGHTS}")
