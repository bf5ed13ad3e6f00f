"""Latency, CPU and memory of the daemon on the virtual microphone.

Runs `streamemo run` on a private PulseAudio null sink (the test suite's recipe), plays
espeak-ng speech with pauses into it on a loop, subscribes over ZeroMQ, and reports:
- latency from a window's last captured sample (`t_capture`) to its message arriving at
  a subscriber, p50/p99;
- the daemon's CPU use in percent of one core, thread by thread (the main loop runs the
  pipeline; PortAudio's callback, PulseAudio's client, ZeroMQ's I/O and torch have their
  own threads), and its resident memory over time;
- its pipeline's own cost on the same audio (the loop file through Processor + Pipeline
  offline, one thread), and the daemon's CPU over it.

    .venv/bin/python benchmarks/latency.py --seconds 300 [--model models/default]

`--model` takes a path or a bundled name ("small"); without it, the bundled default, or
while models/default does not exist, an untrained stand-in with its architecture
(benchmarks/standin_model.py; `--model standin` asks for it by name).

Writes benchmarks/results/latency-<rate>-<seconds>s-<date>.json and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from pulse import PulseServer  # noqa: E402
from results_path import result_path  # noqa: E402  (benchmarks/, beside this script)
from standin_model import default_or_standin  # noqa: E402


def speech_loop_file(directory: Path) -> Path:
    """About 20 s: sentences from espeak-ng separated by 2 s pauses, at 22050 Hz."""
    parts = []
    for i, text in enumerate(["I can't believe you did that to me again.", "What a wonderful surprise, thank you so much.",
                              "Please leave me alone, I am tired.", "The meeting starts at nine tomorrow."]):
        wav = directory / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
        parts.append(str(wav))
        silence = directory / f"p{i}.wav"
        subprocess.run(["sox", "-n", "-r", "22050", "-c", "1", "-b", "16", str(silence), "trim", "0", "2"], check=True)
        parts.append(str(silence))
    out = directory / "loop.wav"
    subprocess.run(["sox", *parts, str(out)], check=True)
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each of the process's threads, by name (threads of one name summed;
    the main thread, which runs the pipeline, as "main")."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def pipeline_cost(wav: Path, args, rate_in: int) -> float:
    """The pipeline's own cost on the same audio, in % of one core at real time: the loop
    file fed through Processor + Pipeline (the daemon's processing, at the daemon's capture
    rate `rate_in`, in the reads the daemon makes) in a child process with one thread, CPU
    time of the feeding only."""
    code = f"""
import sys, time, soundfile as sf, soxr, torch
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from daemon_reads import feed_as_the_daemon_reads
from streamemo.config import PipelineConfig
from streamemo.model import load_model
from streamemo.stream.pipeline import Pipeline
from streamemo.stream.processor import Processor
from streamemo.cli import keep_freed_memory
keep_freed_memory()  # as the daemon does
torch.set_num_threads(1)
audio, rate = sf.read({str(wav)!r}, dtype="float32")
rate_in = {rate_in}
audio = soxr.resample(audio, rate, rate_in).astype("float32")
config = PipelineConfig() if {args.hop!r} is None else PipelineConfig(hop_s={args.hop!r})
processor = Processor(Pipeline(load_model({args.model!r}), config), rate_in, "cost")
rounds = 5
start = time.process_time()
for _ in range(rounds):
    feed_as_the_daemon_reads(processor, audio)
print(100.0 * (time.process_time() - start) / (rounds * len(audio) / rate_in))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--model", help="a path or bundled name; default: models/default, else a stand-in")
    parser.add_argument("--hop", type=float, default=None, help="pipeline.hop_s (default: the config's)")
    parser.add_argument("--capture-rate", type=int, default=0, help="0: native rate + soxr (the default)")
    parser.add_argument("--block", type=float, default=None, help="audio.block_s, PortAudio's block in seconds "
                                                                  "(default: the config's)")
    args = parser.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    pulse = PulseServer().start()
    stop = threading.Event()
    try:
        args.model, standin = default_or_standin(args.model, pulse.dir)
        loop_wav = speech_loop_file(pulse.dir)

        def play_forever():
            while not stop.is_set():
                pulse.play(loop_wav)

        extra = []
        if args.block is not None:
            config = pulse.dir / "latency.toml"
            config.write_text(f"[audio]\nblock_s = {args.block}\n")
            extra = ["--config", str(config)]
        daemon = subprocess.Popen([sys.executable, "-m", "streamemo", "run", "--model", args.model, "--bind", endpoint,
                                   *(["--hop", str(args.hop)] if args.hop else []), "--capture-rate", str(args.capture_rate),
                                   "--log-level", "warning", *extra], env=pulse.env)
        proc = psutil.Process(daemon.pid)
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(endpoint)
        # Warm-up: the first status means the model is loaded and audio flows.
        while not (sub.poll(200) and sub.recv_multipart()[0] == b"status"):
            if daemon.poll() is not None:
                raise SystemExit("the daemon exited during start-up")
        player = threading.Thread(target=play_forever, daemon=True)
        player.start()
        latencies, arrivals, published, voiced, statuses, rss = [], [], [], 0, [], []
        cpu0, threads0, t0 = proc.cpu_times(), thread_cpu(daemon.pid), time.monotonic()
        next_sample = t0
        while time.monotonic() - t0 < args.seconds:
            if sub.poll(100):
                topic, body = sub.recv_multipart()
                now = time.time()
                message = json.loads(body)
                if topic == b"emotion":
                    latencies.append((now - message["t_capture"]) * 1000.0)
                    arrivals.append(time.monotonic() - t0)
                    published.append((message["t_publish"] - message["t_capture"]) * 1000.0)
                    voiced += message["voiced"]
                else:
                    statuses.append(message)
            if time.monotonic() >= next_sample:
                rss.append((round(time.monotonic() - t0, 1), proc.memory_info().rss / 2**20))
                next_sample += 10.0
        cpu1, threads1, t1 = proc.cpu_times(), thread_cpu(daemon.pid), time.monotonic()
        daemon.terminate()
        daemon.wait(10)
        pipeline_percent = pipeline_cost(loop_wav, args, statuses[-1]["sample_rate"])
    finally:
        stop.set()
        pulse.stop()

    lat, when = np.asarray(latencies), np.asarray(arrivals)
    cpu_percent = 100.0 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (t1 - t0)
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "seconds": args.seconds,
        "hop_s": args.hop,
        "capture_rate": args.capture_rate or "native",
        "block_s": args.block,
        "model": statuses[-1]["model"] if statuses else args.model,
        "standin": standin,  # an untrained model with the default's architecture (standin_model.py)
        "messages": len(latencies),
        "voiced_messages": voiced,
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 2),
        "latency_ms_max": round(float(lat.max()), 2),
        # The daemon's share of it: from the window's last captured sample to its send.
        "capture_to_publish_ms_p50": round(float(np.percentile(published, 50)), 2),
        "capture_to_publish_ms_p99": round(float(np.percentile(published, 99)), 2),
        # The slowest messages and when they came (seconds into the run): a tail at start-up
        # or at each utterance's onset reads differently from one spread over the run.
        "latency_ms_slowest": [(round(float(lat[i]), 2), round(float(when[i]), 1)) for i in np.argsort(lat)[::-1][:8]],
        "proc_ms_p50_daemon": statuses[-1]["proc_ms_p50"] if statuses else None,
        "proc_ms_p99_daemon": statuses[-1]["proc_ms_p99"] if statuses else None,
        "overflows": statuses[-1]["overflows"] if statuses else None,
        "cpu_percent_of_one_core": round(cpu_percent, 2),
        "pipeline_cpu_percent_of_one_core": round(pipeline_percent, 2),
        "daemon_over_pipeline": round(cpu_percent / pipeline_percent, 2),
        "cpu_percent_by_thread": {name: round(100.0 * (t - threads0.get(name, 0.0)) / (t1 - t0), 2)
                                  for name, t in sorted(threads1.items(), key=lambda kv: -kv[1])
                                  if t - threads0.get(name, 0.0) > 0},
        "rss_mib_first": round(rss[0][1], 1),
        "rss_mib_last": round(rss[-1][1], 1),
        "rss_mib_series": [(t, round(m, 1)) for t, m in rss],
        "load_average_1min": psutil.getloadavg()[0],
    }
    rate = f"{args.capture_rate}hz" if args.capture_rate else "native"
    if args.block is not None:
        rate += f"-block{round(args.block * 1000)}ms"
    if standin:
        rate += f"-standin-hop{args.hop or 'default'}"
    elif Path(args.model).name != "default" or args.hop:
        named = Path(args.model)  # "small" (a bundled model's name) or a path
        rate += f"-{named.parent.name + '-' if named.parent.name else ''}{named.name}-hop{args.hop or 'default'}"
    # The length in the name: a short check must not overwrite the day's long run.
    out = result_path(f"latency-{rate}-{round(args.seconds)}s")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| messages | p50 latency | p99 latency | CPU (% of one core) | its pipeline alone | ratio | RSS start -> end |\n"
          f"|---|---|---|---|---|---|---|\n"
          f"| {result['messages']} | {result['latency_ms_p50']} ms | {result['latency_ms_p99']} ms | "
          f"{result['cpu_percent_of_one_core']} % | {result['pipeline_cpu_percent_of_one_core']} % | "
          f"{result['daemon_over_pipeline']} | {result['rss_mib_first']} -> {result['rss_mib_last']} MiB |")
    print("CPU by thread (% of one core): "
          + ", ".join(f"{name} {pct}" for name, pct in result["cpu_percent_by_thread"].items()))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
