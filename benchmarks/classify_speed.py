"""How fast `streamemo classify` scores a folder of recordings, in multiples of real time.

    .venv/bin/python benchmarks/classify_speed.py [--jobs 0] [--model models/default] [FOLDER]

Scores every FLAC/WAV/OGG file under FOLDER (default: RAVDESS's speech, 1440 clips, when
../shared/data is beside the project) with `streamemo classify --format csv`, as a user
would run it (process start, imports and model loading included), and prints the audio's
total duration over the wall-clock time. Writes benchmarks/results/classify-<date>.json.
`--model` takes a path or a bundled name ("small"); without it, the bundled default, or
while models/default does not exist, an untrained stand-in with its architecture
(benchmarks/standin_model.py; `--model standin` asks for it by name).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

from results_path import result_path  # benchmarks/, beside this script
from standin_model import default_or_standin

ROOT = Path(__file__).resolve().parent.parent
RAVDESS = ROOT.parent / "shared" / "data" / "ravdess"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=RAVDESS)
    parser.add_argument("--jobs", type=int, default=0, help="classify --jobs (0: one per core)")
    parser.add_argument("--model", help="a path or bundled name; default: models/default, else a stand-in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.model, standin = default_or_standin(args.model, tmp)
        run(args, standin)


def run(args, standin: bool) -> None:
    files = sorted(str(p) for p in args.folder.rglob("*") if p.suffix.lower() in (".flac", ".wav", ".ogg"))
    if not files:
        raise SystemExit(f"no audio files under {args.folder}")
    audio_s = sum(sf.info(f).duration for f in files)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "streamemo", "classify", "--format", "csv", "--jobs", str(args.jobs),
                             "--model", args.model, *files], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    rows = result.stdout.count("\n") - 1
    out = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "folder": str(args.folder), "files": len(files), "rows": rows, "audio_s": round(audio_s, 1),
        "jobs": args.jobs, "cores": len(os.sched_getaffinity(0)), "model": args.model, "standin": standin,
        "wall_s": round(wall, 2), "times_real_time": round(audio_s / wall, 1),
        "load_average_1min": os.getloadavg()[0],
    }
    named = "-standin" if standin else "" if Path(args.model).name == "default" else f"-{Path(args.model).name}"
    path = result_path(f"classify-jobs{args.jobs}{named}")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"| files | audio | jobs | wall | x real time |\n|---|---|---|---|---|\n"
          f"| {len(files)} | {audio_s / 60:.1f} min | {args.jobs or out['cores']} | {wall:.1f} s | "
          f"**{out['times_real_time']}** |")
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
