#!/usr/bin/env python3
"""Check a converted Whisper encoder (scripts/convert_whisper.py, all layers) against
ctranslate2's own encoder on real speech, once; optionally write the test's reference.

ctranslate2 lives in its own venv (it is no dependency of streamemo), so this runs in two
interpreters: the project's computes the log-mel (streamemo.encoder.whisper's numpy
reference, 30 s padded as Whisper does) and our encoder's output, and runs this same file
under the ctranslate2 venv (stage --ct2-stage, which needs only ctranslate2 and numpy) on the
same features; then it compares. Setup and run:

    python3 -m venv /tmp/ct2venv && /tmp/ct2venv/bin/pip install ctranslate2==4.8.5 numpy
    .venv/bin/python scripts/convert_whisper.py --model tiny.en \\
        -o /tmp/whisper-tiny.en-all.safetensors --ct2-dir /tmp/ct2-tiny.en
    .venv/bin/python scripts/verify_whisper_ct2.py --encoder /tmp/whisper-tiny.en-all.safetensors \\
        --ct2-model /tmp/ct2-tiny.en [--write-test-reference tests/data/whisper_reference.npz]

Prints, per file, max |a - b|, ||a - b|| / ||b|| and max |a - b| / max |b| (a ours, b
ctranslate2's, both float32 from the same float16 weights); fails past 1e-3 relative.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
DEFAULT_AUDIO = [DATA / "ravdess/Actor_01/03-01-05-02-01-01-01.flac", DATA / "emodb/03a01Fa.flac",
                 DATA / "emodb/03a01Wa.flac"]
TOLERANCE = 1e-3  # relative, both measures
N_SAMPLES = 480000  # Whisper's 30 s input
REFERENCE_LAYERS = 2  # the shipped file's
REFERENCE_FRAMES = 20


def ct2_stage(features: Path, model_dir: Path, out: Path) -> None:
    """Under the ctranslate2 venv: features.npz (N, 80, 3000) -> out.npz (N, 1500, d_model)."""
    import ctranslate2  # noqa: PLC0415

    model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    mels = np.load(features)["mel"]
    outputs = []
    for mel in mels:
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32))
        outputs.append(np.array(model.encode(view, to_cpu=True))[0])
    np.savez(out, encoded=np.stack(outputs), version=ctranslate2.__version__)


def vowel_like(seconds: float = 1.0, sample_rate: int = 16000) -> np.ndarray:
    """A deterministic voiced, vowel-like signal: harmonics of a gliding f0 (110 -> 170 Hz with
    5 Hz vibrato) shaped by three formants moving from /a/ to /i/, a little seeded breath
    noise, 50 ms fades. No corpus audio."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 110 + 60 * t / seconds + 3 * np.sin(2 * np.pi * 5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    glide = np.clip((t - 0.3 * seconds) / (0.4 * seconds), 0, 1)  # /a/ -> /i/
    formants = [(700 - 430 * glide, 110), (1220 + 1070 * glide, 120), (2600 + 410 * glide, 160)]
    x = np.zeros_like(t)
    for k in range(1, int(7800 / 110) + 1):
        f = k * f0
        gain = sum(1 / (1 + ((f - fc) / bw) ** 2) for fc, bw in formants) / k ** 0.5
        x += np.where(f < 7900, gain, 0) * np.sin(k * phase)
    x += 0.002 * np.random.default_rng(0).standard_normal(t.size)
    fade = np.minimum(1, np.minimum(t, t[-1] - t) / 0.05)
    return (0.3 * x / np.abs(x).max() * fade).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("audio", nargs="*", type=Path, default=DEFAULT_AUDIO, help="16 kHz speech files")
    ap.add_argument("--encoder", type=Path, help="converted encoder, all layers")
    ap.add_argument("--ct2-model", type=Path, help="the CTranslate2 model folder it came from")
    ap.add_argument("--ct2-python", default="/tmp/ct2venv/bin/python", help="an interpreter with ctranslate2")
    ap.add_argument("--write-test-reference", type=Path, default=None, metavar="NPZ",
                    help="after a pass, write the test's reference (synthetic input, its log-mel, layer-2 frames)")
    ap.add_argument("--shipped", type=Path, default=ROOT / "streamemo/encoder/whisper-tiny.en-2.safetensors",
                    help="the 2-layer file the test reference must also match")
    ap.add_argument("--ct2-stage", nargs=3, type=Path, metavar=("FEATURES", "MODEL_DIR", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ct2_stage:
        ct2_stage(*args.ct2_stage)
        return 0
    if args.encoder is None or args.ct2_model is None:
        ap.error("--encoder and --ct2-model are required")

    import soundfile as sf  # noqa: PLC0415
    import torch  # noqa: PLC0415

    sys.path.insert(0, str(ROOT))
    from streamemo.encoder.whisper import load_encoder, whisper_log_mel_reference  # noqa: PLC0415

    mels = []
    for path in args.audio:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
        if sr != 16000:
            raise SystemExit(f"error: {path} is {sr} Hz; give 16 kHz audio")
        audio = audio.mean(axis=1)[:N_SAMPLES]
        mels.append(whisper_log_mel_reference(np.pad(audio, (0, N_SAMPLES - audio.size))))  # pad_or_trim

    with tempfile.TemporaryDirectory() as tmp:
        features, out = Path(tmp) / "features.npz", Path(tmp) / "ct2.npz"
        np.savez(features, mel=np.stack(mels))
        subprocess.run([args.ct2_python, __file__, "--ct2-stage", str(features), str(args.ct2_model), str(out)],
                       check=True, cwd=tmp)
        ct2 = np.load(out)
        theirs, version = ct2["encoded"], str(ct2["version"])

    encoder = load_encoder(args.encoder)
    worst = 0.0
    print(f"{args.encoder.name} vs ctranslate2 {version} ({args.ct2_model}, cpu, float32)")
    with torch.no_grad():
        for path, mel, b in zip(args.audio, mels, theirs):
            a = encoder(torch.from_numpy(mel)[None])[0].numpy()
            diff = np.abs(a - b)
            rel_norm = np.linalg.norm(a - b) / np.linalg.norm(b)
            rel_max = diff.max() / np.abs(b).max()
            worst = max(worst, rel_norm, rel_max)
            print(f"  {path.parent.name}/{path.name}: shape {a.shape}, max|a-b| {diff.max():.3e}, "
                  f"||a-b||/||b|| {rel_norm:.3e}, max|a-b|/max|b| {rel_max:.3e} (max|b| {np.abs(b).max():.2f})")
    if worst > TOLERANCE:
        print(f"FAIL: {worst:.3e} relative > {TOLERANCE}")
        return 1
    print(f"PASS: within {worst:.1e} relative (target {TOLERANCE})")

    if args.write_test_reference is not None:
        audio = vowel_like()
        mel = whisper_log_mel_reference(audio)  # 1 s, not padded: (80, 100)
        with torch.no_grad():  # full precision: the verified encoder in float64, first two layers
            frames = encoder.double()(torch.from_numpy(mel).double()[None], layers=REFERENCE_LAYERS)[0]
            frames = frames[:REFERENCE_FRAMES].numpy()
            shipped = load_encoder(args.shipped)(torch.from_numpy(mel)[None])[0, :REFERENCE_FRAMES].numpy()
        rel = np.linalg.norm(shipped - frames) / np.linalg.norm(frames)
        print(f"test reference: {args.shipped.name} (float32) vs the verified encoder (float64), "
              f"{REFERENCE_LAYERS} layers: {rel:.2e} relative")
        if rel > 1e-5:
            print("FAIL: the shipped file is not the verified encoder's first layers")
            return 1
        args.write_test_reference.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.write_test_reference, audio=audio, log_mel=mel,
                            frames=frames.astype(np.float32), layers=REFERENCE_LAYERS)
        print(f"wrote {args.write_test_reference} ({args.write_test_reference.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
