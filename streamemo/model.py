"""The networks, and loading/saving them as safetensors weights + a JSON card. No training code.

A model on disk is two files: `<name>.safetensors` (tensors only: loading never executes
code) and `<name>.json`, the card: labels, window, frontend parameters, architecture and
its hyper-parameters (so the network is rebuilt exactly), the weights' SHA-256, and
whatever the trainer records about data and evaluation.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import inspect
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

from streamemo import StreamemoError
from streamemo.config import Range
from streamemo.features import MAX_FRAMES, FrontendSpec
from streamemo.stream.adaptation import BandStats

CARD_FORMAT = "streamemo-model/1"


class ModelError(StreamemoError):
    pass


# --- networks -------------------------------------------------------------------------
# Each takes (batch, n_features, frames) features and returns (batch, n_classes) logits.
# Input normalisation (per-band mean/std fitted on the training set) is part of the model:
# one global statistic, not per-window, so loudness (an arousal cue) survives.


class _Normalise(nn.Module):
    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean[:, None]) / self.std[:, None]


class _MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d (kernel = stride, floor mode), with a faster path for inference.

    PyTorch's CPU max-pool kernel computes argmax indices even when nobody asks for them;
    on this network's small maps it took 40 % of a window's scoring time. At inference the
    same maxima come from elementwise maxima of strided views, about 10x faster. Training
    keeps the stock kernel, whose backward pass is the faster one.
    """

    def __init__(self, kernel):
        kernel = tuple(kernel)
        super().__init__(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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

    def __init__(self, n_features: int, n_classes: int, channels=(16, 32, 64),
                 pools=((2, 2), (2, 2), (2, 1)), proj: int = 128, lstm_hidden: int = 64, dropout: float = 0.2):
        super().__init__()
        self.norm = _Normalise(n_features)
        blocks, c_in, freq = [], 1, n_features
        for c, pool in zip(channels, pools, strict=True):
            blocks += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       _MaxPool2d(pool)]
            c_in, freq = c, freq // pool[0]
        self.convs = nn.Sequential(*blocks)
        self.proj = nn.Sequential(nn.Linear(c_in * freq, proj), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.lstm = nn.LSTM(proj, lstm_hidden, batch_first=True, bidirectional=True)
        self.attention = nn.Linear(2 * lstm_hidden, 1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * lstm_hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(self.norm(x).unsqueeze(1))  # (B, C, F', T')
        x = x.flatten(1, 2).transpose(1, 2)  # (B, T', C*F')
        x, _ = self.lstm(self.proj(x))
        weights = torch.softmax(self.attention(x), dim=1)  # (B, T', 1)
        return self.head((weights * x).sum(dim=1))


class CNN2D(nn.Module):
    """A 2D CNN on the log-mel image, global average pooled (the spectrogram-image notebooks)."""

    def __init__(self, n_features: int, n_classes: int, channels=(32, 64, 128, 128), dropout: float = 0.3):
        super().__init__()
        self.norm = _Normalise(n_features)
        blocks, c_in = [], 1
        for c in channels:
            blocks.append(_conv2d_block(c_in, c, (2, 2)))
            c_in = c
        self.convs = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(self.norm(x).unsqueeze(1))
        return self.head(x.mean(dim=(2, 3)))


class Conv1D(nn.Module):
    """A 1D CNN over the MFCC (or mel) sequence, mean+max pooled over time (the MFCC notebooks)."""

    def __init__(self, n_features: int, n_classes: int, channels=(128, 128, 256), kernel: int = 5,
                 dropout: float = 0.3):
        super().__init__()
        self.norm = _Normalise(n_features)
        layers, c_in = [], n_features
        for c in channels:
            layers += [nn.Conv1d(c_in, c, kernel, padding=kernel // 2, bias=False), nn.BatchNorm1d(c),
                       nn.ReLU(inplace=True), nn.MaxPool1d(2)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * c_in, n_classes))

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

    def __init__(self, n_features: int, n_classes: int, member_arch: str = "cnn_lstm",
                 member_params: dict | None = None, members: int = 2):
        super().__init__()
        if member_arch == "ensemble" or members < 1:
            raise ModelError("an ensemble holds at least one member of a plain architecture", 2)
        self.members = nn.ModuleList(build_network(member_arch, dict(member_params or {}), n_features, n_classes)
                                     for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x).float(), dim=-1) for m in self.members]).mean(0)
        return torch.log(probs.clamp_min(1e-12))


ARCHITECTURES = {"cnn_lstm": CNNLSTM, "cnn2d": CNN2D, "conv1d": Conv1D, "ensemble": Ensemble}


class _TransposedLinear(nn.Module):
    """nn.Linear with its weight stored transposed, for inference on the CPU.

    For the few rows of one window (25 frames into a 512 -> 128 projection) the CPU matrix
    product is about 4x faster on a contiguous (in, out) weight than on the transposed view
    nn.Linear passes it (28 against 110 us here, one thread). Same product, same outputs up
    to rounding.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight_t = nn.Parameter(linear.weight.detach().T.contiguous(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = rows @ self.weight_t if self.bias is None else torch.addmm(self.bias, rows, self.weight_t)
        return out.view(*x.shape[:-1], out.shape[-1])


def inference_network(network: nn.Module) -> nn.Module:
    """A copy of `network` for scoring only, faster on a CPU core with the same outputs up to
    rounding; the trained network itself is untouched:
    - each Conv followed by its BatchNorm becomes one Conv with the normalisation folded into
      its weights (one pass over the feature map fewer per layer);
    - each Linear keeps its weight transposed (`_TransposedLinear`)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fast = copy.deepcopy(network).eval()
    for module in list(fast.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Linear):
                setattr(module, name, _TransposedLinear(child))
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, (nn.Conv1d, nn.Conv2d)) and isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module[i], module[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return fast


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
}


def check_arch_params(arch: str, params, where: str) -> None:
    """Raises ModelError (exit 2) unless `params` are keyword arguments `arch` takes, each in
    range; `where` names their origin (a card, --arch-params) in the message."""
    if arch not in ARCHITECTURES:
        raise ModelError(f"{where}: unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}", 2)
    if not isinstance(params, dict):
        raise ModelError(f"{where}: the parameters of {arch} must be a JSON object, got {type(params).__name__}", 2)
    known = [k for k in inspect.signature(ARCHITECTURES[arch].__init__).parameters
             if k not in ("self", "n_features", "n_classes")]
    for key, value in params.items():
        if key not in known:
            raise ModelError(f"{where}: {arch} has no parameter {key!r}; it takes {', '.join(known)}", 2)
        if key == "member_arch":
            if value not in ARCHITECTURES or value == "ensemble":
                raise ModelError(f"{where}: member_arch must be one of cnn_lstm, cnn2d, conv1d, got {value!r}", 2)
        elif key == "member_params":
            check_arch_params(params.get("member_arch", "cnn_lstm"), value, where)
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


def build_network(arch: str, params: dict, n_features: int, n_classes: int) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}", 2)
    return ARCHITECTURES[arch](n_features, n_classes, **params)


# --- model files ----------------------------------------------------------------------


@dataclass
class Model:
    """A network with everything needed to feed it: labels, window, frontend."""

    name: str
    labels: list[str]
    window_s: float
    frontend: FrontendSpec
    arch: str
    arch_params: dict
    network: nn.Module
    card: dict = field(default_factory=dict)  # the whole card as loaded/saved (training, evaluation…)
    # Trained on speaker-normalised features: the reference every speaker is mapped onto
    # (stream/adaptation.py). None: features go to the network as the frontend gives them.
    speaker_norm: BandStats | None = None

    @property
    def id(self) -> str:
        """Name plus the first hex digits of the weights' hash: says exactly which weights ran."""
        digest = self.card.get("weights_sha256", "")
        return f"{self.name}@{digest[:12]}" if digest else self.name

    @classmethod
    def create(cls, name: str, labels, window_s: float, frontend: FrontendSpec, arch: str = "cnn_lstm",
               arch_params: dict | None = None) -> Model:
        arch_params = dict(arch_params or {})
        network = build_network(arch, arch_params, frontend.n_features, len(labels))
        return cls(name, list(labels), float(window_s), frontend, arch, arch_params, network)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())


def model_paths(path: str | Path) -> tuple[Path, Path]:
    """`models/x`, `models/x.json` or `models/x.safetensors` -> (weights, card)."""
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_model(model: Model, path: str | Path, extra_card: dict | None = None) -> tuple[Path, Path]:
    """Writes weights then card, each to a temporary file renamed into place: a crash never
    leaves a half-written model behind."""
    weights_path, card_path = model_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
    tmp_weights = _temp_beside(weights_path)
    try:
        # Bytes written by Python, not safetensors' save_file: that creates 0600 files, which
        # a service running as another user (systemd's streamemo user) could not read.
        blob = save_bytes(state, metadata={"format": CARD_FORMAT})
        tmp_weights.write_bytes(blob)
        digest = hashlib.sha256(blob).hexdigest()
        card = dict(model.card)
        card.update(extra_card or {})
        card.update(
            format=CARD_FORMAT,
            name=model.name,
            labels=model.labels,
            window_s=model.window_s,
            frontend=model.frontend.to_dict(),
            arch={"name": model.arch, "params": model.arch_params},
            n_parameters=model.n_parameters(),
            weights_sha256=digest,
            speaker_norm=None if model.speaker_norm is None else model.speaker_norm.to_dict(),
        )
        tmp_card = _temp_beside(card_path)
        tmp_card.write_text(json.dumps(card, indent=2) + "\n")
        os.replace(tmp_weights, weights_path)
        os.replace(tmp_card, card_path)
    finally:
        for tmp in (tmp_weights, card_path.with_name(card_path.name + ".tmp")):
            tmp.unlink(missing_ok=True)
    model.card = card
    return weights_path, card_path


def check_writable(path: str | Path, what: str) -> None:
    """Raises StreamemoError (exit 2) unless save_model could write the model `path`: said
    before hours of training, and without creating anything (its folders come at saving)."""
    for file in model_paths(path):
        if file.is_dir():
            raise StreamemoError(f"{what} {path}: {file} is a directory; choose another model path", 2)
    folder = model_paths(path)[0].parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the nearest folder that exists: save_model creates the rest in it
    try:
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        tempfile.TemporaryFile(dir=folder).close()  # the real test: modes, read-only mounts, quotas
    except OSError as e:
        raise StreamemoError(f"{what} {path}: cannot write in {folder} ({e.strerror}); "
                             "choose a folder you can write to", 2) from None


def _temp_beside(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


# The card's numbers, each with the range a frontend and a window can work with. A
# sample rate of 1, a hop of 0 frames or a window of 1e9 s would otherwise crash or hang the
# frontend, or allocate terabytes, at the first window.
CARD_LIMITS = {
    "window_s": Range(0.1, 60.0, "a window in seconds such as 2"),
    "frontend.sample_rate": Range(1000, 192000, "a model rate such as 16000", integer=True),
    # nnAudio builds (n_fft / 2 + 1) x n_fft kernels: 4096 takes 64 MB, 16384 would take 1 GB.
    "frontend.n_fft": Range(16, 4096, "an FFT size such as 512", integer=True),
    "frontend.win_length": Range(1, 4096, "an analysis window in samples, at most n_fft, such as 400", integer=True),
    "frontend.hop_length": Range(1, 4096, "a frame step in samples, at most n_fft, such as 160", integer=True),
    "frontend.n_mels": Range(1, 512, "a number of mel bands such as 64", integer=True),
    "frontend.n_mfcc": Range(1, 512, "a number of coefficients, at most n_mels, such as 40", integer=True),
    "frontend.fmin": Range(0.0, 96000.0, "a frequency in Hz below fmax, such as 50"),
    "frontend.fmax": Range(0.0, 96000.0, "a frequency in Hz, at most half the sample rate, such as 8000",
                           above=True),
}
MAX_LABELS = 256


def check_card(card: dict, card_path: Path) -> None:
    """Raises ModelError (exit 2) for a card field that is missing, of the wrong kind or out
    of range, naming the field and the file: the one place a card's values are judged."""
    where = f"model card {card_path}"
    labels = card.get("labels")
    if (not isinstance(labels, list) or not 2 <= len(labels) <= MAX_LABELS
            or not all(isinstance(x, str) and x.strip() for x in labels)):
        raise ModelError(f"{where}: labels must be a list of 2 to {MAX_LABELS} names, got {labels!r:.100}", 2)
    if len(set(labels)) != len(labels):
        twice = sorted({x for x in labels if labels.count(x) > 1})
        raise ModelError(f"{where}: labels name {', '.join(twice)} more than once; each class needs its own name", 2)
    if not isinstance(card.get("name"), str) or not card["name"]:
        raise ModelError(f"{where}: name must be a non-empty string", 2)
    frontend = card.get("frontend")
    if not isinstance(frontend, dict):
        raise ModelError(f"{where}: frontend must be an object of frontend settings", 2)
    fields = FrontendSpec().to_dict()
    unknown = sorted(set(frontend) - set(fields))
    if unknown:
        raise ModelError(f"{where}: frontend has unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}", 2)
    spec = {**fields, **frontend}
    if spec["kind"] not in ("logmel", "mfcc"):
        raise ModelError(f"{where}: frontend.kind must be logmel or mfcc, got {spec['kind']!r}", 2)
    values = {"window_s": card.get("window_s"), **{f"frontend.{k}": v for k, v in spec.items()}}
    for key, limit in CARD_LIMITS.items():
        limit.check(key, values[key], where, ModelError)
    if spec["win_length"] > spec["n_fft"] or spec["hop_length"] > spec["n_fft"]:
        raise ModelError(f"{where}: frontend.win_length and hop_length must be at most n_fft ({spec['n_fft']})", 2)
    if not spec["fmin"] < spec["fmax"] <= spec["sample_rate"] / 2:
        raise ModelError(f"{where}: frontend needs fmin < fmax <= sample_rate / 2, got fmin {spec['fmin']}, "
                         f"fmax {spec['fmax']}, sample_rate {spec['sample_rate']}", 2)
    if spec["kind"] == "mfcc" and spec["n_mfcc"] > spec["n_mels"]:
        raise ModelError(f"{where}: frontend.n_mfcc ({spec['n_mfcc']}) must be at most n_mels ({spec['n_mels']})", 2)
    window = round(card["window_s"] * spec["sample_rate"])
    if window <= spec["n_fft"]:
        raise ModelError(f"{where}: a window of {card['window_s']} s is shorter than one FFT of {spec['n_fft']} samples", 2)
    frames = FrontendSpec(**spec).frames(window)
    if frames > MAX_FRAMES:
        raise ModelError(f"{where}: window_s {card['window_s']} s at frontend.hop_length {spec['hop_length']} makes "
                         f"{frames} frames per window, more than {MAX_FRAMES}; shorten the window or lengthen the hop", 2)
    arch = card.get("arch")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise ModelError(f"{where}: arch must be an object with a name and params", 2)
    check_arch_params(arch["name"], arch.get("params", {}), where)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> Model:
    """Loads and checks a model; every problem is one ModelError line naming the file."""
    weights_path, card_path = model_paths(path)
    card = _read_card(card_path)
    check_card(card, card_path)
    if not weights_path.is_file():
        missing = "is a directory" if weights_path.is_dir() else "do not exist"
        raise ModelError(f"model weights {weights_path} {missing} (the card {card_path} needs its .safetensors beside it)")
    try:
        blob = weights_path.read_bytes()
    except OSError as e:
        raise ModelError(f"model weights {weights_path} cannot be read: {e.strerror}") from None
    expected = card.get("weights_sha256")
    if expected and hashlib.sha256(blob).hexdigest() != expected:
        raise ModelError(
            f"model weights {weights_path} do not match the card {card_path.name} (SHA-256 differs): "
            "truncated, or from another training; re-copy both files together"
        )
    try:
        state = load_bytes(blob)
    except (SafetensorError, ValueError) as e:
        raise ModelError(f"model weights {weights_path} are truncated or corrupt: {e}") from None
    try:
        frontend = FrontendSpec.from_dict(card["frontend"])
        model = Model(
            name=card["name"],
            labels=list(card["labels"]),
            window_s=float(card["window_s"]),
            frontend=frontend,
            arch=card["arch"]["name"],
            arch_params=dict(card["arch"].get("params", {})),
            network=None,
            card=card,
            speaker_norm=BandStats.from_dict(card["speaker_norm"]) if card.get("speaker_norm") else None,
        )
        if model.speaker_norm is not None and len(model.speaker_norm.mean) != frontend.n_features:
            raise ValueError(f"speaker_norm has {len(model.speaker_norm.mean)} bands, the frontend {frontend.n_features}")
        model.network = build_network(model.arch, model.arch_params, frontend.n_features, len(model.labels))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"model card {card_path} is missing or has a bad field: {e}") from None
    _load_state(model.network, state, weights_path, card_path)
    model.network.to(device).eval()
    return model


def _read_card(card_path: Path) -> dict:
    if not card_path.exists():
        raise ModelError(
            f"model card {card_path} does not exist; pass --model models/<name> "
            "(the .json and .safetensors pair) or train one with `streamemo train`"
        )
    if card_path.is_dir():
        raise ModelError(f"model card {card_path} is a directory; pass --model models/<name> "
                         "(the .json and .safetensors pair)")
    try:
        card = json.loads(card_path.read_text())
    except OSError as e:
        raise ModelError(f"model card {card_path} cannot be read: {e.strerror}") from None
    except ValueError as e:  # not UTF-8, not JSON, or an integer of more than 4300 digits
        raise ModelError(f"model card {card_path} is not valid JSON: {e}") from None
    except RecursionError:
        raise ModelError(f"model card {card_path} is nested too deep to be a model card") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ModelError(f"model card {card_path} is not a {CARD_FORMAT} card (its 'format' field differs)")
    return card


def _load_state(network: nn.Module, state: dict, weights_path: Path, card_path: Path) -> None:
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(
            f"model weights {weights_path} do not fit the architecture in {card_path.name}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise ModelError(
                f"model weights {weights_path} do not fit the architecture in {card_path.name}: "
                f"{key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
            )
    network.load_state_dict(state)
