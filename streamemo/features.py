"""The frontend: waveform windows -> log-mel or MFCC maps, and the windowing convention.

One code path for the trainer, `streamemo classify` and the daemon: what a file scores
offline is what the daemon publishes for the same audio. The parameters live in the
model's card (`FrontendSpec`), so a model always gets the features it was trained on.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass

import numpy as np
import torch

from streamemo import StreamemoError

LOG_FLOOR = 1e-6  # added before the log: about -60 dB below a full-scale sine's mel energy
# The most frames one window may make (60 s of 10 ms frames; the shipped model uses 101).
# Features, the STFT and every layer of the network grow with it: a card with a 1-sample hop
# over a long window would otherwise ask for gigabytes and minutes per window.
MAX_FRAMES = 6001


@dataclass(frozen=True)
class FrontendSpec:
    kind: str = "logmel"  # logmel | mfcc
    sample_rate: int = 16000  # Hz, the model rate; sources are resampled to it
    n_fft: int = 512  # 32 ms
    win_length: int = 400  # 25 ms analysis window
    hop_length: int = 160  # 10 ms frame step: 100 frames per second
    n_mels: int = 64
    fmin: float = 50.0  # below the lowest voice fundamental: mains hum stays out
    fmax: float = 8000.0
    n_mfcc: int = 40  # used when kind == "mfcc"
    # Where a window's frames sit. "center": nnAudio's centred frames, the window's edges
    # reflect-padded (the shipped model; a stream computes every frame but the padded ones
    # once). "end": whole FFT spans only, the newest ending on the window's last sample, so
    # no frame is padded; it trained 3 UA points worse on the RAVDESS folds
    # (benchmarks/RESULTS-train.md, session 12).
    align: str = "center"
    # kind "whisper": Whisper's log-mel (n_fft 400, hop 160, 80 Slaney bands 0-8 kHz) through
    # the first `encoder_layers` layers of a frozen encoder shipped in the package
    # (streamemo/encoder/), in blocks of `block_frames` encoder frames (20 ms each) with
    # `context_frames` before each (encoder/frontend.py). The card names the encoder file and
    # its SHA-256, so a model never runs on another encoder.
    encoder: str = ""
    encoder_sha256: str = ""
    encoder_width: int = 0  # the encoder's d_model: the features' bands
    encoder_layers: int = 0
    block_frames: int = 0
    context_frames: int = 0

    @classmethod
    def from_dict(cls, data: dict) -> FrontendSpec:
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def n_features(self) -> int:
        if self.kind == "whisper":
            return self.encoder_width
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def has_energy(self) -> bool:
        """Whether a frame's mean feature is its loudness (log-mel, MFCC), so pauses can be told
        from voice by it (stream/adaptation.py); an encoder's learnt features are not."""
        return self.kind != "whisper"

    @property
    def frame_hop(self) -> int:
        """Samples between frames: the encoder's frames are two mel hops apart."""
        return 2 * self.hop_length if self.kind == "whisper" else self.hop_length

    @property
    def frame_s(self) -> float:
        """Seconds between frames."""
        return self.frame_hop / self.sample_rate

    @property
    def block_samples(self) -> int:
        """Samples in one encoder block (kind "whisper"); 0 for other kinds."""
        return self.block_frames * self.frame_hop if self.kind == "whisper" else 0

    def frames(self, n_samples: int) -> int:
        """Frames the frontend yields for a window of `n_samples`."""
        if self.kind == "whisper":  # whole blocks only
            return n_samples // self.block_samples * self.block_frames
        if self.align == "center":
            return n_samples // self.hop_length + 1
        return max(0, (n_samples - self.n_fft) // self.hop_length + 1)

    def check_kernels(self, kernels: dict) -> None:
        """ValueError unless `kernels` (a model file's window and mel basis) fit this frontend."""
        window, mel_basis = kernels["window"], kernels["mel_basis"]
        if tuple(window.shape) != (self.n_fft,) or tuple(mel_basis.shape) != (self.n_mels, self.n_fft // 2 + 1):
            raise ValueError(f"frontend kernels of shape {tuple(window.shape)} and {tuple(mel_basis.shape)} do not "
                             f"fit n_fft {self.n_fft} and n_mels {self.n_mels}")

    def frame_start(self, i: int, n_samples: int) -> int:
        """Where frame `i` of a window of `n_samples` starts (negative: in the reflect padding)."""
        if self.align == "center":
            return i * self.hop_length - self.n_fft // 2
        return (n_samples - self.n_fft) % self.hop_length + i * self.hop_length

    def padded_frames(self, n_samples: int) -> tuple[int, int]:
        """How many of a window's first and last frames reach into its reflect padding: the
        only frames that differ from those of a longer recording at the same place."""
        if self.align == "end":
            return 0, 0
        frames, half = self.frames(n_samples), self.n_fft // 2
        return (sum(i * self.hop_length < half for i in range(frames)),
                sum(i * self.hop_length + half > n_samples for i in range(frames)))


def mel_power(samples: torch.Tensor, window: torch.Tensor, mel_basis_t: torch.Tensor, hop: int) -> torch.Tensor:
    """(batch, samples) -> (batch, n_mels, frames): each whole span of len(window) samples every
    `hop`, windowed, its FFT's power through the mel basis ((bins, n_mels), transposed)."""
    frames = samples.unfold(-1, len(window), hop) * window  # (batch, frames, n_fft)
    spectrum = torch.fft.rfft(frames, dim=-1)  # (batch, frames, bins)
    power = spectrum.real.square() + spectrum.imag.square()
    return (power @ mel_basis_t).transpose(1, 2).contiguous()


def build_frontend(spec: FrontendSpec, kernels: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The frontend module for `spec`: log-mel or MFCC (`Frontend`), or Whisper's log-mel
    and encoder (`encoder.frontend.EncoderFrontend`)."""
    if spec.kind == "whisper":
        from streamemo.encoder.frontend import EncoderFrontend

        return EncoderFrontend(spec, kernels)
    return Frontend(spec, kernels)


class Frontend(torch.nn.Module):
    """(batch, samples) float waveform in [-1, 1] -> (batch, n_features, frames)."""

    def __init__(self, spec: FrontendSpec, kernels: dict[str, torch.Tensor] | None = None):
        """`kernels`: nnAudio's window and mel basis for `spec` as a model file carries them
        (`kernels()`), so the daemon need not import nnAudio (and the scipy.signal it pulls
        in: 50 MB) to rebuild them; without them, or for MFCC, nnAudio builds its layer here."""
        super().__init__()
        if spec.kind not in ("logmel", "mfcc"):
            raise ValueError(f"unknown frontend kind {spec.kind!r}; expected logmel or mfcc (whisper: build_frontend)")
        if spec.align not in ("end", "center"):
            raise ValueError(f"unknown frontend align {spec.align!r}; expected end or center")
        self.spec = spec
        self.layer = None  # nnAudio's layer, when built
        if kernels is None or spec.kind == "mfcc":
            self.layer = self.nnaudio_layer(spec)
            mel = self.layer.melspec_layer if spec.kind == "mfcc" else self.layer
            kernels = kernels or {"window": mel.stft.wcos[0, 0], "mel_basis": mel.mel_basis}
        spec.check_kernels(kernels)
        window, mel_basis = kernels["window"], kernels["mel_basis"]

        # nnAudio computes its STFT as two strided conv1d passes (real, imaginary) with
        # 512-tap kernels: a DFT written out as a matrix, which on one CPU core was half of a
        # window's scoring time. The same transform as an FFT of the windowed frames gives the
        # same spectrum (to float rounding; tests/test_frontend.py holds it to nnAudio's own
        # output) in a fifth of the time. The window is nnAudio's (its zero-frequency cosine
        # kernel), and so are the mel basis and, for MFCC, the dB scaling and DCT.
        self.register_buffer("window", window.detach().float().clone(), persistent=False)  # (n_fft,)
        self.register_buffer("mel_basis_t", mel_basis.detach().float().T.contiguous(),
                             persistent=False)  # (bins, n_mels): frames x bins @ this needs no copy

    def kernels(self) -> dict[str, torch.Tensor]:
        """The window and mel basis, as a model file carries them."""
        return {"window": self.window.cpu().clone(), "mel_basis": self.mel_basis_t.T.cpu().contiguous()}

    @staticmethod
    def nnaudio_layer(spec: FrontendSpec, center: bool = True):
        """nnAudio's own layer for `spec`: its window, mel basis, dB scaling and DCT are ours."""
        from nnAudio import features as nn_features  # here: the daemon runs on a model's kernels without it

        common = dict(sr=spec.sample_rate, n_fft=spec.n_fft, win_length=spec.win_length, hop_length=spec.hop_length,
                      n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.fmax, center=center, pad_mode="reflect",
                      verbose=False)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its kernels even with verbose=False
            if spec.kind == "mfcc":
                return nn_features.MFCC(n_mfcc=spec.n_mfcc, **common)
            return nn_features.MelSpectrogram(power=2.0, **common)

    def power_mel(self, waveform: torch.Tensor, pad: bool = True) -> torch.Tensor:
        """(batch, samples) -> (batch, n_mels, frames) mel power, as nnAudio's MelSpectrogram(power=2).
        Without `pad`, centred frames are computed like end-aligned ones: only whole FFT spans."""
        n_fft, half, hop = self.spec.n_fft, self.spec.n_fft // 2, self.spec.hop_length
        if self.spec.align == "end" or not pad:
            if waveform.shape[-1] < n_fft:
                raise ValueError(f"a window of {waveform.shape[-1]} samples is shorter than n_fft {n_fft}")
            padded = waveform[..., (waveform.shape[-1] - n_fft) % hop :]  # the newest frame ends on the last sample
        else:
            if waveform.shape[-1] <= half:
                raise ValueError(f"a window of {waveform.shape[-1]} samples is too short for n_fft {n_fft}")
            padded = torch.nn.functional.pad(waveform.unsqueeze(1), (half, half), mode="reflect").squeeze(1)
        return mel_power(padded, self.window, self.mel_basis_t, hop)

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, pad: bool = True) -> torch.Tensor:
        """`pad`: False computes centred frames from samples that hold their whole FFT spans, as
        a stream does between a window's edges (stream/columns.py)."""
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        mel = self.power_mel(waveform, pad)
        if self.spec.kind == "logmel":
            return torch.log(mel + LOG_FLOOR)
        mfcc = self.layer._dct(self.layer._power_to_db(mel), norm="ortho")
        return mfcc[:, : self.spec.n_mfcc, :]


def pick_device(name: str, flag: str = "--compute (pipeline.device)") -> torch.device:
    """auto -> CUDA when present, else CPU; cuda when absent is a clear error naming `flag`,
    the option that asked (the daemon's --compute, the trainer's --device)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StreamemoError(f"{flag} cuda asked for, but torch sees no CUDA GPU; use auto or cpu", 2)
    if name not in ("cpu", "cuda"):
        raise StreamemoError(f"unknown {flag} {name!r}; expected auto, cpu or cuda", 2)
    return torch.device(name)


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets of the windows over a signal of `n_samples`: [0, hop, 2*hop, ...] while
    the window fits. A signal shorter than one window gets one window (zero-padded at the end).

    The daemon emits exactly these windows as audio arrives, so offline and live agree.
    """
    if n_samples <= window:
        return [0]
    return list(range(0, n_samples - window + 1, hop))


def frame_windows(signal: np.ndarray, window: int, hop: int) -> np.ndarray:
    """(n_windows, window) float32 views of `signal` per `window_starts`, zero-padded if short."""
    signal = np.asarray(signal, dtype=np.float32)
    if len(signal) < window:
        signal = np.pad(signal, (0, window - len(signal)))
    starts = window_starts(len(signal), window, hop)
    return np.stack([signal[s : s + window] for s in starts])


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and spread of a feature map: a speaker's voice, or the training set's
    average speaker that the model card carries (stream/adaptation.py uses them)."""

    mean: np.ndarray  # (n_features,)
    std: np.ndarray

    def to_dict(self) -> dict:
        return {"mean": [round(float(x), 6) for x in self.mean], "std": [round(float(x), 6) for x in self.std]}

    @classmethod
    def from_dict(cls, data: dict) -> BandStats:
        mean, std = np.asarray(data["mean"], np.float64), np.asarray(data["std"], np.float64)
        if mean.shape != std.shape or mean.ndim != 1:
            raise ValueError("speaker_norm mean and std must be lists of one length")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("speaker_norm mean must be finite and std finite and positive")
        return cls(mean, std)
