"""Whisper's log-mel and its frozen encoder as a frontend: waveform -> (d_model, frames) at 50
frames a second, computed in fixed blocks so that a stream computes each block once.

Whisper attends over its whole 30 s input, so no frame of it is final until the input ends.
A stream needs frames that are, so here the encoder runs on short inputs: each block of
`block_frames` encoder frames (0.24 s, the daemon's hop) together with the
`context_frames` before it (its left context), and keeps the block's own outputs. Every
sample therefore passes the encoder (block + context) / block times, a bound that does not
grow with the stream; nothing looks ahead of a block's last sample.

One definition serves training, `classify` and the daemon: the blocks of a window lie on
the grid that ends at the window's last sample, and the context comes from the audio before
them (zeros before the stream's first sample). A clip's features are its blocks from its
first sample on; the trainer's crops at the daemon's hop are exactly the daemon's windows.

Frames differ from Whisper's own in three documented ways, none of which its encoder minds:
- mel frame m covers the 400 samples that end at sample 160 (m + 1) (Whisper centres it on
  160 m): no frame needs a sample from the future;
- the two convolutions are "valid", reading three more mel frames of the past instead of
  zero-padding each input's edges, so encoder frame j ends at sample 320 (j + 1);
- the dynamic-range clamp is fixed (`LOG_FLOOR`), not 8 below the loudest frame of the
  input: a stream has no loudest frame to wait for.
"""

from __future__ import annotations

import hashlib
import math
from importlib import resources

import numpy as np
import torch
from torch import nn

from streamemo import ModelError

# Whisper's audio constants (openai/whisper audio.py), units in the names.
SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms between mel frames; the encoder's stride-2 convolution makes it 20 ms
N_MELS = 80
# The clamp's fixed reference: log10 of the largest mel power a full-scale input can reach
# in any band (a full-scale sine at a band's centre gives 2.41 with these filters;
# `full_scale_log_mel` computes it). Whisper clamps 8 (80 dB) below its input's loudest
# frame; here 8 below full scale, so only frames quieter than -80 dBFS are clamped.
FULL_SCALE_LOG10 = 2.4
LOG_FLOOR = FULL_SCALE_LOG10 - 8.0
ENCODER_STRIDE = 2  # mel frames per encoder frame
CONV_PAST = 3  # mel frames of the past the two valid convolutions read beyond a chunk's frames


def encoder_path(name: str):
    """The packaged encoder file `name` (e.g. "whisper-tiny.en-2")."""
    return resources.files("streamemo.encoder") / f"{name}.safetensors"


def encoder_bytes(spec) -> bytes:
    """The packaged encoder file `spec` names, checked against the SHA-256 it names: a model
    never runs on an encoder other than the one it was trained on."""
    path = encoder_path(spec.encoder)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise ModelError(f"encoder {spec.encoder!r} is not in this installation ({path}: {e.strerror}); "
                         "reinstall streamemo or use a model trained on a shipped encoder", 2) from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != spec.encoder_sha256:
        raise ModelError(f"encoder {spec.encoder} ({digest[:12]}) is not the one the model was trained on "
                         f"({spec.encoder_sha256[:12]}); use the streamemo version the model was made with", 2)
    return blob


def scale_log_mel(power: torch.Tensor) -> torch.Tensor:
    """Mel power -> Whisper's scaled log-mel with the fixed clamp: (max(log10 p, floor) + 4) / 4."""
    return (torch.log10(power.clamp_min(1e-10)).clamp_min(LOG_FLOOR) + 4.0) / 4.0


class EncoderFrontend(nn.Module):
    """(batch, samples) float waveform in [-1, 1] -> (batch, d_model, frames) encoder features.

    `frames` is 12 per whole block of 3840 samples, from the input's first sample: a stream's
    features up to its newest whole block, the input taken to start the stream (zeros before it).
    """

    def __init__(self, spec, kernels: dict[str, torch.Tensor] | None = None):
        super().__init__()
        from streamemo.encoder.whisper import load_encoder  # noqa: PLC0415 (heavy only for these models)
        from streamemo.features import Frontend  # noqa: PLC0415 (features imports this module's users)

        self.spec = spec
        if kernels is None:  # nnAudio's Hann window and Slaney mel basis, as the log-mel frontend builds them
            layer = Frontend.nnaudio_layer(spec, center=False)
            kernels = {"window": layer.stft.wcos[0, 0], "mel_basis": layer.mel_basis}
        spec.check_kernels(kernels)
        self.register_buffer("window", kernels["window"].detach().float().clone(), persistent=False)
        self.register_buffer("mel_basis_t", kernels["mel_basis"].detach().float().T.contiguous(), persistent=False)
        self.encoder = load_encoder(encoder_bytes(spec))
        if self.encoder.d_model != spec.encoder_width:
            raise ModelError(f"encoder {spec.encoder} is {self.encoder.d_model} wide, the model expects "
                             f"{spec.encoder_width}", 2)
        if not 1 <= spec.encoder_layers <= len(self.encoder.blocks):
            raise ModelError(f"encoder {spec.encoder} has {len(self.encoder.blocks)} layers; the model asks for "
                             f"{spec.encoder_layers}", 2)
        self.encoder.blocks = self.encoder.blocks[: spec.encoder_layers]
        # A chunk is block + context frames long: the rest of Whisper's 30 s of positions is never read.
        self.encoder.positional_embedding = self.encoder.positional_embedding[: spec.block_frames + spec.context_frames].clone()
        self.encoder.requires_grad_(False)
        self.block = spec.block_frames
        self.context = spec.context_frames
        self.block_samples = spec.block_frames * ENCODER_STRIDE * HOP_LENGTH
        # Samples of the past a block's chunk reads before the block: its context's and the
        # convolutions' mel frames, and the first of them reaching N_FFT - HOP_LENGTH further back.
        self.past_samples = (ENCODER_STRIDE * self.context + CONV_PAST) * HOP_LENGTH + N_FFT - HOP_LENGTH
        # Samples the convolutions of one block's own frames read before the block.
        self.conv_past_samples = CONV_PAST * HOP_LENGTH + N_FFT - HOP_LENGTH

    def kernels(self) -> dict[str, torch.Tensor]:
        return {"window": self.window.cpu().clone(), "mel_basis": self.mel_basis_t.T.cpu().contiguous()}

    def log_mel(self, samples: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, 80, frames): frame m is the N_FFT samples ending at
        160 m + N_FFT, whole spans only."""
        from streamemo.features import mel_power  # noqa: PLC0415 (features imports this module's users)

        return scale_log_mel(mel_power(samples, self.window, self.mel_basis_t, HOP_LENGTH))

    def convolve(self, mel: torch.Tensor) -> torch.Tensor:
        """(n, 80, 2 T + CONV_PAST) mel frames -> (n, d_model, T): Whisper's two convolutions,
        valid, so an encoder frame's value depends on its own five mel frames only and is the
        same in every chunk that holds it (a stream computes it once: stream/blocks.py)."""
        enc = self.encoder
        x = nn.functional.gelu(nn.functional.conv1d(mel, enc.conv1.weight, enc.conv1.bias))
        return nn.functional.gelu(nn.functional.conv1d(x, enc.conv2.weight, enc.conv2.bias, stride=ENCODER_STRIDE))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d_model, context + block) convolved chunks -> (n, d_model, block): the kept
        layers over each chunk, its last `block` frames kept."""
        x = x.transpose(1, 2) + self.encoder.positional_embedding[: x.shape[-1]]
        for block in self.encoder.blocks[:-1]:
            x = block(x)
        return _last_block(self.encoder.blocks[-1], x, self.block).transpose(1, 2)

    def encode_chunks(self, mel: torch.Tensor) -> torch.Tensor:
        """(n, 80, 2 (context + block) + CONV_PAST) mel chunks -> (n, d_model, block)."""
        return self.attend(self.convolve(mel))

    def blocks_ending(self, audio: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """(batch, samples) -> (batch, d_model, n_blocks * block): the features of the
        `n_blocks` blocks that end at the input's last sample, their context read from the
        input (which must hold past_samples before the first of them; zeros there when the
        stream had not started)."""
        batch, need = audio.shape[0], n_blocks * self.block_samples + self.past_samples
        mel = self.log_mel(audio[:, audio.shape[-1] - need :])  # (batch, 80, frames)
        span = ENCODER_STRIDE * (self.context + self.block) + CONV_PAST
        chunks = mel.unfold(-1, span, ENCODER_STRIDE * self.block)  # (batch, 80, n_blocks, span)
        chunks = chunks.permute(0, 2, 1, 3).reshape(batch * n_blocks, N_MELS, span)
        out = self.encode_chunks(chunks).reshape(batch, n_blocks, -1, self.block)
        return out.permute(0, 2, 1, 3).reshape(batch, -1, n_blocks * self.block)

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, pad: bool = True) -> torch.Tensor:
        """A stream's features from its first sample: every whole block of `waveform`. `pad` is
        `Frontend`'s (the scorer passes it); blocks have no padded frames to leave out."""
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        n_blocks = waveform.shape[-1] // self.block_samples
        if n_blocks == 0:
            raise ValueError(f"{waveform.shape[-1]} samples hold no whole encoder block of {self.block_samples}")
        whole = waveform[:, : n_blocks * self.block_samples]
        return self.blocks_ending(nn.functional.pad(whole, (self.past_samples, 0)), n_blocks)


def _last_block(block, x: torch.Tensor, keep: int) -> torch.Tensor:
    """Whisper's residual block (encoder/whisper.py) for the last `keep` frames of `x` only:
    the context's frames are keys and values to them, but their own outputs would be thrown
    away, so their queries, attention output and MLP are not computed (a third of the cost
    of the last layer). The same numbers as `block(x)[:, -keep:]`, to float rounding."""
    attn, (batch, frames, width) = block.attn, x.shape
    h = block.attn_ln(x)

    def heads(t: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, heads, T, d_head)
        return t.view(batch, t.shape[1], attn.n_heads, -1).transpose(1, 2)

    y = nn.functional.scaled_dot_product_attention(heads(attn.query(h[:, -keep:])), heads(attn.key(h)),
                                                   heads(attn.value(h)))
    x = x[:, -keep:] + attn.out(y.transpose(1, 2).reshape(batch, keep, width))
    return x + block.mlp(block.mlp_ln(x))


def full_scale_log_mel(kernels: dict[str, torch.Tensor]) -> float:
    """log10 of the largest mel power a full-scale sine reaches in any band (FULL_SCALE_LOG10's origin)."""
    window, basis = kernels["window"].double().numpy(), kernels["mel_basis"].double().numpy()
    best = -math.inf
    for f in np.linspace(20, 7980, 2000):
        t = np.arange(N_FFT) / SAMPLE_RATE
        power = np.abs(np.fft.rfft(np.sin(2 * np.pi * f * t) * window)) ** 2
        best = max(best, float(np.log10((basis @ power).max())))
    return best


def encoder_spec(name: str, layers: int, block_frames: int, context_frames: int):
    """A FrontendSpec for the packaged encoder `name`, naming its SHA-256 and width (read from
    the safetensors header: a JSON object, nothing executed)."""
    import json

    from streamemo.features import FrontendSpec  # noqa: PLC0415

    blob = encoder_path(name).read_bytes()
    header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
    return FrontendSpec(kind="whisper", sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=N_FFT,
                        hop_length=HOP_LENGTH, n_mels=N_MELS, fmin=0.0, fmax=SAMPLE_RATE / 2,
                        encoder=name, encoder_sha256=hashlib.sha256(blob).hexdigest(),
                        encoder_width=header["conv1.bias"]["shape"][0], encoder_layers=layers,
                        block_frames=block_frames, context_frames=context_frames)
