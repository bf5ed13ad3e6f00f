"""streamemo's pipeline against a shipped streaming classifier on the same audio (issue 16):
CPU per second of audio for each, and the ratio.

    .venv/bin/pip install pymicro-wakeword==2.5.0   # the anchor; not a project dependency
    .venv/bin/python benchmarks/anchor.py [--seconds 300] [--chunk 1024] [--model models/default] [--hop 0.24] [--live]

The anchor is microWakeWord (pymicro-wakeword, model okay_nabu): its `MicroWakeWordFeatures`
and `MicroWakeWord.process_streaming`, as Home Assistant's voice satellites run it. Each
engine runs in a child process of this one (one process tree), one after the other, with one
thread, over the same 16 kHz audio fed in `--chunk`-sample pieces: RAVDESS speech when
../shared/data is beside the project, else espeak-ng speech. A child reports the process CPU
time of processing only (loading excluded) and its peak resident memory. Absolute figures
here move 2-3x between days; the ratio from one run is what to compare. `--model` takes a
path or a bundled name ("small"); without it, the bundled default, or while models/default
does not exist, an untrained stand-in with its architecture (benchmarks/standin_model.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `import streamemo` sets it

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RAVDESS = ROOT.parent / "shared" / "data" / "ravdess"
RATE = 16000


def speech(seconds: float) -> np.ndarray:
    """`seconds` of speech at 16 kHz: RAVDESS clips joined in name order, else espeak-ng."""
    from streamemo.audio.files import load_audio

    if RAVDESS.is_dir():
        parts, total = [], 0
        for path in sorted(RAVDESS.rglob("*.flac")):
            parts.append(load_audio(path, RATE))
            total += len(parts[-1])
            if total >= seconds * RATE:
                break
        audio = np.concatenate(parts)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "speech.wav"
            subprocess.run(["espeak-ng", "-w", str(wav), "The quick brown fox jumps over the lazy dog. " * 20],
                           check=True, capture_output=True)
            one = load_audio(wav, RATE)
        audio = np.tile(one, int(seconds * RATE // len(one)) + 1)
    return audio[: int(seconds * RATE)].astype(np.float32)


def run_streamemo(audio: np.ndarray, chunk: int, model: str, hop: float, live: bool) -> None:
    import torch

    from streamemo.audio.sources import Chunk
    from streamemo.cli import keep_freed_memory
    from streamemo.config import PipelineConfig
    from streamemo.model import load_model
    from streamemo.stream.pipeline import Pipeline
    from streamemo.stream.processor import Processor
    from daemon_reads import feed_as_the_daemon_reads  # benchmarks/, beside this script

    keep_freed_memory()  # as every streamemo command does
    torch.set_num_threads(1)
    processor = Processor(Pipeline(load_model(model), PipelineConfig(hop_s=hop)), RATE, "anchor")
    pieces = [audio[i : i + chunk] for i in range(0, len(audio), chunk)]
    processor.process(Chunk(pieces[0], 0.0))  # warm-up: first calls allocate
    processor.reset(RATE)
    start = time.process_time()
    if live:
        feed_as_the_daemon_reads(processor, audio)
    else:
        for piece in pieces:
            processor.process(Chunk(piece, time.time()))
    report(time.process_time() - start, len(audio))


def run_microwakeword(audio: np.ndarray, chunk: int, _model: str, _hop: float, _live: bool) -> None:
    from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model

    features, detector = MicroWakeWordFeatures(), MicroWakeWord.from_builtin(Model.OKAY_NABU)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    pieces = [pcm[i : i + 2 * chunk] for i in range(0, len(pcm), 2 * chunk)]
    start = time.process_time()
    for piece in pieces:
        for frame in features.process_streaming(piece):
            detector.process_streaming(frame)
    report(time.process_time() - start, len(audio))


def report(cpu_s: float, samples: int) -> None:
    # VmHWM, not getrusage's ru_maxrss: Linux carries that over from the forked copy of the
    # parent across exec, so a child reported at least this process's resident memory.
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"cpu_s": cpu_s, "audio_s": samples / RATE, "peak_rss_mb": hwm / 1024}))


ENGINES = {"streamemo": run_streamemo, "microWakeWord": run_microwakeword}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--chunk", type=int, default=1024, help="samples fed per call (1024: 64 ms)")
    parser.add_argument("--model", help="a path or bundled name; default: models/default, else a stand-in")
    parser.add_argument("--hop", type=float, default=0.24, help="pipeline.hop_s (default 0.24, as the config's)")
    parser.add_argument("--live", action="store_true",
                        help="streamemo reads as the daemon does: what the pipeline asks for (the rest of the next "
                             "window, or half a hop while an encoder model may encode ahead), then Processor.prepare")
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)  # a child's job
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        ENGINES[args.engine](np.load(args.audio), args.chunk, args.model, args.hop, args.live)
        return
    with tempfile.TemporaryDirectory() as tmp:
        from standin_model import default_or_standin  # noqa: PLC0415 (benchmarks/; not a child's import)

        args.model, standin = default_or_standin(args.model, tmp)
        path = Path(tmp) / "audio.npy"
        np.save(path, speech(args.seconds))
        results = {}
        for engine in ENGINES:
            out = subprocess.run([sys.executable, __file__, "--engine", engine, "--audio", str(path),
                                  "--chunk", str(args.chunk), "--model", args.model, "--hop", str(args.hop),
                                  *(["--live"] if args.live else [])],
                                 capture_output=True, text=True, check=True)
            results[engine] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{results['streamemo']['audio_s']:.0f} s of {'RAVDESS' if RAVDESS.is_dir() else 'espeak-ng'} speech, "
          f"{args.chunk}-sample chunks{' (streamemo: read as the daemon reads)' if args.live else ''}, "
          f"one thread each; load average {os.getloadavg()[0]:.2f}"
          + ("; streamemo: an untrained stand-in for the default model" if standin else ""))
    print("| engine | CPU s | % of one core | peak RSS MiB |")
    print("|---|---|---|---|")
    for engine, r in results.items():
        print(f"| {engine} | {r['cpu_s']:.2f} | {100 * r['cpu_s'] / r['audio_s']:.2f} % | {r['peak_rss_mb']:.0f} |")
    ratio = results["streamemo"]["cpu_s"] / results["microWakeWord"]["cpu_s"]
    print(f"ratio streamemo / microWakeWord: {ratio:.2f}")


if __name__ == "__main__":
    main()
