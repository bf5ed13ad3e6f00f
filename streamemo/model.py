"""Model files: a network (networks.py) with its labels, window and frontend, loaded and
saved as safetensors weights + a JSON card. No training code.

A model on disk is two files: `<name>.safetensors` (tensors only: loading never executes
code) and `<name>.json`, the card: labels, window, frontend parameters, architecture and
its hyper-parameters (so the network is rebuilt exactly), the weights' SHA-256, and
whatever the trainer records about data and evaluation.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

from streamemo import ModelError, StreamemoError
from streamemo.config import Range
from streamemo.features import MAX_FRAMES, BandStats, FrontendSpec
from streamemo.networks import build_network, check_arch_params

CARD_FORMAT = "streamemo-model/1"
KERNELS = "frontend."  # the frontend's kernels in a weights file: these keys, beside the network's


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
    # nnAudio's window and mel basis for `frontend` (features.Frontend.kernels), stored with
    # the weights so scoring needs no nnAudio; None (older files): nnAudio builds them.
    frontend_kernels: dict | None = None

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


BUNDLED = Path(__file__).parent / "models"  # the models shipped in the package (a link to models/ in a checkout)


def resolve_model(path: str | Path) -> Path:
    """A bare name that is not a model in the current folder ("small", "default") names a
    bundled model; anything else is a path."""
    path = Path(path)
    if len(path.parts) == 1 and not model_paths(path)[1].exists() and model_paths(BUNDLED / path.name)[1].exists():
        return BUNDLED / path.name
    return path


def save_model(model: Model, path: str | Path, extra_card: dict | None = None) -> tuple[Path, Path]:
    """Writes weights then card, each to a temporary file renamed into place: a crash never
    leaves a half-written model behind."""
    weights_path, card_path = model_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
    if model.frontend_kernels is None:
        from streamemo.features import build_frontend

        model.frontend_kernels = build_frontend(model.frontend).kernels()
    state.update({KERNELS + k: v.contiguous() for k, v in model.frontend_kernels.items()})
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
    if spec["kind"] not in ("logmel", "mfcc", "whisper"):
        raise ModelError(f"{where}: frontend.kind must be logmel, mfcc or whisper, got {spec['kind']!r}", 2)
    if spec["kind"] == "whisper":
        _check_encoder(spec, card.get("window_s"), where)
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


# What Whisper's encoder was trained on; a card asking for other mel settings is not its input.
WHISPER_MEL = {"sample_rate": 16000, "n_fft": 400, "win_length": 400, "hop_length": 160, "n_mels": 80,
               "fmin": 0.0, "fmax": 8000.0}
ENCODER_LIMITS = {
    "encoder_width": Range(1, 4096, "the encoder's width such as 384", integer=True),
    "encoder_layers": Range(1, 64, "a number of encoder layers such as 2", integer=True),
    "block_frames": Range(1, 750, "encoder frames per block such as 12", integer=True),
    "context_frames": Range(0, 1488, "encoder frames of left context such as 24", integer=True),
}


def _check_encoder(spec: dict, window_s, where: str) -> None:
    """A whisper frontend's fields: Whisper's own mel settings, a shipped encoder named by a
    plain file name with its SHA-256, and a window of whole blocks."""
    for key, value in WHISPER_MEL.items():
        if spec[key] != value:
            raise ModelError(f"{where}: a whisper frontend needs {key} {value:g} (Whisper's own), got {spec[key]!r}", 2)
    name = spec["encoder"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise ModelError(f"{where}: frontend.encoder must name a shipped encoder file such as "
                         f"whisper-tiny.en-2, got {name!r:.100}", 2)
    if not isinstance(spec["encoder_sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", spec["encoder_sha256"]):
        raise ModelError(f"{where}: frontend.encoder_sha256 must be the encoder file's SHA-256 (64 hex digits)", 2)
    for key, limit in ENCODER_LIMITS.items():
        limit.check(f"frontend.{key}", spec[key], where, ModelError)
    if spec["context_frames"] + spec["block_frames"] > 1500:
        raise ModelError(f"{where}: frontend.block_frames + context_frames must be at most 1500 (30 s, Whisper's "
                         "longest input)", 2)
    block = spec["block_frames"] * 2 * spec["hop_length"]
    if isinstance(window_s, (int, float)) and round(window_s * spec["sample_rate"]) % block:
        raise ModelError(f"{where}: window_s {window_s} s is not a whole number of the encoder's "
                         f"{block / spec['sample_rate']:g} s blocks", 2)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> Model:
    """Loads and checks a model (a path, or a bundled model's name: `resolve_model`); every
    problem is one ModelError line naming the file."""
    weights_path, card_path = model_paths(resolve_model(path))
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
    if frontend.kind == "whisper":  # the encoder it was trained on, by name and hash, or no model
        from streamemo.encoder.frontend import encoder_bytes

        try:
            encoder_bytes(frontend)
        except ModelError as e:
            raise ModelError(f"model card {card_path}: {e}", 2) from None
    kernels = {k[len(KERNELS):]: state.pop(k) for k in list(state) if k.startswith(KERNELS)}
    if kernels:
        try:
            frontend.check_kernels(kernels)
        except (KeyError, ValueError) as e:
            raise ModelError(f"model weights {weights_path}: the frontend kernels do not fit {card_path.name} ({e})") from None
        model.frontend_kernels = kernels
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
