"""Command-line flags that override Config keys, shared by `run` and `classify`.

Every flag here is also a key of the TOML config file: the flag wins."""

from __future__ import annotations

import argparse

from streamemo.config import Config

# flag -> (config key, argparse keyword arguments)
FLAGS = {
    "--source": ("audio.source", dict(metavar="SRC", help="'default', a device index or name substring, an audio file, or '-' for raw s16le PCM on stdin")),
    "--realtime": ("audio.realtime", dict(action=argparse.BooleanOptionalAction, help="pace a file at real time (default) or run it as fast as possible")),
    "--capture-rate": ("audio.capture_rate", dict(type=int, metavar="HZ", help="microphone rate; 0 (default): the device's native rate, resampled with soxr")),
    "--stdin-rate": ("audio.stdin_rate", dict(type=int, metavar="HZ", help="sample rate of PCM on stdin")),
    "--stdin-channels": ("audio.stdin_channels", dict(type=int, metavar="N", help="channels of PCM on stdin")),
    "--model": ("model.path", dict(metavar="PATH", help="models/<name> (its .safetensors and .json)")),
    "--device": ("pipeline.device", dict(choices=["auto", "cpu", "cuda"], help="where the frontend and network run")),
    "--window": ("pipeline.window_s", dict(type=float, metavar="S", help="window length in seconds (default: the model's)")),
    "--hop": ("pipeline.hop_s", dict(type=float, metavar="S", help="seconds between messages")),
    "--speech-threshold": ("pipeline.speech_threshold", dict(type=float, metavar="P", help="speech probability a 32 ms chunk needs to count as speech (0.7)")),
    "--smoothing": ("pipeline.smoothing_tau_s", dict(type=float, metavar="S", help="smoothing time constant in seconds")),
    "--bind": ("publish.bind", dict(metavar="ENDPOINT", help="ZeroMQ endpoint to publish on (tcp://127.0.0.1:5556)")),
    "--wait-subscriber": ("publish.wait_subscriber_s", dict(type=float, metavar="S", help="wait this long for a first subscriber before starting")),
    "--log-level": ("log.level", dict(choices=["debug", "info", "warning", "error"], help="log verbosity")),
}


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


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file with the flags applied, every value range-checked (config.LIMITS)."""
    flags = {key: flag for flag, (key, _) in FLAGS.items()} | {key: flag for flag, key in SECURITY_KEYS.items()}
    overrides = {key: getattr(args, key) for key in flags if getattr(args, key, None) is not None}
    return Config.load(args.config, overrides, flags)
