"""What a CUDA GPU does for streamemo, checked and timed in one run (issue 16). gpu_check.sh
runs it on a lent GPU machine; `--device cpu` is a dry run of the same code here.

1. The frontend on the GPU against the CPU: log-mel maps of the same windows, which must
   agree to 1e-4 (relative to the map's range); the largest difference is reported.
2. The frontend alone, a batch of 256 windows: CPU (one thread, all threads) and the GPU.
3. Training steps: the shipped network's forward, backward and AdamW step on batches of 32
   feature maps (as the feature cache gives them), and the epoch they make for the shipped
   recipe's training set.
4. Batched scoring as `classify` and evaluation do it (frontend + network, no gate), in
   windows per second and times real time at the daemon's 0.25 s hop.

    python3 benchmarks/gpu_check.py [--device cuda] [--out benchmarks/results/gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from streamemo.features import Frontend
from streamemo.model import load_model
from streamemo.stream.pipeline import Scorer

ROOT = Path(__file__).resolve().parent.parent
EPOCH_CLIPS = 1894 * 3  # the shipped recipe: 1894 clips, each with 2 augmented copies


def windows(n: int, samples: int, seed: int = 0) -> torch.Tensor:
    """Speech-like test windows: harmonic tones with a wandering pitch over soft noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    out = np.empty((n, samples), np.float32)
    for i in range(n):
        f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / 16000
        voice = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
        out[i] = 0.1 * voice + 0.003 * rng.standard_normal(samples)
    return torch.from_numpy(out)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median milliseconds per call, after warm-up, the GPU synchronised around each call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA GPU here; run it on a GPU machine, or --device cpu for a dry run")
    model = load_model(args.model)
    samples = round(model.window_s * model.frontend.sample_rate)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "model": model.id, "cpu_threads": os.cpu_count()}

    # 1. the frontend on the device against the CPU
    batch = windows(256, samples)
    cpu_frontend, dev_frontend = Frontend(model.frontend), Frontend(model.frontend).to(device)
    reference = cpu_frontend(batch)
    on_device = dev_frontend(batch.to(device)).cpu()
    scale = float(reference.max() - reference.min())
    worst = float((on_device - reference).abs().max()) / scale
    result["frontend_max_relative_difference"] = worst
    result["frontend_agrees_to_1e-4"] = worst <= 1e-4

    # 2. the frontend alone
    torch.set_num_threads(1)
    result["frontend_ms_per_256_windows_cpu_1_thread"] = timed(lambda: cpu_frontend(batch), torch.device("cpu"),
                                                               args.repeats)
    torch.set_num_threads(os.cpu_count())
    result["frontend_ms_per_256_windows_cpu_all_threads"] = timed(lambda: cpu_frontend(batch), torch.device("cpu"),
                                                                  args.repeats)
    on = batch.to(device)
    result["frontend_ms_per_256_windows_device"] = timed(lambda: dev_frontend(on), device, args.repeats)

    # 3. training steps
    network = model.network.to(device).train()
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3)
    features = reference[:32].to(device)
    target = torch.arange(32, device=device) % len(model.labels)

    def step():
        optimiser.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(network(features), target)
        loss.backward()
        optimiser.step()

    ms = timed(step, device, args.repeats * 5)
    result["train_ms_per_step_of_32"] = ms
    result["train_epoch_s_shipped_recipe"] = ms * EPOCH_CLIPS / 32 / 1000
    network.eval()

    # 4. batched scoring, as classify does it
    scorer = Scorer(load_model(args.model), device)  # fresh weights: the training steps changed these
    many = windows(1024, samples, seed=1).numpy()

    def score():
        for i in range(0, len(many), 256):
            scorer(many[i : i + 256])

    ms = timed(score, device, max(3, args.repeats // 4))
    result["score_windows_per_s"] = len(many) / (ms / 1000)
    result["score_times_real_time_at_0.25_s_hop"] = result["score_windows_per_s"] * 0.25

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    if not result["frontend_agrees_to_1e-4"]:
        raise SystemExit(f"gpu_check: the frontend on {device} differs from the CPU's by {worst:.2e} of its range")


if __name__ == "__main__":
    main()
