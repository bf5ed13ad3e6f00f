"""`streamemo report` on a gigabyte: of random bytes, of zeros (one endless line), of random
bytes after one valid message (so all of it is read), and of a valid recording (about 2
million messages, as `subscribe --record` writes them). Each runs
the real CLI in its own process; what is recorded is its wall time, peak resident memory
(VmHWM) and exit status. Issue 31's bar: under 300 MB, finished or refused within a minute.

    .venv/bin/python benchmarks/report_bounds.py [--gb 1] [--dir /tmp]

The files are written to --dir and removed afterwards; the result goes to
benchmarks/results/report-bounds-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_path import result_path  # noqa: E402

from streamemo import EMOTIONS  # noqa: E402
from streamemo.dimensions import arousal_valence  # noqa: E402
from streamemo.protocol import to_json  # noqa: E402

# Runs the CLI in this child and prints its own peak memory: getrusage's ru_maxrss would be
# carried over from the parent across exec.
CHILD = """
import json, sys, time
from streamemo.cli import main
start = time.perf_counter()
code = main(["report", sys.argv[1], "-o", sys.argv[2]])
wall = time.perf_counter() - start
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"exit": code, "wall_s": round(wall, 2), "peak_rss_mib": round(hwm / 1024, 1)}))
"""


def write_garbage(path: Path, size: int, zeros: bool, after_a_message: bool = False) -> None:
    block = bytes(1 << 20) if zeros else None
    if after_a_message:
        write_recording(path, 1)
    with open(path, "ab" if after_a_message else "wb") as f:
        for _ in range(size >> 20):
            f.write(block if zeros else os.urandom(1 << 20))


def write_recording(path: Path, size: int) -> int:
    """A daemon's session as recorded: an emotion message every 0.24 s, a status message
    every second, voice about two thirds of the time in stretches; returns the lines."""
    rng = random.Random(0)
    t0, hop, lines, seq, written = 1_780_000_000.0, 0.24, 0, 0, 0
    probs = [1 / 8] * 8
    with open(path, "w") as f:
        while written < size:
            voiced = (seq // 40) % 3 != 2
            if voiced:
                raw = [rng.random() ** 3 for _ in EMOTIONS]
                probs = [round(p / sum(raw), 5) for p in raw]
            top = max(range(8), key=probs.__getitem__) if voiced else None
            dims = arousal_valence(EMOTIONS, probs) if voiced else None
            t = t0 + seq * hop
            line = to_json({"topic": "emotion", "v": 2, "seq": seq, "t_capture": round(t, 6),
                            "t_publish": round(t + 0.012, 6), "t_audio": round(2.0 + seq * hop, 6),
                            "labels": list(EMOTIONS), "probs": probs, "raw": probs if voiced else None,
                            "top": EMOTIONS[top] if voiced else None, "confidence": probs[top] if voiced else None,
                            "arousal": dims[0] if dims else None, "valence": dims[1] if dims else None,
                            "voiced": voiced, "speech": 0.93 if voiced else 0.02, "level_db": -31.4,
                            "source": "default", "model": "default@0123456789ab"}) + "\n"
            if seq % 4 == 0:
                line += to_json({"topic": "status", "v": 2, "seq": seq // 4, "t_publish": t, "source": "default",
                                 "device": "pulse", "input_state": "running", "sample_rate": 48000,
                                 "model_rate": 16000, "model": "default@0123456789ab", "uptime_s": seq * hop,
                                 "overflows": 0, "dropped_samples": 0, "repaired_samples": 0,
                                 "messages_sent": seq, "hop_s": hop, "proc_ms_p50": 3.1, "proc_ms_p99": 9.8,
                                 "compute": "cpu", "speech_share": 0.6, "adapted_s": 42.0,
                                 "message": "listening"}) + "\n"
                lines += 1
            f.write(line)
            written += len(line)
            lines += 1
            seq += 1
    return lines


def run(path: Path, out: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(out)], capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = round(time.perf_counter() - start, 2)
    result["stderr"] = done.stderr.strip()[-300:]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    size = int(args.gb * (1 << 30))
    results = {"gb": args.gb, "load_average_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        for name, make in (("random bytes", lambda p: write_garbage(p, size, zeros=False)),
                           ("zeros", lambda p: write_garbage(p, size, zeros=True)),
                           ("random bytes after a message",
                            lambda p: write_garbage(p, size, zeros=False, after_a_message=True)),
                           ("valid recording", lambda p: results.update(lines=write_recording(p, size)))):
            path = folder / "input.jsonl"
            make(path)
            results[name] = run(path, folder / "report")
            results[name]["input_bytes"] = path.stat().st_size
            print(name, json.dumps(results[name]), flush=True)
            path.unlink()
    results["load_average_at_end"] = os.getloadavg()
    out = result_path("report-bounds")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
