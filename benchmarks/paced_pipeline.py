"""The pipeline's cost fed as fast as it goes, against fed at real time.

`latency.py` divides the daemon's CPU by its pipeline's, measured in a hot loop. The daemon
sleeps between hops, and its caches go cold in between. This feeds the same 60 s of speech
through Processor + Pipeline in one thread, a hop at a time, two ways: back to back ("hot"),
and each hop once it is due ("paced", as a live stream arrives). It prints each way's CPU in
% of one core, in turns.

    .venv/bin/python benchmarks/paced_pipeline.py [--seconds 60] [--rounds 2] [--model models/default]

Uses RAVDESS speech when ../shared/data is beside the project, else espeak-ng (as anchor.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000


def run(mode: str, seconds: float, model: str) -> float:
    """In the child: % of one core to feed `seconds` of speech one way."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from anchor import speech

    from streamemo.audio.sources import Chunk
    from streamemo.cli import keep_freed_memory
    from streamemo.config import PipelineConfig
    from streamemo.model import load_model
    from streamemo.stream.pipeline import Pipeline
    from streamemo.stream.processor import Processor

    keep_freed_memory()
    torch.set_num_threads(1)
    audio = np.asarray(speech(seconds), np.float32)
    config = PipelineConfig()
    processor = Processor(Pipeline(load_model(model), config), RATE, "paced")
    hop = round(config.hop_s * RATE)
    processor.process(Chunk(audio[:hop], 0.0))  # warm-up: first calls allocate
    processor.reset(RATE)
    cpu, start = time.process_time(), time.monotonic()
    for i in range(0, len(audio), hop):
        if mode == "paced" and (wait := (i + hop) / RATE - (time.monotonic() - start)) > 0:
            time.sleep(wait)
        processor.process(Chunk(audio[i : i + hop], 0.0))
    return 100 * (time.process_time() - cpu) / (len(audio) / RATE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--child", choices=["hot", "paced"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(run(args.child, args.seconds, args.model))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    print(f"{args.seconds:g} s of speech a hop at a time, one thread; load average {os.getloadavg()[0]:.2f}")
    print("| way | % of one core |\n|---|---|")
    for _ in range(args.rounds):
        for mode in ("hot", "paced"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--seconds", str(args.seconds),
                                  "--model", args.model], capture_output=True, text=True, env=env, check=True)
            print(f"| {mode} | {float(out.stdout.strip().splitlines()[-1]):.2f} |")


if __name__ == "__main__":
    main()
