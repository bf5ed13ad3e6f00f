"""A private PulseAudio server with a null sink: a real virtual microphone for tests.

Whatever is played into the sink (`paplay`) comes out of its monitor source, which is the
server's default source, so PortAudio's `pulse`/`default` ALSA devices record it. The server
gets its own runtime directory, so a developer's own audio is never touched.

`add_source` makes more virtual microphones beside it (each another null sink, with its own
description), for tests that pick one source by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SINK = "streamemo_vmic"


def pulse_available() -> str | None:
    """None when the recipe can run here, else the reason it cannot."""
    for tool in ("pulseaudio", "pactl", "paplay", "pacat"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: pulseaudio pulseaudio-utils)"
    return None


class PulseServer:
    def __init__(self, rate: int = 48000):
        self.dir = Path(tempfile.mkdtemp(prefix="streamemo-pulse-"))
        self.rate = rate
        self.env = dict(os.environ)
        self.env.update(
            PULSE_RUNTIME_PATH=str(self.dir / "runtime"),
            PULSE_STATE_PATH=str(self.dir / "state"),
            PULSE_SERVER=f"unix:{self.dir}/native",
            PULSE_COOKIE=str(self.dir / "cookie"),
            HOME=str(self.dir),  # pulseaudio and its clients keep their files under HOME
            XDG_RUNTIME_DIR=str(self.dir / "runtime"),
        )
        self.env.pop("DISPLAY", None)
        (self.dir / "runtime").mkdir(mode=0o700)
        self.keepalive: subprocess.Popen | None = None
        self.extra: dict[str, tuple[str, subprocess.Popen]] = {}  # add_source's sinks: module index, keep-alive

    def start(self) -> PulseServer:
        script = self.dir / "server.pa"
        script.write_text(
            f"load-module module-native-protocol-unix socket={self.dir}/native auth-anonymous=1\n"
            f"load-module module-null-sink sink_name={SINK} rate={self.rate} channels=1\n"
            f"set-default-sink {SINK}\n"
            f"set-default-source {SINK}.monitor\n"
        )
        subprocess.run(
            ["pulseaudio", "-n", "-F", str(script), "--daemonize=yes", "--exit-idle-time=-1",
             "--disallow-exit", "--log-target=file:" + str(self.dir / "pulse.log")],
            env=self.env, check=True, timeout=20, capture_output=True,
        )
        self._wait(lambda: self.pactl("info").returncode == 0, "server to answer")
        self.start_keepalive()
        return self

    def start_keepalive(self) -> None:
        self.keepalive = self._play_silence(SINK)
        time.sleep(2.5)

    def _play_silence(self, sink: str) -> subprocess.Popen:
        # A null sink with nothing playing delivers its monitor in 2-second bursts; a silent
        # stream keeps it running so audio flows in small blocks, as from a real microphone.
        if getattr(self, "_zero", None) is None:
            self._zero = open("/dev/zero", "rb")
        proc = subprocess.Popen(
            ["pacat", "--playback", "--latency-msec=20", f"--device={sink}", "--rate=48000",
             "--channels=1", "--format=s16le", "--raw"],
            stdin=self._zero, env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._wait(lambda: any(line.split()[1:2] == [sink] and "RUNNING" in line
                               for line in self.pactl("list", "short", "sinks").stdout.splitlines()),
                   f"null sink {sink} to run")
        return proc

    def add_source(self, sink: str, description: str) -> str:
        """Another virtual microphone: a null sink `sink` described as `description`, whose
        monitor (the source returned, `SINK.monitor`, described "Monitor of DESCRIPTION") hears
        only what is played into that sink. `remove_source(sink)` pulls it out again."""
        loaded = self.pactl("load-module", "module-null-sink", f"sink_name={sink}", f"rate={self.rate}", "channels=1",
                            # quoted twice: once for the module's arguments, once for the property list
                            f"sink_properties=\"device.description='{description}'\"")
        if loaded.returncode != 0:
            raise RuntimeError(f"cannot add null sink {sink}: {loaded.stderr.strip()}")
        self.extra[sink] = (loaded.stdout.strip(), self._play_silence(sink))
        return f"{sink}.monitor"

    def remove_source(self, sink: str) -> None:
        module, keepalive = self.extra.pop(sink)
        keepalive.kill()
        keepalive.wait()
        self.pactl("unload-module", module)

    def pactl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10)

    def play(self, path: str | Path, wait: bool = True, sink: str = SINK) -> subprocess.Popen:
        proc = subprocess.Popen(["paplay", f"--device={sink}", str(path)], env=self.env)
        if wait:
            proc.wait(timeout=60)
        return proc

    def unload_sink(self) -> None:
        """Pulls the virtual microphone out: the source the daemon records from disappears."""
        if self.keepalive:
            self.keepalive.kill()
            self.keepalive.wait()
        self.pactl("unload-module", "module-null-sink")

    def load_sink(self) -> None:
        """Plugs it back in, as the default source again."""
        self.pactl("load-module", "module-null-sink", f"sink_name={SINK}", f"rate={self.rate}", "channels=1")
        self.pactl("set-default-sink", SINK)
        self.pactl("set-default-source", f"{SINK}.monitor")
        self.start_keepalive()

    def stop(self) -> None:
        for _, keepalive in self.extra.values():
            keepalive.kill()
            keepalive.wait()
        if getattr(self, "_zero", None):
            self._zero.close()
        if self.keepalive:
            self.keepalive.kill()
            self.keepalive.wait()
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _wait(condition, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for the PulseAudio {what}")
