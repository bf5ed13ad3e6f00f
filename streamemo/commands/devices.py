"""streamemo devices: the audio inputs PortAudio sees, and the PulseAudio/PipeWire server's
sources beside them (* marks each one's default); `--source` takes a name from either."""

from __future__ import annotations


def configure(parser) -> None:
    pass


def main(args) -> int:
    from streamemo import StreamemoError
    from streamemo.audio.pulse_sources import NO_SERVER, describe_server, query_server
    from streamemo.audio.sources import (
        NO_DEVICES,
        describe_devices,
        import_sounddevice,
        input_devices,
    )

    sd = import_sounddevice()
    server = query_server()
    if not input_devices(sd) and server is None:  # no sound server to reach, or no card: what `run` would hit
        raise StreamemoError(NO_DEVICES)
    print("PortAudio input devices (--source INDEX or part of a name):")
    print(describe_devices(sd))
    if server is None:
        print(f"{NO_SERVER}: only the devices above can be recorded from")
    else:
        print(f"\n{server.name} sources (--source NAME or part of a name or description):")
        print(describe_server(server))
    return 0
