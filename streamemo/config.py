"""One configuration object for the daemon: frozen dataclasses with every default here.

A TOML file (`--config`) sets any field by section and name; command-line flags override
the file. `Config.to_toml()` prints the merged result (`streamemo run --print-config`).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from importlib import resources
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from streamemo import StreamemoError

# The bundled model is package data (streamemo/models links to the checkout's models/, and a
# wheel carries the files themselves), so `pip install .` anywhere runs with it.
DEFAULT_MODEL = Path(str(resources.files("streamemo") / "models" / "default"))


@dataclass(frozen=True)
class Range:
    """The values a number may take, and what to do about one outside them.

    Every number that enters is checked against one of these before anything heavy starts:
    config keys and the flags that set them (`LIMITS` below), model-card fields
    (`model.CARD_LIMITS`) and the trainer's options. The bounds are generous; they exist so
    that nonsense (NaN, a negative rate, a window that would allocate terabytes) is a
    one-line error naming the key, the value, the range and the fix, never a crash later."""

    low: float
    high: float
    fix: str  # what a sensible value is, for the error message
    above: bool = False  # `low` itself is excluded: a length must be more than 0
    also: tuple = ()  # special values allowed outside [low, high], e.g. capture_rate 0
    integer: bool = False  # a whole number (the card's JSON may hold 16000.5; TOML types are checked apart)

    def problem(self, value) -> str | None:
        """None when `value` is allowed, else what is wrong with it."""
        if value in self.also and not isinstance(value, bool):
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        inside = number and (not isinstance(value, float) or math.isfinite(value)) and (
            (value > self.low if self.above else value >= self.low) and value <= self.high)
        if inside and (whole or not self.integer):
            return None
        low, high = _number(self.low), _number(self.high)
        if self.above:
            bounds = f"positive and at most {high}" if self.low == 0 else f"above {low} and at most {high}"
        else:
            bounds = f"{'a whole number' if self.integer else 'a number'} from {low} to {high}"
        also = "".join(f"{v!r} or " for v in self.also)
        return f"must be {also}{bounds}, got {value!r}; {self.fix}"

    def check(self, name: str, value, origin: str | None = None, error: type = StreamemoError) -> None:
        """Raises the one-line `error` (a StreamemoError, exit 2) when `value` is outside the range."""
        problem = self.problem(value)
        if problem:
            raise error(f"{origin + ': ' if origin else ''}{name} {problem}", 2)


def _number(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


@dataclass(frozen=True)
class AudioConfig:
    # "default" (the system's default input), a device index, a device-name substring,
    # a PulseAudio/PipeWire source (its name, or part of its name or description; PortAudio's
    # device names are matched first), an audio file path, or "-" for raw PCM on stdin.
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
    # One message per hop. A streaming model (the shipped one) computes each frame and column
    # once at a hop that is a whole number of its columns (0.24 s for 20 ms frames and 80 ms
    # columns, stream/columns.py); at any other hop it scores each window whole.
    hop_s: float = 0.24
    device: str = "auto"  # torch device for frontend and model: auto | cpu | cuda
    threads: int = 1  # torch CPU threads: one window is too small to gain from more, and idle
    #                   worker threads spinning between hops cost CPU for nothing
    # The voice gate (stream/speech.py): a window is classified when at least `speech_share`
    # of the 32 ms chunks in its newest `speech_lookback_s` seconds have a speech probability
    # of at least `speech_threshold`. Chosen on music, noise and seven corpora's speech
    # (benchmarks/RESULTS-gates.md); share 0 classifies every window.
    speech_threshold: float = 0.7
    speech_share: float = 0.2
    speech_lookback_s: float = 0.75
    # Decide among these of the model's classes only, e.g. ["angry", "happy", "neutral", "sad"]:
    # each window's probabilities renormalised over them (emotion_set.py). Unset: all of them.
    emotions: tuple[str, ...] | None = None
    smoothing_tau_s: float = 1.0  # exponential smoothing time constant, in seconds
    hysteresis: float = 0.05  # a new top label must lead the current one by this much
    reset_after_s: float = 5.0  # after this long unvoiced, the smoother starts afresh
    # Speaker adaptation (stream/adaptation.py; models trained with it only): the voice's
    # band statistics start as this many seconds of the training set's average speaker and
    # forget what was heard with this time constant (seconds of voiced audio).
    speaker_adaptation: bool = True
    adaptation_prior_s: float = 10.0
    adaptation_memory_s: float = 600.0


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
class MqttConfig:
    # `streamemo mqtt` (streamemo/mqtt_bridge.py): the daemon's state on an MQTT broker, with
    # Home Assistant discovery. The daemon itself never reads this section.
    broker: str = "localhost"  # HOST or HOST:PORT; the port is 1883, or 8883 with TLS
    connect: str | None = None  # the daemon's endpoint; unset: where publish.bind publishes
    username: str | None = None
    # The password: a file holding it (mode 0600; systemd's LoadCredential= hands one over),
    # else $STREAMEMO_MQTT_PASSWORD. Never in this file, which `--print-config` prints.
    password_file: str | None = None
    tls: bool = False  # TLS with the system's trusted certificates; ca_file or a client cert imply it
    ca_file: str | None = None  # the CA that signed the broker's certificate (PEM)
    client_cert: str | None = None  # a client certificate (PEM) for brokers that ask for one …
    client_key: str | None = None  # … and its key, unless the certificate file holds it
    topic_prefix: str = "streamemo"  # state and availability under <topic_prefix>/<node_id>/
    node_id: str = "streamemo"  # the Home Assistant device's name: sensor.<node_id>_emotion, …
    discovery_prefix: str = "homeassistant"  # Home Assistant's discovery prefix
    interval_s: float = 1.0  # at most one state message per this many seconds, and only on a change
    stale_after_s: float = 5.0  # offline after this long without a message from the daemon
    # CURVE, for a daemon that publishes encrypted: its public key and this bridge's secret key.
    curve_server: str | None = None
    curve_secret: str | None = None


@dataclass(frozen=True)
class TriggerConfig:
    # One [[trigger]] table: `streamemo watch --config FILE` runs `run` each time `when` has
    # held (the grammar: streamemo/triggers.py). The daemon itself never reads these.
    when: str = ""  # e.g. "angry >= 0.8 for 3s"
    run: tuple[str, ...] | str = ()  # the program and its arguments, run without a shell, or …
    shell: bool = False  # … with shell = true, one string that /bin/sh runs
    cooldown_s: float = 30.0  # after firing, rest this long (seconds of the daemon's audio clock)


# Every number a config key (or the flag that sets it) may hold. The bounds keep each one
# where the daemon works: a rate PortAudio and soxr can handle, a window that fits in memory
# (60 s at 16 kHz is 4 MB per copy), a fraction within 0 and 1.
_SECONDS = "a time in seconds"
LIMITS = {
    "audio.stdin_rate": Range(1000, 384000, "give the rate the PCM on stdin was recorded at, e.g. --stdin-rate 16000",
                              integer=True),
    "audio.stdin_channels": Range(1, 64, "give the number of interleaved channels on stdin, e.g. --stdin-channels 1",
                                  integer=True),
    "audio.capture_rate": Range(1000, 384000, "0 opens the microphone at its native rate; otherwise a rate "
                                "such as 16000 or 48000", also=(0,), integer=True),
    "audio.block_s": Range(0.001, 1.0, "the PortAudio block, e.g. 0.01 (10 ms)"),
    "audio.ring_s": Range(1.0, 3600.0, "how long processing may stall before audio is lost, e.g. 10"),
    "pipeline.window_s": Range(0.1, 60.0, "leave it unset for the model's own window, or give seconds such as 2"),
    "pipeline.hop_s": Range(0.01, 60.0, "seconds between messages, e.g. 0.24, and no longer than the window"),
    "pipeline.threads": Range(1, 256, "torch CPU threads, e.g. 1", integer=True),
    "pipeline.speech_threshold": Range(0.0, 1.0, "a speech probability, e.g. 0.7"),
    "pipeline.speech_share": Range(0.0, 1.0, "a fraction of the lookback's 32 ms chunks, e.g. 0.2"),
    "pipeline.speech_lookback_s": Range(0.032, 60.0, f"{_SECONDS}, e.g. 0.75"),
    "pipeline.smoothing_tau_s": Range(0.0, 3600.0, f"{_SECONDS}, 0 for no smoothing, e.g. 1"),
    "pipeline.hysteresis": Range(0.0, 1.0, "a difference of probabilities, e.g. 0.05"),
    "pipeline.reset_after_s": Range(0.0, 86400.0, f"{_SECONDS} of silence, e.g. 5"),
    "pipeline.adaptation_prior_s": Range(0.0, 86400.0, f"{_SECONDS} of voice, e.g. 10", above=True),
    "pipeline.adaptation_memory_s": Range(0.0, 1e9, f"{_SECONDS} of voice, e.g. 600", above=True),
    "publish.hwm": Range(1, 10_000_000, "messages queued per subscriber, e.g. 1000", integer=True),
    "publish.status_interval_s": Range(0.05, 3600.0, f"{_SECONDS}, e.g. 1"),
    "publish.wait_subscriber_s": Range(0.0, 86400.0, f"{_SECONDS}, 0 not to wait"),
    "mqtt.interval_s": Range(0.0, 3600.0, f"{_SECONDS} between state messages at most, e.g. 1; 0: every change"),
    "mqtt.stale_after_s": Range(0.0, 86400.0, f"{_SECONDS} without a message before offline, e.g. 5", above=True),
    "trigger.cooldown_s": Range(0.0, 86400.0, f"{_SECONDS} to rest after firing, e.g. 30; 0: none"),
}

# Keys earlier versions read, and what to do instead (an unknown key is an error, and this
# one says why it went).
_LOUDNESS_GATE = ("is gone: the voice gate now hears speech, not loudness (stream/speech.py); remove it, "
                  "and tune pipeline.speech_threshold, speech_share or speech_lookback_s if needed")
REMOVED = {f"pipeline.{key}": _LOUDNESS_GATE for key in ("vad_threshold_db", "vad_margin_db", "vad_min_voiced")}


@dataclass(frozen=True)
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    log: LogConfig = field(default_factory=LogConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    trigger: tuple[TriggerConfig, ...] = ()  # [[trigger]] tables, a list: see LISTS

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, object] | None = None,
             flags: dict[str, str] | None = None) -> Config:
        """Defaults, then the TOML file at `path`, then `overrides` ({"audio.source": ...});
        `flags` names the flag that set each override ({"audio.source": "--source"}) for errors."""
        config = cls()
        if path is not None:
            config = config.merged(_read_toml(Path(path)), origin=f"config file {path}")
        for key, value in (overrides or {}).items():
            section, name = key.split(".")
            config = config.merged({section: {name: value}}, origin=(flags or {}).get(key, "command line"))
        config.check_together()
        return config

    def check_together(self) -> None:
        """The checks that involve two keys (each key's own range is checked as it is set)."""
        p = self.pipeline
        if p.window_s is not None and p.hop_s > p.window_s:
            raise StreamemoError(f"pipeline.hop_s ({p.hop_s:g} s) is longer than pipeline.window_s ({p.window_s:g} s): "
                                 "audio between windows would never be heard; make the hop at most the window", 2)

    def merged(self, data: dict, origin: str) -> Config:
        """A copy with the values of a {section: {key: value}} mapping, each type-checked."""
        sections = {f.name: f for f in fields(self)}
        updated = {}
        for section_name, values in data.items():
            if section_name not in sections:
                raise StreamemoError(
                    f"{origin}: unknown section [{section_name}]; known: {', '.join(sections)}", 2
                )
            if section_name in LISTS:  # [[trigger]]: the file's list replaces the one before
                if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
                    raise StreamemoError(f"{origin}: {section_name} must be [[{section_name}]] tables", 2)
                entries = []
                for number, table in enumerate(values, 1):
                    where = f"{origin}: [[{section_name}]] number {number}"
                    entries.append(_merged_section(LISTS[section_name](), section_name, table, where))
                    LIST_CHECKS[section_name](entries[-1], where)
                updated[section_name] = tuple(entries)
                continue
            if not isinstance(values, dict):
                raise StreamemoError(f"{origin}: [{section_name}] must be a table of keys", 2)
            section = updated.get(section_name, getattr(self, section_name))
            updated[section_name] = _merged_section(section, section_name, values, origin)
        return replace(self, **updated)

    def to_toml(self) -> str:
        lines = []
        for section in fields(self):
            value = getattr(self, section.name)
            listed = section.name in LISTS  # [[trigger]]: one table each
            for table in value if listed else (value,):
                lines.append(f"[[{section.name}]]" if listed else f"[{section.name}]")
                for key, item in dataclasses.asdict(table).items():
                    if item is None:
                        lines.append(f"# {key} = (unset)")
                    else:
                        lines.append(f"{key} = {_toml_value(item)}")
                lines.append("")
        return "\n".join(lines)


def _merged_section(section, section_name: str, values: dict, origin: str):
    """A copy of one section (a dataclass) with `values`, each key known, type-checked and in range."""
    known = {f.name: f for f in fields(section)}
    changes = {}
    for key, value in values.items():
        if f"{section_name}.{key}" in REMOVED:
            raise StreamemoError(f"{origin}: {section_name}.{key} {REMOVED[f'{section_name}.{key}']}", 2)
        if key not in known:
            raise StreamemoError(
                f"{origin}: unknown key '{section_name}.{key}'; "
                f"known keys in [{section_name}]: {', '.join(known)}",
                2,
            )
        hint = typing.get_type_hints(type(section))[key]
        name = f"{section_name}.{key}"
        changes[key] = _coerce(value, hint, name, origin)
        if changes[key] is not None and name in LIMITS:
            LIMITS[name].check(name, changes[key], origin)
    return replace(section, **changes)


def _check_trigger(trigger: TriggerConfig, origin: str) -> None:
    """A [[trigger]] table that `streamemo watch` can run: a condition that parses and a command."""
    from streamemo.triggers import parse

    if not trigger.when:
        raise StreamemoError(f'{origin}: when is missing; e.g. when = "angry >= 0.8 for 3s"', 2)
    try:
        parse(trigger.when)
    except StreamemoError as e:
        raise StreamemoError(f"{origin}: {e}", 2) from None
    if not trigger.run:
        raise StreamemoError(f'{origin}: run is missing; e.g. run = ["notify-send", "You sound angry"]', 2)
    if trigger.shell and not isinstance(trigger.run, str):
        raise StreamemoError(f"{origin}: with shell = true, run is one string for /bin/sh, "
                             'e.g. run = "notify-send angry && paplay bell.oga"', 2)
    if not trigger.shell and isinstance(trigger.run, str):
        raise StreamemoError(f"{origin}: run is a string; give a list, the program and its arguments "
                             f'(run = ["notify-send", "angry"]), or add shell = true to run it with /bin/sh', 2)


# Sections that are lists of tables ([[trigger]]): the table's type, and its check.
LISTS = {"trigger": TriggerConfig}
LIST_CHECKS = {"trigger": _check_trigger}


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise StreamemoError(f"config file {path} does not exist", 2) from None
    except IsADirectoryError:
        raise StreamemoError(f"config file {path} is a directory; give the TOML file in it", 2) from None
    except UnicodeDecodeError as e:  # binary, or another encoding: TOML is UTF-8
        raise StreamemoError(f"config file {path} is not UTF-8 text (byte {e.start}); "
                             "save it as UTF-8 TOML (see `streamemo run --print-config`)", 2) from None
    except tomllib.TOMLDecodeError as e:
        raise StreamemoError(f"config file {path} is not valid TOML: {e}", 2) from None
    except OSError as e:
        raise StreamemoError(f"config file {path} cannot be read: {e.strerror}", 2) from None


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               tuple[str, ...]: "a list of strings"}


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
        if t == tuple[str, ...] and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    expected = " or ".join(_TYPE_NAMES[t] for t in allowed if t in _TYPE_NAMES)
    raise StreamemoError(
        f"{origin}: {key} must be {expected}, got {type(value).__name__} {value!r}", 2
    )


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return repr(value)
