"""OpenAI Whisper's audio encoder (openai/whisper model.py, MIT; WHISPER_LICENSE), the
reference implementation the packaged weights are verified with, and its log-mel in numpy.

The weights come from scripts/convert_whisper.py: openai's encoder state dict without the
"encoder." prefix, float16, with its dimensions in the safetensors metadata. Here they run in
float32. PROVENANCE.md says where they come from and how they were checked against
ctranslate2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from torch import Tensor, nn
from torch.nn import functional as F

N_CTX = 1500  # encoder frames in Whisper's 30 s input: the positional embedding's length


class MultiHeadAttention(nn.Module):
    """Full (non-causal) self-attention; names as openai's (the key has no bias)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        batch, frames, d_model = x.shape

        def heads(t: Tensor) -> Tensor:  # (B, T, d) -> (B, heads, T, d_head)
            return t.view(batch, frames, self.n_heads, -1).transpose(1, 2)

        # openai scales q and k by d_head**-0.25 each; sdpa's default scale d_head**-0.5 is the
        # same product. In float32 the softmax is float32.
        y = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)))
        return self.out(y.transpose(1, 2).reshape(batch, frames, d_model))


class ResidualAttentionBlock(nn.Module):
    """Pre-LayerNorm residual block: x + attn(attn_ln(x)), then + mlp(mlp_ln(x))."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.attn_ln = nn.LayerNorm(d_model)  # eps 1e-5, as openai's
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.mlp_ln = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Whisper's AudioEncoder: (B, n_mels, T) log-mel -> (B, ceil(T / 2), d_model).

    Two convolutions (kernel 3, padding 1; the second with stride 2), each followed by exact
    (erf) GELU, then the sinusoidal positional embedding and the residual blocks, then
    ln_post. Unlike openai's, inputs shorter than 30 s (T < 3000) are accepted: they get the
    embedding's first frames.
    """

    def __init__(self, n_mels: int, d_model: int, n_heads: int, n_layers: int, with_ln_post: bool):
        super().__init__()
        self.d_model = d_model
        self.conv1 = nn.Conv1d(n_mels, d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, padding=1)
        # A buffer, as in openai's encoder (saved in its state dict; no gradient).
        self.register_buffer("positional_embedding", torch.zeros(N_CTX, d_model))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(d_model, n_heads) for _ in range(n_layers))
        self.ln_post = nn.LayerNorm(d_model) if with_ln_post else None

    def forward(self, mel: Tensor, layers: int | None = None) -> Tensor:
        """The output of the first `layers` blocks (all, then ln_post when the model has it, if None)."""
        x = mel.to(self.conv1.weight.dtype)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        x = x.transpose(1, 2)  # (B, T', d_model)
        if x.shape[1] > N_CTX:
            raise ValueError(f"{mel.shape[-1]} mel frames: Whisper's encoder takes at most {2 * N_CTX}")
        x = x + self.positional_embedding[: x.shape[1]]
        for block in self.blocks if layers is None else self.blocks[:layers]:
            x = block(x)
        if layers is None and self.ln_post is not None:
            x = self.ln_post(x)
        return x


def load_encoder(path: str | Path | bytes) -> WhisperEncoder:
    """A converted encoder file (its path, or its bytes) -> WhisperEncoder in eval mode, float32.

    The dimensions come from the file's metadata; the state loads strictly. No pickle: the
    safetensors header is JSON and the rest raw tensor data."""
    blob = path if isinstance(path, bytes) else Path(path).read_bytes()
    meta = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])["__metadata__"]
    state = load_safetensors(blob)
    encoder = WhisperEncoder(n_mels=int(meta["n_mels"]), d_model=int(meta["d_model"]), n_heads=int(meta["n_heads"]),
                             n_layers=int(meta["n_layers"]), with_ln_post="ln_post.weight" in state)
    encoder.load_state_dict({k: t.float() for k, t in state.items()}, strict=True)
    return encoder.float().eval()


# openai/whisper audio.py's constants
SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_SAMPLES = 30 * SAMPLE_RATE  # pad_or_trim's length


def whisper_log_mel_reference(audio: np.ndarray) -> np.ndarray:
    """openai/whisper's log_mel_spectrogram(audio) (80 mels, 16 kHz) in numpy: (80, len // 160).

    Computed in float64, returned float32. The steps of openai's: torch.stft with a periodic
    Hann window of 400, hop 160, centred (reflect-padded 200 each side), the last frame
    dropped; power; librosa's Slaney mel filters (whisper's mel_filters.npz were made with
    librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)); log10 clamped at 1e-10; then at
    most 8 below its maximum; (log + 4) / 4. Pad to 30 s first (N_SAMPLES) to match Whisper's
    encoder input."""
    import librosa  # noqa: PLC0415 (verification and tests only)

    audio = np.asarray(audio, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # torch.hann_window (periodic)
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:-1]
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (frames, 201)
    filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=80).astype(np.float64)
    log_spec = np.log10(np.maximum(filters @ power.T, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)
