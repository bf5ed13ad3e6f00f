"""One configuration object for the daemon: frozen dataclasses with every default here.

A TOML file (`--config`) sets any field by section and name; command-line flags override
the file. `Config.to_toml()` prints the merged result (`streamemo run --print-config`).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from streamemo import StreamemoError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = PROJECT_ROOT / "models" / "default"


@dataclass(frozen=True)
class AudioConfig:
    # "default" (the system's default input), a device index, a device-name substring,
    # an audio file path, or "-" for raw PCM on stdin.
    source: str = "default"
    realtime: bool = True  # file sources: pace at real time (True) or run as fast as possible
    stdin_rate: int = 16000  # raw PCM on stdin: sample rate in Hz
    stdin_channels: int = 1  # raw PCM on stdin: interleaved channels, signed 16-bit little-endian
    # Microphone rate: 0 opens the device at its native rate and resamples with soxr (best
    # quality everywhere); a rate such as 16000 asks the device or sound server to deliver it,
    # skipping soxr's ~20 ms of buffering where the server resamples anyway (PulseAudio, PipeWire).
    capture_rate: int = 0
    block_s: float = 0.01  # PortAudio block: 10 ms divides the usual hops, so windows end on a block
    ring_s: float = 10.0  # ring buffer capacity: how long processing may stall before overflow


@dataclass(frozen=True)
class PipelineConfig:
    window_s: float | None = None  # None: the window the model was trained on (its card)
    hop_s: float = 0.25  # one message per hop
    device: str = "auto"  # torch device for frontend and model: auto | cpu | cuda
    threads: int = 1  # torch CPU threads: one window is too small to gain from more, and idle
    #                   worker threads spinning between hops cost CPU for nothing
    vad_threshold_db: float = -55.0  # a 20 ms frame quieter than this (dBFS) never counts as voiced
    vad_margin_db: float = 10.0  # ... and it must stand this far above the window's noise floor
    vad_min_voiced: float = 0.15  # fraction of the window's frames that must be voiced
    smoothing_tau_s: float = 1.0  # exponential smoothing time constant, in seconds
    hysteresis: float = 0.05  # a new top label must lead the current one by this much
    reset_after_s: float = 5.0  # after this long unvoiced, the smoother starts afresh
    # Speaker adaptation (stream/adaptation.py; models trained with it only): the voice's
    # band statistics start as this many seconds of the training set's average speaker and
    # forget what was heard with this time constant (seconds of voiced audio).
    speaker_adaptation: bool = True
    adaptation_prior_s: float = 10.0
    adaptation_memory_s: float = 600.0

    def __post_init__(self):
        for key in ("hop_s", "adaptation_prior_s", "adaptation_memory_s"):
            if not getattr(self, key) > 0:
                raise StreamemoError(f"pipeline.{key} must be positive, got {getattr(self, key)!r}", 2)


@dataclass(frozen=True)
class ModelConfig:
    path: str = str(DEFAULT_MODEL)  # models/<name>: <name>.safetensors + <name>.json


@dataclass(frozen=True)
class PublishConfig:
    bind: str = "tcp://127.0.0.1:5556"  # loopback TCP; ipc:///path also accepted
    hwm: int = 1000  # messages queued per subscriber before ZeroMQ drops (never blocks)
    status_interval_s: float = 1.0
    # Before the source starts, wait up to this long for a first subscriber (0: don't wait).
    # Lets a batch run over a file (`--no-realtime`) be received from its first message.
    wait_subscriber_s: float = 0.0


@dataclass(frozen=True)
class SecurityConfig:
    # CURVE for the publisher (see streamemo/security.py; `streamemo keys` makes the files).
    curve_secret: str | None = None  # the daemon's key pair: NAME.key_secret
    curve_clients: str | None = None  # folder of allowed subscribers' NAME.key files
    # Without CURVE a bind reachable from other machines is refused; true allows it in the clear.
    insecure: bool = False


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True)
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, object] | None = None) -> Config:
        """Defaults, then the TOML file at `path`, then `overrides` ({"audio.source": ...})."""
        config = cls()
        if path is not None:
            config = config.merged(_read_toml(Path(path)), origin=str(path))
        for key, value in (overrides or {}).items():
            section, name = key.split(".")
            config = config.merged({section: {name: value}}, origin="command line")
        return config

    def merged(self, data: dict, origin: str) -> Config:
        """A copy with the values of a {section: {key: value}} mapping, each type-checked."""
        sections = {f.name: f for f in fields(self)}
        updated = {}
        for section_name, values in data.items():
            if section_name not in sections:
                raise StreamemoError(
                    f"{origin}: unknown section [{section_name}]; known: {', '.join(sections)}", 2
                )
            if not isinstance(values, dict):
                raise StreamemoError(f"{origin}: [{section_name}] must be a table of keys", 2)
            section = updated.get(section_name, getattr(self, section_name))
            known = {f.name: f for f in fields(section)}
            changes = {}
            for key, value in values.items():
                if key not in known:
                    raise StreamemoError(
                        f"{origin}: unknown key '{section_name}.{key}'; "
                        f"known keys in [{section_name}]: {', '.join(known)}",
                        2,
                    )
                hint = typing.get_type_hints(type(section))[key]
                changes[key] = _coerce(value, hint, f"{section_name}.{key}", origin)
            try:
                updated[section_name] = replace(section, **changes)
            except StreamemoError as e:  # a range check in the section's __post_init__
                raise StreamemoError(f"{origin}: {e}", 2) from None
        return replace(self, **updated)

    def to_toml(self) -> str:
        lines = []
        for section in fields(self):
            lines.append(f"[{section.name}]")
            for key, value in dataclasses.asdict(getattr(self, section.name)).items():
                if value is None:
                    lines.append(f"# {key} = (unset)")
                else:
                    lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise StreamemoError(f"config file {path} does not exist", 2) from None
    except tomllib.TOMLDecodeError as e:
        raise StreamemoError(f"config file {path} is not valid TOML: {e}", 2) from None
    except OSError as e:
        raise StreamemoError(f"config file {path} cannot be read: {e.strerror}", 2) from None


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _coerce(value, hint, key: str, origin: str):
    """Checks `value` against the field's type hint; ints are accepted where floats are."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
    expected = " or ".join(_TYPE_NAMES[t] for t in allowed if t in _TYPE_NAMES)
    raise StreamemoError(
        f"{origin}: {key} must be {expected}, got {type(value).__name__} {value!r}", 2
    )


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
