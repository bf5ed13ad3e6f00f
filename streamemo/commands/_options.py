"""Command-line flags that override Config keys, shared by `run` and `classify`.

Every flag here is also a key of the TOML config file: the flag wins."""

from __future__ import annotations

import argparse

from streamemo.config import AudioConfig, Config, LogConfig, ModelConfig, PipelineConfig, PublishConfig

# flag -> (config key, argparse keyword arguments); each help ends with the default, the
# config's own (streamemo/config.py).
A, P, M, U, L = AudioConfig, PipelineConfig, ModelConfig, PublishConfig, LogConfig
COMPUTE = ["auto", "cpu", "cuda"]
FLAGS = {
    "--source": ("audio.source", dict(metavar="SRC", help="'default' (the system's default input), a device index or "
                                      "name substring, a PulseAudio/PipeWire source's name or part of its name or "
                                      "description (`streamemo devices` lists both), an audio file, or '-' for raw "
                                      f"s16le PCM on stdin (default: {A.source})")),
    "--realtime": ("audio.realtime", dict(action=argparse.BooleanOptionalAction,
                                          help="pace a file at real time, or read it as fast as possible "
                                               f"(default: --{'' if A.realtime else 'no-'}realtime)")),
    "--capture-rate": ("audio.capture_rate", dict(type=int, metavar="HZ", help="ask the microphone for this rate; 0: "
                                                  "its native rate, resampled with soxr "
                                                  f"(default: {A.capture_rate})")),
    "--stdin-rate": ("audio.stdin_rate", dict(type=int, metavar="HZ",
                                              help=f"sample rate of PCM on stdin (default: {A.stdin_rate})")),
    "--stdin-channels": ("audio.stdin_channels", dict(type=int, metavar="N",
                                                      help=f"channels of PCM on stdin (default: {A.stdin_channels})")),
    "--model": ("model.path", dict(metavar="MODEL", help="a bundled model by name ('default' or 'small'), or a path: "
                                   "DIR/NAME for NAME.safetensors and NAME.json (default: default)")),
    "--compute": ("pipeline.device", dict(choices=COMPUTE, help="where the frontend and network run; auto: cuda "
                                          f"when torch sees a GPU (default: {P.device})")),
    "--window": ("pipeline.window_s", dict(type=float, metavar="S",
                                           help="window length in seconds (default: the model's)")),
    "--hop": ("pipeline.hop_s", dict(type=float, metavar="S", help=f"seconds between messages (default: {P.hop_s})")),
    "--speech-threshold": ("pipeline.speech_threshold", dict(
        type=float, metavar="P", help="speech probability a 32 ms chunk needs to count as speech "
                                      f"(default: {P.speech_threshold})")),
    "--emotions": ("pipeline.emotions", dict(
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()], metavar="E,E,...",
        help="decide among these of the model's emotions only, renormalised, e.g. angry,happy,neutral,sad "
             "(default: all of them)")),
    "--smoothing": ("pipeline.smoothing_tau_s", dict(type=float, metavar="S", help="smoothing time constant in "
                                                     f"seconds; 0: none (default: {P.smoothing_tau_s})")),
    "--bind": ("publish.bind", dict(metavar="ENDPOINT", help=f"ZeroMQ endpoint to publish on (default: {U.bind})")),
    "--wait-subscriber": ("publish.wait_subscriber_s", dict(
        type=float, metavar="S", help="wait this long for a first subscriber before starting "
                                      f"(default: {U.wait_subscriber_s:g}, not to wait)")),
    "--log-level": ("log.level", dict(choices=["debug", "info", "warning", "error"],
                                      help=f"log verbosity (default: {L.level})")),
}
# Earlier names of flags, still read but no longer shown: `run --device` was the compute
# device, which read as the audio device (`streamemo devices`, `--source`).
ALIASES = {"--device": "--compute"}


# The publisher's access options (flags defined in security.SERVER_FLAGS): for `run` only
# (classify publishes nothing). Flag -> config key.
SECURITY_KEYS = {"--curve-secret": "security.curve_secret", "--curve-clients": "security.curve_clients",
                 "--insecure": "security.insecure"}


def add_security_arguments(parser: argparse.ArgumentParser) -> None:
    from streamemo.security import add_server_arguments

    add_server_arguments(parser, SECURITY_KEYS)


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file; flags override it")
    parser.add_argument("--print-config", action="store_true", help="print the resulting config and exit")
    for flag, (key, kwargs) in FLAGS.items():
        if flag not in skip:
            parser.add_argument(flag, dest=key, default=None, **kwargs)
    for alias, flag in ALIASES.items():
        if flag not in skip:
            key, kwargs = FLAGS[flag]
            parser.add_argument(alias, dest=key, default=None, **(kwargs | {"help": argparse.SUPPRESS}))


def config_from_args(args: argparse.Namespace, table: dict | None = None) -> Config:
    """The config file with the flags applied, every value range-checked (config.LIMITS).
    `table`: another command's flag -> (config key, argparse keywords), for FLAGS and the
    daemon's security flags."""
    if table is None:
        flags = {key: flag for flag, (key, _) in FLAGS.items()} | {key: flag for flag, key in SECURITY_KEYS.items()}
    else:
        flags = {key: flag for flag, (key, _) in table.items()}
    overrides = {key: getattr(args, key) for key in flags if getattr(args, key, None) is not None}
    return Config.load(args.config, overrides, flags)
