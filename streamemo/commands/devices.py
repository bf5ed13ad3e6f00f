"""streamemo devices: the audio inputs PortAudio sees (* marks the default)."""

from __future__ import annotations


def configure(parser) -> None:
    pass


def main(args) -> int:
    from streamemo import StreamemoError
    from streamemo.audio.sources import (
        NO_DEVICES,
        describe_devices,
        import_sounddevice,
        input_devices,
    )

    sd = import_sounddevice()
    if not input_devices(sd):  # no sound server to reach, or no card: what `run` would hit
        raise StreamemoError(NO_DEVICES)
    print(describe_devices(sd))
    return 0
