"""Soak: an hour of audio through the real daemon as fast as it goes, watched from outside.

    .venv/bin/python benchmarks/soak.py [--minutes 60] [--model models/default] [--out FILE.json]

The daemon runs as `streamemo run --source FILE --no-realtime` in its own process, with a
systemd notify socket (so its sd_notify path runs too) and a real SUB socket reading every
message. The audio is speech (espeak-ng), a voice-like tone and silence in turn, so the
network runs on about half of the windows and the voice-activity gate skips the rest.

With --reloads N it also sends SIGHUP N times (the model is re-read and swapped each time).

Checks, printed and saved as JSON:
  - every emotion message arrives, in order, with no gap: seq 0..N-1, N as the file implies;
  - the daemon's resident memory grows by less than 5 MB from the end of warm-up to the end;
  - its count of open file descriptors does not grow.
Memory is sampled from /proc every second of wall time (psutil); "warm-up" is the first 5%
of the audio, by which time every allocation a steady state needs has been made.

Without --model (and no models/default) it saves an untrained model of the default
architecture: a soak measures the plumbing, and weights do not change memory or speed.
Not part of `make test`: it takes minutes. Results: benchmarks/RESULTS-soak.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamemo.protocol import decode  # noqa: E402

RATE = 22050  # espeak-ng's native rate: the daemon resamples to the model's, as from a real device
RSS_LIMIT_MB = 5.0
WARMUP_FRACTION = 0.05


def make_audio(path: Path, minutes: float, workdir: Path) -> float:
    """Writes `minutes` of speech / tone / silence cycles to a FLAC file; returns its seconds."""
    speech_path = workdir / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech_path), "-s", "150",
                    "I cannot believe you did that. This is the best day of my whole life. "
                    "Please leave me alone, I am tired of all of this."], check=True, capture_output=True)
    speech, rate = sf.read(speech_path, dtype="float32")
    assert rate == RATE, rate
    t = np.arange(4 * RATE) / RATE
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    tone = sum(0.2 / k * np.sin(2 * np.pi * k * np.cumsum(f0) / RATE) for k in range(1, 8)).astype(np.float32)
    cycle = np.concatenate([speech, np.zeros(3 * RATE, np.float32), tone, np.zeros(5 * RATE, np.float32)])
    total = int(minutes * 60 * RATE)
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16", format="FLAC") as f:
        written = 0
        while written < total:
            block = cycle[: total - written]
            f.write(block)
            written += len(block)
    return total / RATE


def default_model(workdir: Path) -> Path:
    """models/default, else an untrained model of its architecture (the encoder model: the
    log-mel CNN-LSTM this made before is `small` now)."""
    from standin_model import default_or_standin  # benchmarks/, beside this script

    return Path(default_or_standin(None, workdir)[0])


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class Receiver(threading.Thread):
    """Reads every message as fast as it comes; keeps only what the checks need."""

    def __init__(self, endpoint: str):
        super().__init__(daemon=True)
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)  # never drop on our side: a gap must be the daemon's
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.emotion_seqs: list[int] = []
        self.voiced = 0
        self.status = 0
        self.last_status: dict | None = None
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            if self.sock.poll(100):
                topic, body = decode(self.sock.recv_multipart())
                if topic == "emotion":
                    self.emotion_seqs.append(body["seq"])
                    self.voiced += body["voiced"]
                else:
                    self.status += 1
                    self.last_status = body


class NotifyCounter(threading.Thread):
    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.counts: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            for line in data.split("\n"):
                key = line.split("=", 1)[0]
                self.counts[key] = self.counts.get(key, 0) + 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="minutes of audio (default 60)")
    parser.add_argument("--model", help="models/<name> (default: models/default, else an untrained one)")
    parser.add_argument("--hop", type=float, default=0.25)
    parser.add_argument("--reloads", type=int, default=0,
                        help="send SIGHUP this many times, evenly over the audio (model and config re-read); "
                             "at most one per second of wall time")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="streamemo-soak-"))
    try:
        audio = workdir / "soak.flac"
        seconds = make_audio(audio, args.minutes, workdir)
        model = Path(args.model) if args.model else default_model(workdir)
        endpoint = free_endpoint()
        notify = NotifyCounter(workdir / "notify")
        notify.start()
        env = {**os.environ, "NOTIFY_SOCKET": str(workdir / "notify"), "WATCHDOG_USEC": "20000000"}
        command = [sys.executable, "-m", "streamemo", "run", "--source", str(audio), "--no-realtime",
                   "--model", str(model), "--bind", endpoint, "--hop", str(args.hop), "--wait-subscriber", "60",
                   "--log-level", "warning"]
        daemon = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        receiver = Receiver(endpoint)
        receiver.start()
        process = psutil.Process(daemon.pid)
        samples = []  # (wall s, audio s published, rss bytes, open fds)
        # Spread over the first 90%: a SIGHUP after the last hop would find the daemon exiting.
        reload_at = [0.9 * seconds * (i + 1) / args.reloads for i in range(args.reloads)]
        t0 = time.monotonic()
        while daemon.poll() is None:
            try:
                rss, fds = process.memory_info().rss, process.num_fds()
            except psutil.NoSuchProcess:
                break
            audio_s = (len(receiver.emotion_seqs) - 1) * args.hop + 2.0 if receiver.emotion_seqs else 0.0
            samples.append((time.monotonic() - t0, audio_s, rss, fds))
            if reload_at and audio_s >= reload_at[0]:
                reload_at.pop(0)
                daemon.send_signal(signal.SIGHUP)
            time.sleep(1.0)
        wall = time.monotonic() - t0
        _, err = daemon.communicate()
        time.sleep(1.0)  # the last messages are in flight when the daemon exits
        receiver.stop.set()
        notify.stop.set()
        receiver.join()
        notify.join()

        info = sf.info(audio)
        rate_model = 16000
        n_model = int(round(info.frames * rate_model / info.samplerate))
        expected = (n_model - 2 * rate_model) // int(args.hop * rate_model) + 1
        seqs = receiver.emotion_seqs
        in_order = seqs == list(range(len(seqs)))
        steady = [s for s in samples if s[1] >= WARMUP_FRACTION * seconds]
        rss_start = steady[0][2] if steady else samples[0][2]
        rss_end = max(s[2] for s in samples[-5:])
        fds_start = steady[0][3] if steady else samples[0][3]
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)",
            "audio_s": round(seconds, 1),
            "wall_s": round(wall, 1),
            "speed_x_realtime": round(seconds / wall, 1),
            "model": json.loads(Path(f"{model}.json").read_text())["name"],
            "daemon_exit": daemon.returncode,
            "emotion_expected": expected,
            "emotion_received": len(seqs),
            "in_order_no_gaps": in_order,
            "voiced_fraction": round(receiver.voiced / max(1, len(seqs)), 3),
            "status_received": receiver.status,
            "daemon_sent": receiver.last_status["messages_sent"] if receiver.last_status else None,
            "rss_mb_after_warmup": round(rss_start / 2**20, 2),
            "rss_mb_end": round(rss_end / 2**20, 2),
            "rss_mb_max": round(max(s[2] for s in samples) / 2**20, 2),
            "rss_growth_mb": round((rss_end - rss_start) / 2**20, 2),
            "fds_after_warmup": fds_start,
            "fds_end": samples[-1][3],
            "fds_max": max(s[3] for s in steady or samples),
            "reloads_sent": args.reloads - len(reload_at),
            "notifications": notify.counts,
            "rss_mb_trace": [round(s[2] / 2**20, 1) for s in samples[:: max(1, len(samples) // 30)]],
        }
        checks = {
            "every message, in order, no gaps": in_order and len(seqs) == expected,
            f"RSS growth < {RSS_LIMIT_MB} MB": result["rss_growth_mb"] < RSS_LIMIT_MB,
            "no fd growth": result["fds_max"] <= fds_start,
            "daemon exit 0": daemon.returncode == 0,
            "every reload answered": notify.counts.get("RELOADING", 0) == args.reloads - len(reload_at),
        }
        result["checks"] = checks
        print(json.dumps(result, indent=2))
        if err.strip():
            print("daemon stderr:\n" + err, file=sys.stderr)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        for name, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}  {name}")
        return 0 if all(checks.values()) else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
