"""The sound server's sources by name: PulseAudio, or PipeWire through pipewire-pulse.

PortAudio sees a PulseAudio or PipeWire desktop as two ALSA devices, `pulse` and `default`,
so it cannot tell one microphone from another. The server can: `pulsectl` (ctypes over
libpulse, no subprocess) lists its sources with their names, descriptions, rates and
channels. A chosen source is then recorded through PortAudio's `pulse` device with
PULSE_SOURCE naming it (audio/sources.py). PipeWire answers the same protocol, so this
one module serves both.

When a recorded source goes away, the server does not end the recording: it moves it to
its default source, and the daemon would go on listening to the wrong microphone.
`SourceWatch` hears the server say the source was removed, so the daemon treats it as a
lost device, as it does an unplugged ALSA one.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamemo import StreamemoError

NO_SERVER = "no PulseAudio/PipeWire server was found"


@dataclass(frozen=True)
class ServerSource:
    name: str  # what PULSE_SOURCE and `pactl` call it, e.g. alsa_input.usb-Blue_Yeti-00.analog-stereo
    description: str  # what a desktop's sound settings show, e.g. "Yeti Stereo Microphone Analog Stereo"
    rate: int
    channels: int
    default: bool  # the server's default source: what `--source default` records

    @property
    def label(self) -> str:
        return f"{self.name!r} ({self.description})"


@dataclass(frozen=True)
class Server:
    name: str  # e.g. "pulseaudio 16.1" or "PulseAudio (on PipeWire 1.0.5) 15.0.0"
    sources: tuple[ServerSource, ...]


def _connect(client: str):
    """A connected pulsectl.Pulse, or None when no server answers or libpulse is missing.
    Never starts a server (no autospawn): listing devices must not change the machine. No
    `timeout`: pulsectl 24.12 then waits all of it even when the server answers at once;
    libpulse gives up by itself (a missing socket at once, a silent TCP host after its own
    connect timeout)."""
    try:
        import pulsectl  # loads libpulse.so.0 (Debian: libpulse0) as it is imported
    except ModuleNotFoundError:  # a virtual environment made before it was a dependency
        raise StreamemoError("pulsectl is not installed: run `make run` (or `pip install -c constraints.txt "
                             "pulsectl==24.12.0`)") from None
    except OSError:  # no libpulse: no PulseAudio/PipeWire client on this machine either
        return None
    pulse = pulsectl.Pulse(f"streamemo {client}", connect=False)
    try:
        pulse.connect(autospawn=False)
    except pulsectl.PulseError:
        pulse.close()
        return None
    return pulse


def query_server() -> Server | None:
    """The server and its sources, or None when no PulseAudio/PipeWire server answers."""
    pulse = _connect("devices")
    if pulse is None:
        return None
    import pulsectl  # imported by _connect: here only for its exceptions

    try:
        info = pulse.server_info()
        sources = tuple(
            ServerSource(s.name, s.description, s.sample_spec.rate, s.channel_count,
                         s.name == info.default_source_name)
            for s in pulse.source_list())
        return Server(f"{info.server_name} {info.server_version}", sources)
    except (pulsectl.PulseError, pulsectl.PulseDisconnected):  # the server went away mid-query
        return None
    finally:
        pulse.close()


def find_source(sources: tuple[ServerSource, ...], spec: str) -> ServerSource | None:
    """The source `spec` names: its exact name, else the one source whose name or description
    contains it (case-insensitive). None when none does; several are one line listing them."""
    for source in sources:
        if source.name == spec:
            return source
    needle = spec.lower()
    matches = [s for s in sources if needle in s.name.lower() or needle in s.description.lower()]
    if len(matches) > 1:
        raise StreamemoError(
            f"--source {spec!r} matches {len(matches)} PulseAudio/PipeWire sources: "
            f"{', '.join(s.label for s in matches)}; give more of one's name or description "
            "(`streamemo devices` lists them)", 2)
    return matches[0] if matches else None


def describe_server(server: Server) -> str:
    """`streamemo devices`' lines for the server's sources (* = its default)."""
    if not server.sources:
        return "  (none)"
    return "\n".join(f"{'*' if s.default else ' '}  {s.name}  \"{s.description}\"  ({s.rate} Hz, {s.channels} ch)"
                     for s in server.sources)


class SourceWatch:
    """Whether a source has gone away since the watch began, asked without waiting: `gone()`
    reads what the server has said since the last call (a poll of one socket, no blocking),
    so the daemon's loop can ask on every read."""

    def __init__(self, name: str):
        import pulsectl

        self.name = name
        self.index: int | None = None
        self.reason: str | None = None
        self.pulse = _connect("watch")
        if self.pulse is None:
            raise StreamemoError(f"source {name!r}: {NO_SERVER}")
        self.pulse.event_callback_set(self._event)
        try:
            self.pulse.event_mask_set("source")  # before the lookup: a removal after it is heard
            self.index = self.pulse.get_source_by_name(name).index
        except pulsectl.PulseError:
            self.close()
            raise StreamemoError(f"source {name!r} is not there (any more)") from None

    def _event(self, event) -> None:
        if event.facility == "source" and event.t == "remove" and event.index == self.index:
            self.reason = f"source {self.name!r} was removed"

    def gone(self) -> str | None:
        """Why the source is gone (removed, or the server went away), else None."""
        import pulsectl

        if self.reason is None:
            try:
                # pulsectl reads timeout=0 as "no timeout"; a microsecond is a poll that does not wait.
                self.pulse.event_listen(timeout=1e-6)
            except pulsectl.PulseDisconnected:
                self.reason = "the PulseAudio/PipeWire server went away"
        return self.reason

    def close(self) -> None:
        self.pulse.close()
