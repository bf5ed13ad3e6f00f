"""What capturing alone costs: PortAudio's callback against a thread of blocking reads.

The daemon's audio callback only copies into a ring and counts, yet its thread took 1.6 %
of a core at 10 ms blocks (benchmarks/RESULTS-daemon-cost.md), twice the pipeline. Is that
Python's GIL, taken 100 times a second from a thread Python did not start, or the audio
stack under it? This opens the virtual microphone (tests/pulse.py) at 16 kHz with 10 ms
blocks in a child process, two ways, each copying every block into a numpy ring and
nothing else:
- `callback`: sounddevice's callback, as the daemon captures;
- `blocking`: no callback; a Python thread calls `stream.read(block)` in a loop;

and, for what no Python and no ALSA cost, `pacat`: PulseAudio's own recorder at the same
rate and latency, writing to /dev/null. It prints each thread's CPU in % of one core over
`--seconds`, in turns.

    .venv/bin/python benchmarks/capture_cost.py [--seconds 20] [--block 0.01] [--rounds 2]

Writes benchmarks/results/capture-<block>ms-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from results_path import result_path  # benchmarks/, beside this script

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000


def thread_cpu_s(pid: str = "self") -> dict[str, float]:
    """CPU seconds of each thread of process `pid`, by name/tid."""
    out, tick = {}, os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            stat = f.read()
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        out[f"{name}/{tid}"] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def capture(mode: str, seconds: float, block_s: float) -> dict:
    """In the child: capture for `seconds` one way; per-thread CPU, in % of one core."""
    import numpy as np
    import sounddevice as sd

    block = round(block_s * RATE)
    ring, written = np.zeros(10 * RATE, np.float32), [0]

    def copy(samples) -> None:
        at = written[0] % len(ring)
        n = min(len(samples), len(ring) - at)
        ring[at : at + n] = samples[:n]
        written[0] += len(samples)

    settings = dict(device="pulse", channels=1, samplerate=RATE, dtype="float32", blocksize=block, latency="low")
    stop, reader = threading.Event(), None
    if mode == "callback":
        stream = sd.InputStream(**settings, callback=lambda indata, frames, t, status: copy(indata[:, 0]))
        stream.start()
    else:
        stream = sd.InputStream(**settings)
        stream.start()

        def reads() -> None:
            while not stop.is_set():
                copy(stream.read(block)[0][:, 0])

        reader = threading.Thread(target=reads, daemon=True)
        reader.start()
    time.sleep(2.0)  # past the stream's start
    before, at, t0 = thread_cpu_s(), written[0], time.monotonic()
    time.sleep(seconds)
    after, wall = thread_cpu_s(), time.monotonic() - t0
    stop.set()
    if reader is not None:
        reader.join()  # stopping the stream under a read in progress crashes PortAudio
    stream.stop()
    threads = {k: round(100 * (after[k] - before.get(k, 0.0)) / wall, 2) for k in after}
    return {"mode": mode, "audio_s": round((written[0] - at) / RATE, 2), "wall_s": round(wall, 2),
            "threads_pct": {k: v for k, v in threads.items() if v > 0}, "total_pct": round(sum(threads.values()), 2)}


def pacat(seconds: float, block_s: float, env: dict) -> dict:
    """PulseAudio's own client recording at RATE with `block_s` latency, into /dev/null."""
    proc = subprocess.Popen(["pacat", "--record", f"--rate={RATE}", "--channels=1", "--format=float32le",
                             f"--latency-msec={round(block_s * 1000)}"], env=env, stdout=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        before, t0 = thread_cpu_s(str(proc.pid)), time.monotonic()
        time.sleep(seconds)
        after, wall = thread_cpu_s(str(proc.pid)), time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait()
    threads = {k: round(100 * (after[k] - before.get(k, 0.0)) / wall, 2) for k in after}
    return {"mode": "pacat", "audio_s": None, "wall_s": round(wall, 2),
            "threads_pct": {k: v for k, v in threads.items() if v > 0}, "total_pct": round(sum(threads.values()), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--block", type=float, default=0.01, help="seconds per block (the daemon's audio.block_s)")
    parser.add_argument("--rounds", type=int, default=2, help="turns of each way, alternating")
    parser.add_argument("--child", choices=["callback", "blocking"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(capture(args.child, args.seconds, args.block)))
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from pulse import PulseServer

    pulse = PulseServer().start()
    runs = []
    try:
        for _ in range(args.rounds):
            runs.append(pacat(args.seconds, args.block, pulse.env))
            for mode in ("callback", "blocking"):
                out = subprocess.run([sys.executable, __file__, "--child", mode, "--seconds", str(args.seconds),
                                      "--block", str(args.block)], env=pulse.env, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(out.stderr[-2000:])
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        pulse.stop()
    print(f"16 kHz, {args.block * 1000:g} ms blocks, {args.seconds:g} s each; load average {os.getloadavg()[0]:.2f}")
    print("| way | audio s | threads (% of one core) | total % |\n|---|---|---|---|")
    for r in runs:
        threads = ", ".join(f"{k.split('/')[0]} {v}" for k, v in sorted(r["threads_pct"].items(), key=lambda kv: -kv[1]))
        print(f"| {r['mode']} | {r['audio_s'] or '-'} | {threads} | {r['total_pct']} |")
    path = result_path(f"capture-{round(args.block * 1000)}ms")
    path.write_text(json.dumps({"date": datetime.datetime.now().isoformat(timespec="seconds"), "rate": RATE,
                                "block_s": args.block, "load_average_1min": os.getloadavg()[0], "runs": runs},
                               indent=2) + "\n")
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
