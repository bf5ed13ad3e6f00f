"""Two models' live pipelines side by side on the same audio (issue 28): CPU per second of
audio, the ratio, per-hop time, and resident memory against a bare `import torch`.

    .venv/bin/python benchmarks/model_cost.py [--seconds 120] [--chunk 160] [--rounds 2] [--model A] [--baseline small]

Model A is `--model` (a path or a bundled name); without it the bundled default, or, while
models/default does not exist yet, an untrained stand-in with exactly its architecture
(benchmarks/standin_model.py; `--model standin` asks for it by name). Model B is
`--baseline` (default: `small`, the log-mel CNN-LSTM).

Each model runs in a child process of this one, one after the other, A then B, `--rounds`
times, with one torch thread, over the same 16 kHz speech (RAVDESS clips joined when
../shared/data is beside the project, else espeak-ng speech: anchor.py's `speech`), fed to
`Pipeline.feed` in `--chunk`-sample pieces (160: the daemon's 10 ms blocks at 16 kHz) with
a capture time, as the daemon feeds it. A child warms up on the audio's first 3 s (first
calls allocate), starts the stream afresh, feeds all of it, and reports:
- the process CPU time of the feeding only, per second of audio (% of one core);
- the wall time of the calls that completed a window (a hop's work: gate, features,
  network, smoothing), p50 / p99 / max in ms, and p50 / p99 of those with a voiced
  window (the ones that run the model): the pipeline's part of capture-to-publish;
- its resident memory at the end and its peak (MiB).
A third child reports a bare `import torch`'s resident memory (numpy included), the floor
a torch daemon sits on. Absolute CPU figures move with the box's load; compare the ratio
of one run. Writes benchmarks/results/model-cost-<date>.json (results_path.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `import streamemo` sets it
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from anchor import RAVDESS, RATE, speech  # noqa: E402  (benchmarks/, beside this script)
from results_path import result_path  # noqa: E402
from standin_model import default_or_standin  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WARM_UP_S = 3.0


def status_mib(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib() -> float:
    return status_mib("VmRSS")


def peak_rss_mib() -> float:
    """This process's peak resident memory since it exec'd. Not getrusage's ru_maxrss: Linux
    carries that over from the forked copy of the parent across exec, so a child reported
    at least the parent's resident memory (352 MiB for both models here, the parent having
    imported torch to write the stand-in)."""
    return status_mib("VmHWM")


def run_pipeline(audio: np.ndarray, chunk: int, model_path: str, hop: float | None) -> dict:
    import torch

    from streamemo.cli import keep_freed_memory
    from streamemo.config import PipelineConfig
    from streamemo.model import load_model
    from streamemo.stream.pipeline import Pipeline

    keep_freed_memory()  # as every streamemo command does
    torch.set_num_threads(1)
    model = load_model(model_path)
    pipeline = Pipeline(model, PipelineConfig() if hop is None else PipelineConfig(hop_s=hop))
    for i in range(0, int(WARM_UP_S * RATE), chunk):
        pipeline.feed(audio[i : i + chunk], time.time())
    pipeline.reset(speaker=True)  # (and the encoder's blocks)
    pieces = [audio[i : i + chunk] for i in range(0, len(audio), chunk)]
    hop_ms, voiced_ms, windows, voiced = [], [], 0, 0
    start = time.process_time()
    for piece in pieces:
        t0 = time.perf_counter()
        estimates = pipeline.feed(piece, time.time())
        if estimates:
            ms = (time.perf_counter() - t0) * 1000
            hop_ms.append(ms)
            windows += len(estimates)
            if any(e.voiced for e in estimates):
                voiced += sum(e.voiced for e in estimates)
                voiced_ms.append(ms)
    cpu = time.process_time() - start
    ms, vms = np.asarray(hop_ms), np.asarray(voiced_ms or [np.nan])
    return {"model": model.id, "arch": model.arch, "frontend": model.frontend.kind,
            "hop_s": pipeline.hop / pipeline.rate, "cpu_s": cpu, "audio_s": len(audio) / RATE,
            "windows": windows, "voiced_windows": voiced,
            "encoder_blocks": None if pipeline.blocks is None else pipeline.blocks.encoded,
            "hop_ms_p50": float(np.percentile(ms, 50)), "hop_ms_p99": float(np.percentile(ms, 99)),
            "hop_ms_max": float(ms.max()), "voiced_hop_ms_p50": float(np.percentile(vms, 50)),
            "voiced_hop_ms_p99": float(np.percentile(vms, 99)), "rss_mib": rss_mib(), "peak_rss_mib": peak_rss_mib()}


def run_torch(*_args) -> dict:
    import torch  # noqa: F401

    return {"rss_mib": rss_mib(), "peak_rss_mib": peak_rss_mib()}


def child(engine: str, audio: Path, args, model: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--engine", engine, "--audio", str(audio), "--chunk",
                          str(args.chunk), "--model", model, *(["--hop", str(args.hop)] if args.hop else [])],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"model_cost: the {engine} child for {model} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--chunk", type=int, default=160, help="samples fed per call (160: 10 ms, the daemon's block)")
    parser.add_argument("--rounds", type=int, default=2, help="A then B, this many times")
    parser.add_argument("--model", help="model A: a path or bundled name; default: models/default, else a stand-in")
    parser.add_argument("--baseline", default="small", help="model B (default: small)")
    parser.add_argument("--hop", type=float, default=None, help="pipeline.hop_s (default: the config's, 0.24)")
    parser.add_argument("--engine", choices=("pipeline", "torch"), help=argparse.SUPPRESS)  # a child's job
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        run = run_pipeline if args.engine == "pipeline" else run_torch
        print(json.dumps(run(np.load(args.audio), args.chunk, args.model, args.hop)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        model_a, standin = default_or_standin(args.model, tmp)
        path = Path(tmp) / "audio.npy"
        np.save(path, speech(args.seconds))
        load = [os.getloadavg()[0]]
        torch_only = child("torch", path, args, model_a)
        rounds = []
        for _ in range(args.rounds):
            a = child("pipeline", path, args, model_a)
            b = child("pipeline", path, args, args.baseline)
            rounds.append({"a": a, "b": b, "ratio": a["cpu_s"] / b["cpu_s"]})
            load.append(os.getloadavg()[0])
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "audio": f"{'RAVDESS' if RAVDESS.is_dir() else 'espeak-ng'} speech, {args.seconds:g} s at {RATE} Hz",
        "chunk": args.chunk, "hop_s": args.hop, "threads": 1,
        "model_a": "untrained stand-in, the default's architecture" if standin else model_a,
        "model_b": args.baseline,
        "import_torch": torch_only, "rounds": rounds,
        "ratio_median": statistics.median(r["ratio"] for r in rounds),
        "a_peak_rss_over_import_torch_mib": max(r["a"]["peak_rss_mib"] for r in rounds) - torch_only["rss_mib"],
        "load_average_1min": load,
    }
    out = result_path("model-cost")
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{result['audio']}, {args.chunk}-sample chunks, one thread; "
          f"load average {', '.join(f'{x:.2f}' for x in load)}")
    print(f"A: {result['model_a']} ({rounds[0]['a']['model']}); B: {args.baseline} ({rounds[0]['b']['model']})")
    print("| round | model | CPU s | % of one core | hop p50 / p99 / max ms | voiced hop p50 / p99 ms | "
          "voiced / windows | RSS / peak MiB | A / B |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, r in enumerate(rounds, 1):
        for name in ("a", "b"):
            x, ratio = r[name], f"{r['ratio']:.2f}" if name == "a" else ""
            print(f"| {n} | {name.upper()} | {x['cpu_s']:.2f} | {100 * x['cpu_s'] / x['audio_s']:.2f} % | "
                  f"{x['hop_ms_p50']:.2f} / {x['hop_ms_p99']:.2f} / {x['hop_ms_max']:.1f} | "
                  f"{x['voiced_hop_ms_p50']:.2f} / {x['voiced_hop_ms_p99']:.2f} | {x['voiced_windows']} / {x['windows']} | {x['rss_mib']:.0f} / {x['peak_rss_mib']:.0f} | "
                  f"{ratio} |")
    print(f"bare `import torch`: {torch_only['rss_mib']:.0f} MiB resident; A's peak is "
          f"{result['a_peak_rss_over_import_torch_mib']:.0f} MiB above it")
    print(f"ratio A / B (median of {args.rounds}): {result['ratio_median']:.2f}")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
