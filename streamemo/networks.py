"""The networks. Each takes (batch, n_features, frames) features and returns (batch,
n_classes) logits. Input normalisation (per-band mean/std fitted on the training set) is
part of the network: one global statistic, not per-window, so loudness (an arousal cue)
survives. No training code, no file format (model.py)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from streamemo import ModelError
from streamemo.config import Range


# Each network's hyper-parameters, typed, with the defaults the shipped model uses. A card
# holds them as a JSON object (`resolved_params`), so a model rebuilds the same network even
# if these defaults change later.


@dataclass(frozen=True)
class CNNLSTMParams:
    channels: list = field(default_factory=lambda: [16, 32, 64])
    pools: list = field(default_factory=lambda: [[2, 2], [2, 2], [2, 1]])  # (frequency, time) per block
    proj: int = 128
    lstm_hidden: int = 64
    dropout: float = 0.2
    # "valid" (the shipped model, and the recipe's): in time, convolutions never reach past a
    # window's edges and pooling groups frames from the newest back, so a column of the conv
    # stack is the same in every window that holds it and a stream computes each once
    # (stream/columns.py). "same": zero-padded in time, pooled from the oldest; the default
    # here because cards written before this choice existed mean it.
    time_padding: str = "same"


@dataclass(frozen=True)
class EncoderHeadParams:
    channels: list = field(default_factory=lambda: [128, 128])  # 1D convolutions over time
    kernel: int = 5
    pool: int = 2  # frames per column after the convolutions (time max-pool)
    lstm_hidden: int = 64
    dropout: float = 0.3


@dataclass(frozen=True)
class CNN2DParams:
    channels: list = field(default_factory=lambda: [32, 64, 128, 128])
    dropout: float = 0.3


@dataclass(frozen=True)
class Conv1DParams:
    channels: list = field(default_factory=lambda: [128, 128, 256])
    kernel: int = 5
    dropout: float = 0.3


@dataclass(frozen=True)
class EnsembleParams:
    member_arch: str = "cnn_lstm"
    member_params: dict = field(default_factory=dict)
    members: int = 2


class _Normalise(nn.Module):
    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean[:, None]) / self.std[:, None]


class _MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d (kernel = stride, floor mode), with a faster path for inference.
    `from_end`: the frames left over in time are the oldest, not the newest, so the newest
    frame is always pooled (and windows a whole stride apart pool the same groups).

    PyTorch's CPU max-pool kernel computes argmax indices even when nobody asks for them;
    on this network's small maps it took 40 % of a window's scoring time. At inference the
    same maxima come from elementwise maxima of strided views, about 10x faster. Training
    keeps the stock kernel, whose backward pass is the faster one.
    """

    def __init__(self, kernel, from_end: bool = False):
        kernel = tuple(kernel)
        super().__init__(kernel)
        self.from_end = from_end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.from_end:
            x = x[..., x.shape[-1] % self.kernel_size[1] :]
        if self.training or torch.is_grad_enabled():
            return super().forward(x)
        kf, kt = self.kernel_size
        f, t = x.shape[-2] // kf * kf, x.shape[-1] // kt * kt
        x = x[..., :f, :t]
        out = x[..., 0::kf, :]
        for i in range(1, kf):
            out = torch.maximum(out, x[..., i::kf, :])
        x, out = out, out[..., 0::kt]
        for i in range(1, kt):
            out = torch.maximum(out, x[..., i::kt])
        return out


def _conv2d_block(c_in: int, c_out: int, pool: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        _MaxPool2d(pool),
    )


class CNNLSTM(nn.Module):
    """2D conv blocks over the time-frequency map, a BiLSTM over time, attention pooling.

    Shaped for a CPU budget of a few milliseconds per 2 s window: one 3x3 convolution per
    block (not two) with pooling after each, so the costly full-resolution layer has few
    channels. 2D kernels slide along frequency too, so a pattern learnt at one speaker's
    pitch transfers to another's; treating the mel bands as channels of a 1D network
    trains faster but generalised much worse across speakers here (benchmarks/RESULTS-train.md).
    """

    def __init__(self, n_features: int, n_classes: int, p: CNNLSTMParams):
        super().__init__()
        if p.time_padding not in ("valid", "same"):
            raise ModelError(f"cnn_lstm time_padding must be valid or same, got {p.time_padding!r}", 2)
        self.streams = p.time_padding == "valid"  # see CNNLSTMParams.time_padding
        self.norm = _Normalise(n_features)
        blocks, c_in, freq = [], 1, n_features
        for c, pool in zip(p.channels, p.pools, strict=True):
            padding = (1, 0) if self.streams else 1  # (frequency, time)
            blocks += [nn.Conv2d(c_in, c, 3, padding=padding, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       _MaxPool2d(pool, from_end=self.streams)]
            c_in, freq = c, freq // pool[0]
        self.time_stride = math.prod(pool[1] for pool in p.pools)  # frames per column
        self.convs = nn.Sequential(*blocks)
        self.proj = nn.Sequential(nn.Linear(c_in * freq, p.proj), nn.ReLU(inplace=True), nn.Dropout(p.dropout))
        self.lstm = nn.LSTM(p.proj, p.lstm_hidden, batch_first=True, bidirectional=True)
        self.attention = nn.Linear(2 * p.lstm_hidden, 1)
        self.head = nn.Sequential(nn.Dropout(p.dropout), nn.Linear(2 * p.lstm_hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequence(self.encode(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_features, frames) -> (B, T', proj) columns: the per-frame part."""
        x = self.convs(self.norm(x).unsqueeze(1))  # (B, C, F', T')
        return self.proj(x.flatten(1, 2).transpose(1, 2))  # (B, T', C*F') -> (B, T', proj)

    def sequence(self, columns: torch.Tensor) -> torch.Tensor:
        """(B, T', proj) columns -> (B, n_classes) logits: the part that sees the whole window."""
        x, _ = self.lstm(columns)
        weights = torch.softmax(self.attention(x), dim=1)  # (B, T', 1)
        return self.head((weights * x).sum(dim=1))


class EncoderHead(nn.Module):
    """The CNN-LSTM over a pretrained encoder's features (`FrontendSpec.kind` "whisper").

    Its bands are learnt features, not frequencies, so the convolutions are 1D over time with
    the bands as channels (a 2D kernel sliding along them would assume an order they do not
    have); then a BiLSTM over the pooled columns and attention pooling, as in `CNNLSTM`.
    """

    def __init__(self, n_features: int, n_classes: int, p: EncoderHeadParams):
        super().__init__()
        self.norm = _Normalise(n_features)
        layers, c_in = [nn.Dropout(p.dropout)], n_features
        for c in p.channels:
            layers += [nn.Conv1d(c_in, c, p.kernel, padding=p.kernel // 2, bias=False), nn.BatchNorm1d(c),
                       nn.ReLU(inplace=True)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.pool = p.pool
        self.lstm = nn.LSTM(c_in, p.lstm_hidden, batch_first=True, bidirectional=True)
        self.attention = nn.Linear(2 * p.lstm_hidden, 1)
        self.head = nn.Sequential(nn.Dropout(p.dropout), nn.Linear(2 * p.lstm_hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(self.norm(x))  # (B, C, T)
        if self.pool > 1:
            x = nn.functional.max_pool1d(x, self.pool)
        x, _ = self.lstm(x.transpose(1, 2))  # (B, T', 2H)
        weights = torch.softmax(self.attention(x), dim=1)
        return self.head((weights * x).sum(dim=1))


class CNN2D(nn.Module):
    """A 2D CNN on the log-mel image, global average pooled (the spectrogram-image notebooks)."""

    def __init__(self, n_features: int, n_classes: int, p: CNN2DParams):
        super().__init__()
        self.norm = _Normalise(n_features)
        blocks, c_in = [], 1
        for c in p.channels:
            blocks.append(_conv2d_block(c_in, c, (2, 2)))
            c_in = c
        self.convs = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(p.dropout), nn.Linear(c_in, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(self.norm(x).unsqueeze(1))
        return self.head(x.mean(dim=(2, 3)))


class Conv1D(nn.Module):
    """A 1D CNN over the MFCC (or mel) sequence, mean+max pooled over time (the MFCC notebooks)."""

    def __init__(self, n_features: int, n_classes: int, p: Conv1DParams):
        super().__init__()
        self.norm = _Normalise(n_features)
        layers, c_in = [], n_features
        for c in p.channels:
            layers += [nn.Conv1d(c_in, c, p.kernel, padding=p.kernel // 2, bias=False), nn.BatchNorm1d(c),
                       nn.ReLU(inplace=True), nn.MaxPool1d(2)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(p.dropout), nn.Linear(2 * c_in, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(self.norm(x))
        return self.head(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1))


class Ensemble(nn.Module):
    """Several networks of one architecture, trained apart (different seeds), scored together.

    Returns the log of the members' mean probability, so softmax of the output is that mean:
    the daemon and the evaluation need not know they run an ensemble. Seeds alone move a
    fold's UA by up to 3.5 points here; two seeds averaged gained 1.1 to 1.5 over one, at
    twice the cost per window (benchmarks/RESULTS-train.md); `--ensemble N` trains one.
    """

    def __init__(self, n_features: int, n_classes: int, p: EnsembleParams):
        super().__init__()
        if p.member_arch == "ensemble" or p.members < 1:
            raise ModelError("an ensemble holds at least one member of a plain architecture", 2)
        self.members = nn.ModuleList(build_network(p.member_arch, dict(p.member_params), n_features, n_classes)
                                     for _ in range(p.members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x).float(), dim=-1) for m in self.members]).mean(0)
        return torch.log(probs.clamp_min(1e-12))


# name -> (network, its hyper-parameters)
ARCHITECTURES = {"cnn_lstm": (CNNLSTM, CNNLSTMParams), "encoder_head": (EncoderHead, EncoderHeadParams),
                 "cnn2d": (CNN2D, CNN2DParams),
                 "conv1d": (Conv1D, Conv1DParams), "ensemble": (Ensemble, EnsembleParams)}


# Each network's hyper-parameters: a number, or a list (of lists) of numbers, each in range.
# A card or `train --arch-params` naming one the network does not take, or a negative width,
# is one line naming it, not a TypeError or a torch traceback from deep inside a layer.
ARCH_LIMITS = {
    "channels": Range(1, 1024, "channel counts such as [16, 32, 64]", integer=True),
    "pools": Range(1, 16, "pooling factors (frequency, time) such as [[2, 2], [2, 2], [2, 1]]", integer=True),
    "proj": Range(1, 4096, "a width such as 128", integer=True),
    "lstm_hidden": Range(1, 4096, "a width such as 64", integer=True),
    "kernel": Range(1, 63, "a kernel length such as 5", integer=True),
    "dropout": Range(0.0, 0.95, "a probability such as 0.2"),
    "members": Range(1, 16, "a number of networks such as 2", integer=True),
    "pool": Range(1, 16, "frames pooled per column such as 2", integer=True),
}

CHOICES = {"time_padding": ("valid", "same")}  # parameters that name a choice, not a number


def check_arch_params(arch: str, params, where: str) -> None:
    """Raises ModelError (exit 2) unless `params` are keyword arguments `arch` takes, each in
    range; `where` names their origin (a card, --arch-params) in the message."""
    if arch not in ARCHITECTURES:
        raise ModelError(f"{where}: unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}", 2)
    if not isinstance(params, dict):
        raise ModelError(f"{where}: the parameters of {arch} must be a JSON object, got {type(params).__name__}", 2)
    known = [f.name for f in fields(ARCHITECTURES[arch][1])]
    for key, value in params.items():
        if key not in known:
            raise ModelError(f"{where}: {arch} has no parameter {key!r}; it takes {', '.join(known)}", 2)
        if key == "member_arch":
            if value not in ARCHITECTURES or value == "ensemble":
                raise ModelError(f"{where}: member_arch must be one of cnn_lstm, encoder_head, cnn2d, conv1d, "
                                 f"got {value!r}", 2)
        elif key == "member_params":
            check_arch_params(params.get("member_arch", "cnn_lstm"), value, where)
        elif key in CHOICES:
            if value not in CHOICES[key]:
                raise ModelError(f"{where}: {arch} parameter {key} must be one of {', '.join(CHOICES[key])}, "
                                 f"got {value!r}", 2)
        else:
            numbers = value if isinstance(value, list) else [value]
            if key == "pools":  # pairs: (frequency, time)
                if not all(isinstance(n, list) and len(n) == 2 for n in numbers):
                    raise ModelError(f"{where}: pools must be a list of [frequency, time] pairs, got {value!r}", 2)
                numbers = [n for pair in numbers for n in pair]
            if not numbers or len(numbers) > 16:
                raise ModelError(f"{where}: {key} must hold 1 to 16 values, got {value!r}", 2)
            for n in numbers:
                ARCH_LIMITS[key].check(f"{arch} parameter {key}", n, where, ModelError)
    if "channels" in params and "pools" in params and len(params["channels"]) != len(params["pools"]):
        raise ModelError(f"{where}: {arch} needs one pool per channel block: {len(params['channels'])} channels, "
                         f"{len(params['pools'])} pools", 2)


def resolved_params(arch: str, params: dict) -> dict:
    """`params` with the network's defaults filled in, as plain JSON values (a card's form)."""
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}", 2)
    return json.loads(json.dumps(asdict(ARCHITECTURES[arch][1](**params))))


def build_network(arch: str, params: dict, n_features: int, n_classes: int) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}", 2)
    network, typed = ARCHITECTURES[arch]
    return network(n_features, n_classes, typed(**params))


