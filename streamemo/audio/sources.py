"""Where audio comes from: a microphone (PortAudio via sounddevice), a file, or raw PCM on stdin.

Every source hands out `Chunk`s of mono float32 at its native rate with the wall-clock
capture time of the chunk's last sample; the daemon resamples to the model rate. `read()`
returns None when nothing arrived within the timeout and raises `EndOfStream` at the end.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamemo import StreamemoError
from streamemo.audio.pulse_sources import NO_SERVER, ServerSource, SourceWatch, find_source, query_server
from streamemo.audio.ringbuffer import RingBuffer, RingReader
from streamemo.config import AudioConfig, Range


@dataclass(frozen=True)
class Chunk:
    samples: np.ndarray  # mono float32 at the source's rate
    t_end: float  # unix time at which the last sample was captured


class EndOfStream(Exception):
    """The source has no more audio (end of file, stdin closed)."""


class DeviceLost(Exception):
    """The input device stopped delivering audio (unplugged, server gone, stream error)."""


# --- microphone ---------------------------------------------------------------------


def import_sounddevice():
    """sounddevice, or a one-line error saying what to install."""
    try:
        import sounddevice
    except OSError:
        raise StreamemoError(
            "PortAudio is not installed: run `sudo apt-get install libportaudio2` (or `make run`, which installs it)"
        ) from None
    release_alsa_plugins()
    return sounddevice


def release_alsa_plugins() -> None:
    """Unloads the ALSA plugins PortAudio loaded to list devices and no open stream uses.

    PortAudio's initialisation opens every PCM that ALSA's configuration defines, so every
    installed plugin is loaded and stays loaded: `a52` alone brings in all of ffmpeg's codecs,
    about 10 MB resident for a daemon that records from `pulse` (benchmarks/RESULTS-daemon-cost.md).
    `snd_config_update_free_global` drops ALSA's configuration cache and unloads the plugins
    no open PCM holds, as other device-listing programs do after enumerating (mpd, for one);
    the next open reads the configuration again. Nothing happens where ALSA is not loaded."""
    try:
        asound = ctypes.CDLL("libasound.so.2", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except (OSError, AttributeError):  # no ALSA in this process (another OS, another host API)
        return
    asound.snd_config_update_free_global()


def input_devices(sd) -> list[dict]:
    return [d for d in sd.query_devices() if d["max_input_channels"] > 0]


def describe_devices(sd) -> str:
    devices = input_devices(sd)
    if not devices:
        return "  (none)"
    default = sd.default.device[0]
    lines = []
    for d in devices:
        mark = "*" if d["index"] == default else " "
        api = sd.query_hostapis(d["hostapi"])["name"]
        lines.append(f"{mark} {d['index']:>3}  {d['name']}  ({api}, {d['max_input_channels']} ch, "
                     f"{d['default_samplerate']:.0f} Hz)")
    return "\n".join(lines)


NO_DEVICES = ("no audio input device: PortAudio sees none. Start PulseAudio or PipeWire "
              "(`pulseaudio --start`) or plug in a microphone; `streamemo devices` lists what it sees")


def resolve_input_device(sd, spec: str) -> tuple[dict, ServerSource | None]:
    """What `--source` names -> PortAudio's device info, and the sound server's source when it
    names one of those. In this order: 'default' and an index are PortAudio's; a name is
    first looked for among PortAudio's devices (case-insensitive substring, as it always
    was), then among the PulseAudio/PipeWire server's sources (exact name, then a substring
    of one name or description), which are recorded through PortAudio's `pulse` device."""
    devices = input_devices(sd)
    if not devices:
        raise StreamemoError(NO_DEVICES)
    if spec == "default":
        index = sd.default.device[0]
        if index is None or index < 0:
            return devices[0], None
        return sd.query_devices(index), None
    if spec.strip().isdigit():
        match = [d for d in devices if d["index"] == int(spec)]
    else:
        match = [d for d in devices if spec.lower() in d["name"].lower()]
        if not match:
            return server_source_device(devices, spec)
    if not match:
        raise StreamemoError(f"no input device matches {spec!r}; input devices:\n{describe_devices(sd)}", 2)
    return match[0], None


def server_source_device(devices: list[dict], spec: str) -> tuple[dict, ServerSource]:
    """The server's source `spec` names, and the PortAudio device (ALSA's `pulse`, which
    libasound2-plugins provides) that records whichever source PULSE_SOURCE names."""
    server = query_server()
    source = find_source(server.sources, spec) if server else None
    if source is None:
        sources = f"PulseAudio/PipeWire sources: {', '.join(s.label for s in server.sources)}" if server else NO_SERVER
        raise StreamemoError(
            f"no input device matches {spec!r}: PortAudio has {', '.join(repr(d['name']) for d in devices)}; "
            f"{sources}; `streamemo devices` describes them", 2)
    pulse = [d for d in devices if d["name"] == "pulse"]
    if not pulse:
        raise StreamemoError(f"source {source.name!r} is recorded through ALSA's `pulse` device, which PortAudio "
                             "does not list: install libasound2-plugins (`make run` does)")
    return pulse[0], source


@contextlib.contextmanager
def pulse_source_env(name: str | None):
    """PULSE_SOURCE=name while a stream opens: libpulse reads it when ALSA's `pulse` device
    connects (once, at open), so it is put back as it was straight after."""
    if name is None:
        yield
        return
    before = os.environ.get("PULSE_SOURCE")
    os.environ["PULSE_SOURCE"] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ["PULSE_SOURCE"]
        else:
            os.environ["PULSE_SOURCE"] = before


def rescan_devices() -> None:
    """Makes PortAudio list the devices again. It enumerates them once, at initialisation, so a
    microphone plugged back in (or a sound server restarted) is invisible until this. Only
    call it with no stream open."""
    sd = import_sounddevice()
    sd._terminate()
    sd._initialize()
    release_alsa_plugins()


class MicSource:
    """A PortAudio input stream at the device's native rate, through a ring buffer. For a
    PulseAudio/PipeWire source, ALSA's `pulse` device told which source to record, at the
    source's own rate, and a watch that calls the device lost when the source goes away."""

    def __init__(self, spec: str, block_s: float, ring_s: float, capture_rate: int = 0):
        sd = import_sounddevice()
        info, source = resolve_input_device(sd, spec)
        self.name = spec
        self.device = f"{source.description} ({source.name})" if source else info["name"]
        self.rate = capture_rate or (source.rate if source else int(info["default_samplerate"]))
        if capture_rate:  # a rate the user asked for may be one the device cannot do
            try:
                sd.check_input_settings(device=info["index"], channels=1, samplerate=self.rate, dtype="float32")
            except sd.PortAudioError as e:
                raise StreamemoError(f"input device {self.device!r} cannot capture at {self.rate} Hz ({e}); "
                                     "set audio.capture_rate = 0 for its native rate", 2) from None
        self.ring = RingBuffer(int(ring_s * self.rate))
        self.reader = RingReader(self.ring)
        self.callback_flags = 0  # PortAudio status flags seen (input overflow and friends)
        self.block_s = block_s
        self._data_ready = threading.Event()
        self._wake_at = 1  # samples the reader wants before the callback wakes it (see read)
        self._last_callback = time.monotonic()
        self.watch = SourceWatch(source.name) if source else None  # before the stream: no removal unheard
        try:
            with pulse_source_env(source.name if source else None):
                self.stream = sd.InputStream(
                    device=info["index"], channels=1, samplerate=self.rate, dtype="float32",
                    blocksize=max(1, int(block_s * self.rate)), latency="low", callback=self._callback,
                )
            self.stream.start()
        except sd.PortAudioError as e:
            if self.watch:
                self.watch.close()
            raise StreamemoError(f"cannot open input device {self.device!r}: {e}") from None

    def _callback(self, indata, frames, time_info, status) -> None:
        # Runs on PortAudio's thread: copy and count only. No allocation beyond a tuple, no lock
        # that slow code holds, no logging (python-sounddevice's own advice).
        if status:
            self.callback_flags += 1
        now = time.time()
        lag = time_info.currentTime - time_info.inputBufferAdcTime
        t_last = now - lag + (frames - 1) / self.rate if 0.0 <= lag < 1.0 else now
        self.ring.write(indata[:, 0], t_last)
        self._last_callback = time.monotonic()
        if self.ring.written - self.reader.position >= self._wake_at:
            self._data_ready.set()

    @property
    def overflows(self) -> int:
        return self.callback_flags + self.reader.overruns

    @property
    def dropped(self) -> int:
        return self.reader.dropped

    def read(self, timeout: float, want: int = 1) -> Chunk | None:
        """What arrived, once at least `want` samples have (or `timeout` passed). The daemon
        asks for the rest of the next window (or, while an encoder model may encode ahead,
        of the hop's first half), so it wakes once or twice per hop instead of once per 10 ms
        block: the same latency for every window, a fraction of the wake-ups."""
        self._wake_at = max(1, want)
        if self.reader.available < self._wake_at:
            self._data_ready.wait(timeout)
        self._data_ready.clear()
        gone = self.watch and self.watch.gone()
        if gone:  # the server moved the recording to another source; it is not the one asked for
            raise DeviceLost(f"input device {self.device!r} is gone: {gone}")
        samples = self.reader.read()
        if len(samples) == 0:
            self._check_alive()
            return None
        return Chunk(samples, self.reader.time_of(self.reader.position - 1, self.rate))

    def _check_alive(self) -> None:
        silent_for = time.monotonic() - self._last_callback
        if not self.stream.active or silent_for > max(2.0, 20 * self.block_s):
            raise DeviceLost(f"input device {self.device!r} stopped delivering audio ({silent_for:.1f} s without a block)")

    def close(self) -> None:
        try:
            self.stream.abort()
            self.stream.close()
        except Exception:  # closing a stream whose device vanished can fail; nothing to save
            pass
        if self.watch:
            self.watch.close()


# --- file -----------------------------------------------------------------------------


# A header may claim any rate; 1 Hz would have soxr make 16000 samples of each one.
FILE_RATES = Range(1000, 768000, "it is not a recording streamemo can use; convert it, e.g. "
                   "`sox in.wav -r 16000 out.wav`", integer=True)


class FileSource:
    """Anything libsndfile reads (WAV, FLAC, OGG, ...), downmixed to mono."""

    def __init__(self, path: str, realtime: bool, block_s: float):
        import soundfile as sf

        self.name = path
        self.device = f"file:{Path(path).name}"
        # Opened by Python first: libsndfile says "System error." for a missing file and
        # "Format not recognised." for a directory, which names neither cause.
        try:
            open(path, "rb").close()
        except FileNotFoundError:
            raise StreamemoError(f"audio file {path} does not exist") from None
        except IsADirectoryError:
            raise StreamemoError(f"{path} is a directory, not an audio file; give the files in it") from None
        except PermissionError:
            raise StreamemoError(f"audio file {path} cannot be read: permission denied (see its owner and mode)") from None
        except OSError as e:
            raise StreamemoError(f"audio file {path} cannot be read: {e.strerror}") from None
        try:
            self.file = sf.SoundFile(os.fsencode(path))  # bytes: see audio/files.py on names that are not UTF-8
        except (sf.LibsndfileError, RuntimeError) as e:
            raise StreamemoError(f"{path} is not audio libsndfile can read (WAV, FLAC, OGG, MP3, AIFF...): "
                                 f"{getattr(e, 'error_string', e)}") from None
        self.rate = self.file.samplerate
        problem = FILE_RATES.problem(self.rate)
        if problem:
            self.file.close()
            raise StreamemoError(f"audio file {path}: its sample rate {problem}")
        self.realtime = realtime
        # As fast as possible: 8 s reads, whose ~32 windows the pipeline scores as one batch;
        # its output does not depend on chunking.
        self.block = max(1, int((block_s if realtime else 8.0) * self.rate))
        self.position = 0
        self.overflows = self.dropped = 0
        self._t0 = time.time()
        self._mono0 = time.monotonic()

    def read(self, timeout: float, want: int = 1) -> Chunk | None:
        """As fast as possible: the next 8 s. In real time, as a microphone: what has
        "happened" once at least `want` samples (and a block) have, or `timeout` passed. So the
        daemon wakes about once per hop, not once per 10 ms block (5 % of a core, against 1 %)."""
        import soundfile as sf

        count = self.block
        if self.realtime:
            elapsed = time.monotonic() - self._mono0
            ready_at = (self.position + max(want, self.block)) / self.rate
            if ready_at > elapsed:
                time.sleep(min(timeout, ready_at - elapsed))
                elapsed = time.monotonic() - self._mono0
            count = int(elapsed * self.rate) - self.position
            if count <= 0:
                return None
        try:
            data = self.file.read(count, dtype="float32", always_2d=True)
        except sf.LibsndfileError as e:
            raise StreamemoError(f"cannot read audio file {self.name}: {e.error_string}") from None
        if len(data) == 0:
            raise EndOfStream
        self.position += len(data)
        samples = np.ascontiguousarray(data[:, 0] if data.shape[1] == 1 else data.mean(axis=1))
        if not self.realtime:
            return Chunk(samples, time.time())
        return Chunk(samples, self._t0 + self.position / self.rate)  # its last sample "happened" then

    def close(self) -> None:
        self.file.close()


# --- stdin ------------------------------------------------------------------------------


class StdinSource:
    """Raw signed 16-bit little-endian PCM, e.g. `arecord -f S16_LE -r 16000 -c 1 | streamemo run --source -`."""

    def __init__(self, rate: int, channels: int, block_s: float, stream=None):
        self.name = "-"
        self.device = f"stdin:s16le/{rate}Hz/{channels}ch"
        self.rate, self.channels = rate, channels
        self.stream = stream or sys.stdin.buffer
        self.fd = self.stream.fileno()
        self.block_bytes = max(1, int(block_s * rate)) * channels * 2
        self._pending = b""
        self.overflows = self.dropped = 0

    def read(self, timeout: float, want: int = 1) -> Chunk | None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(self.fd, self.block_bytes)
        if not data:
            raise EndOfStream
        data = self._pending + data
        frame_bytes = 2 * self.channels
        whole = len(data) - len(data) % frame_bytes
        self._pending = data[whole:]
        if whole == 0:
            return None
        pcm = np.frombuffer(data[:whole], dtype="<i2").reshape(-1, self.channels)
        samples = pcm.mean(axis=1, dtype=np.float32) / 32768.0
        return Chunk(samples.astype(np.float32), time.time())

    def close(self) -> None:
        pass


def open_source(config: AudioConfig):
    """`-` is stdin; an existing path or a name with a path separator or extension is a file;
    anything else names a microphone."""
    spec = config.source
    if spec == "-":
        return StdinSource(config.stdin_rate, config.stdin_channels, config.block_s)
    looks_like_file = os.sep in spec or Path(spec).suffix.lower() in (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
    if Path(spec).is_file() or looks_like_file:
        return FileSource(spec, config.realtime, config.block_s)
    return MicSource(spec, config.block_s, config.ring_s, config.capture_rate)
