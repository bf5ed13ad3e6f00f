"""streamemo devices: the audio inputs PortAudio sees (* marks the default)."""

from __future__ import annotations


def configure(parser) -> None:
    pass


def main(args) -> int:
    from streamemo.audio.sources import describe_devices, import_sounddevice

    print(describe_devices(import_sounddevice()))
    return 0
