"""What a CUDA GPU does for streamemo, checked and timed in one run (issues 16 and 28).
gpu_check.sh runs it on a lent GPU machine; `--device cpu` is a dry run of the same code here.

The log-mel model (`--small-model`, default `small`, the CNN-LSTM that was the default
until the encoder model):
1. The frontend on the GPU against the CPU: log-mel maps of the same windows, which must
   agree to 1e-4 (relative to the map's range); the largest difference is reported.
2. The frontend alone, a batch of 256 windows: CPU (one thread, all threads) and the GPU.
3. Training steps: the network's forward, backward and AdamW step on batches of 32
   feature maps (as the feature cache gives them), and the epoch they make for its
   recipe's training set.
4. Batched scoring as `classify` and evaluation do it (frontend + network, no gate), in
   windows per second and times real time at the daemon's 0.25 s hop.

The encoder model (`--model`: the bundled default, or while models/default does not exist
an untrained stand-in with its architecture, benchmarks/standin_model.py), keys `encoder_*`:
5. Whisper's log-mel and encoder (`EncoderFrontend`) on the GPU against the CPU: the
   features of a few seconds of speech (RAVDESS or espeak-ng when there, else the
   voice-like tones of 1.), fed as a stream from its first sample; the largest absolute
   difference and that over the features' range (must be <= 1e-3), as the GPU runs by
   default (cuDNN may use TF32 for the convolutions) and with TF32 off.
6. The live pipeline (`Pipeline.feed` in 10 ms pieces: gate, `BlockStream`, head,
   smoothing) on the GPU against the CPU on the same speech: the same windows voiced, and
   the largest difference of their probabilities (must be <= 1e-3); also the file path
   (the audio fed whole, windows batched) on the GPU against the CPU's live one, and the
   wall time of a voiced hop on each.
7. Encoder throughput: batches of single blocks (0.24 s each with its 0.525 s of past, as
   `BlockStream` and `classify` encode them) on CPU (one thread, all threads) and the GPU,
   in blocks per second and seconds of audio per second; and a whole file's scoring through
   the pipeline (`classify`'s path, gate included) in times real time.
8. Training steps of the head on cached encoder features (batch 32, forward, backward,
   AdamW), as the trainer runs them once the encoder's outputs are cached.

    python3 benchmarks/gpu_check.py [--device cuda] [--out benchmarks/results/gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from streamemo.config import PipelineConfig
from streamemo.features import Frontend
from streamemo.model import load_model
from streamemo.stream.pipeline import Pipeline, Scorer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: its helpers
from standin_model import default_or_standin  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EPOCH_CLIPS = 1894 * 3  # the small model's recipe: 1894 clips, each with 2 augmented copies
LIVE_CHUNK = 160  # samples per feed: the daemon's 10 ms blocks at 16 kHz


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


def train_step_ms(network, features: torch.Tensor, n_classes: int, device, repeats: int) -> float:
    """Milliseconds per AdamW step of `network` on a batch of `features` on `device`."""
    network = network.to(device).train()
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3)
    features = features.to(device)
    target = torch.arange(len(features), device=device) % n_classes

    def step():
        optimiser.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(network(features), target)
        loss.backward()
        optimiser.step()

    return timed(step, device, repeats)


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


def speech_or_tones(seconds: float, rate: int) -> tuple[np.ndarray, str]:
    """`seconds` of speech (anchor.py's: RAVDESS when ../shared/data is there, else espeak-ng),
    or, on a machine with neither (a lent GPU), the voice-like tones of `windows`."""
    try:
        from anchor import RAVDESS, speech  # noqa: PLC0415 (benchmarks/)

        return speech(seconds), "RAVDESS" if RAVDESS.is_dir() else "espeak-ng"
    except (ImportError, OSError, subprocess.CalledProcessError):
        return windows(1, round(seconds * rate), seed=2)[0].numpy(), "voice-like tones"


def logmel_checks(args, device: torch.device, result: dict) -> list[str]:
    """Sections 1-4, on the log-mel model; returns what failed."""
    model = load_model(args.small_model)
    samples = round(model.window_s * model.frontend.sample_rate)
    result["model"] = model.id

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
    ms = train_step_ms(model.network, reference[:32], len(model.labels), device, args.repeats * 5)
    result["train_ms_per_step_of_32"] = ms
    result["train_epoch_s_shipped_recipe"] = ms * EPOCH_CLIPS / 32 / 1000
    model.network.eval()

    # 4. batched scoring, as classify does it
    scorer = Scorer(load_model(args.small_model), device)  # fresh weights: the training steps changed these
    many = windows(1024, samples, seed=1).numpy()

    def score():
        for i in range(0, len(many), 256):
            scorer(many[i : i + 256])

    ms = timed(score, device, max(3, args.repeats // 4))
    result["score_windows_per_s"] = len(many) / (ms / 1000)
    result["score_times_real_time_at_0.25_s_hop"] = result["score_windows_per_s"] * 0.25
    return [] if result["frontend_agrees_to_1e-4"] else [
        f"the log-mel frontend on {device} differs from the CPU's by {worst:.2e} of its range"]


def feed_live(pipeline: Pipeline, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """`audio` through `pipeline` in LIVE_CHUNK pieces, as the daemon feeds it -> (voiced flags,
    raw probabilities of the voiced windows, wall ms of each call that scored a voiced window)."""
    voiced, probs, hop_ms = [], [], []
    for i in range(0, len(audio), LIVE_CHUNK):
        start = time.perf_counter()
        estimates = pipeline.feed(audio[i : i + LIVE_CHUNK])  # the probabilities come back on the CPU: synchronised
        if any(e.voiced for e in estimates):
            hop_ms.append((time.perf_counter() - start) * 1000)
        for e in estimates:
            voiced.append(e.voiced)
            if e.voiced:
                probs.append(e.raw)
    return np.asarray(voiced), np.asarray(probs).reshape(-1, len(pipeline.model.labels)), hop_ms


def encoder_checks(args, device: torch.device, result: dict) -> list[str]:
    """Sections 5-8, on the encoder model; returns what failed."""
    failed = []
    cpu = torch.device("cpu")
    model = load_model(args.model)
    if model.frontend.kind != "whisper":
        raise SystemExit(f"gpu_check: --model {args.model} is not an encoder model (frontend {model.frontend.kind})")
    rate = model.frontend.sample_rate
    result["encoder_model"] = model.id + (" (untrained stand-in)" if args.standin else "")
    audio, source = speech_or_tones(args.seconds, rate)
    result["encoder_audio"] = f"{source}, {len(audio) / rate:g} s"
    torch.set_num_threads(1)

    # 5. EncoderFrontend on the device against the CPU
    cpu_scorer, dev_scorer = Scorer(model, cpu), Scorer(model, device)
    wave = torch.from_numpy(audio)[None]
    reference = cpu_scorer.frontend(wave)
    scale = float(reference.max() - reference.min())

    def device_features():
        return dev_scorer.frontend(wave.to(device)).cpu()

    worst = float((device_features() - reference).abs().max())
    result["encoder_features_frames"] = reference.shape[-1]
    result["encoder_features_range"] = scale
    result["encoder_features_max_abs_difference"] = worst
    result["encoder_features_max_relative_difference"] = worst / scale
    if device.type == "cuda":
        result["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        result["cuda_matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        was = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            result["encoder_features_max_abs_difference_tf32_off"] = float((device_features() - reference).abs().max())
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = was
    result["encoder_features_agree_to_1e-3"] = worst / scale <= 1e-3
    if not result["encoder_features_agree_to_1e-3"]:
        failed.append(f"the encoder's features on {device} differ from the CPU's by {worst / scale:.2e} of their range")

    # 6. the live pipeline on the device against the CPU
    config = PipelineConfig()
    live = {}
    for name, dev in (("cpu", cpu), ("device", device)):
        pipeline = Pipeline(model, config, dev)
        feed_live(pipeline, audio[: 3 * rate])  # warm-up: first calls allocate (and compile, on a GPU)
        pipeline.reset(speaker=True)
        live[name] = feed_live(pipeline, audio)
        result[f"encoder_live_voiced_hop_ms_p50_{name}"] = float(np.percentile(live[name][2], 50))
        result[f"encoder_live_voiced_hop_ms_p99_{name}"] = float(np.percentile(live[name][2], 99))
    same_voicing = bool(np.array_equal(live["cpu"][0], live["device"][0]))
    result["encoder_live_windows"] = len(live["cpu"][0])
    result["encoder_live_voiced_windows"] = int(live["cpu"][0].sum())
    result["encoder_live_same_windows_voiced"] = same_voicing
    if same_voicing:
        diff = float(np.abs(live["cpu"][1] - live["device"][1]).max())
        result["encoder_live_probabilities_max_abs_difference"] = diff
        if diff > 1e-3:
            failed.append(f"the live pipeline's probabilities on {device} differ from the CPU's by {diff:.2e}")
    else:
        failed.append(f"the live pipeline on {device} voiced other windows than on the CPU")
    pipeline = Pipeline(model, config, device)
    whole = [e for e in pipeline.feed(audio) if e.voiced]  # a file: windows batched, each block encoded once
    if len(whole) == len(live["cpu"][1]):
        diff = float(np.abs(np.stack([e.raw for e in whole]) - live["cpu"][1]).max())
        result["encoder_file_on_device_vs_live_cpu_max_abs_difference"] = diff
        if diff > 1e-3:
            failed.append(f"a file's probabilities on {device} differ from the CPU's live ones by {diff:.2e}")
    else:
        failed.append(f"a file on {device} voiced {len(whole)} windows, the CPU's stream {len(live['cpu'][1])}")

    # 7. encoder throughput on batches of single blocks, and a file through the pipeline
    frontend = model.frontend
    span = cpu_scorer.frontend.block_samples + cpu_scorer.frontend.past_samples
    block_s = frontend.block_samples / rate
    starts = np.random.default_rng(3).integers(0, len(audio) - span, 1024)
    segments = torch.from_numpy(np.stack([audio[i : i + span] for i in starts]))

    def encode(scorer, batch):
        with torch.inference_mode():
            scorer.frontend.blocks_ending(batch, 1)

    cpu_batch = segments[: args.cpu_batch]
    for threads, label in ((1, "cpu_1_thread"), (os.cpu_count(), "cpu_all_threads")):
        torch.set_num_threads(threads)
        ms = timed(lambda: encode(cpu_scorer, cpu_batch), cpu, max(3, args.repeats // 4))
        result[f"encoder_blocks_per_s_{label}"] = len(cpu_batch) / (ms / 1000)
        result[f"encoder_audio_s_per_s_{label}"] = result[f"encoder_blocks_per_s_{label}"] * block_s
    torch.set_num_threads(1)
    for size in ((256, 1024) if device.type == "cuda" else (args.cpu_batch,)):
        on = segments[:size].to(device)
        ms = timed(lambda: encode(dev_scorer, on), device, args.repeats)
        result[f"encoder_blocks_per_s_device_batch_{size}"] = size / (ms / 1000)
        result[f"encoder_audio_s_per_s_device_batch_{size}"] = size / (ms / 1000) * block_s
    for name, dev in (("cpu_1_thread", cpu), ("device", device)):
        pipeline = Pipeline(model, config, dev)
        pipeline.feed(audio[: 3 * rate])
        pipeline.reset(speaker=True)
        start = time.perf_counter()
        pipeline.feed(audio)
        result[f"encoder_file_times_real_time_{name}"] = len(audio) / rate / (time.perf_counter() - start)

    # 8. the head's training steps on cached encoder features
    features = torch.randn(32, frontend.n_features, frontend.frames(round(model.window_s * rate)))
    result["encoder_head_train_ms_per_step_of_32"] = train_step_ms(load_model(args.model).network, features,
                                                                   len(model.labels), device, args.repeats * 5)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", help="the encoder model; default: models/default, else an untrained stand-in")
    parser.add_argument("--small-model", default="small", help="the log-mel model of sections 1-4 (default: small)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0, help="speech for sections 5-7")
    parser.add_argument("--cpu-batch", type=int, default=32, help="blocks per CPU encoder batch in 7")
    parser.add_argument("--skip-logmel", action="store_true", help="sections 5-8 only")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"gpu_check: torch {torch.__version__} sees no CUDA GPU here (CUDA build: "
                         f"{torch.version.cuda}); nothing was checked. Run it on a GPU machine, or "
                         "`--device cpu` (GPU_CHECK_DEVICE=cpu for gpu_check.sh) for a dry run of its CPU parts")
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "cpu_threads": os.cpu_count()}
    failed = [] if args.skip_logmel else logmel_checks(args, device, result)
    with tempfile.TemporaryDirectory() as tmp:
        args.model, args.standin = default_or_standin(args.model, tmp)
        failed += encoder_checks(args, device, result)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    if failed:
        raise SystemExit("gpu_check: " + "; ".join(failed))


if __name__ == "__main__":
    main()
