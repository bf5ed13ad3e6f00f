"""Where a benchmark writes its result: benchmarks/results/<stem>-<date>.json, and -2, -3 …
after it when a run of that name was kept already that day, so a second run never
overwrites the first (twice it had to be restored from git)."""

from __future__ import annotations

import datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def result_path(stem: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stem}-{datetime.date.today().isoformat()}.json"
    n = 2
    while path.exists():
        path = RESULTS / f"{stem}-{datetime.date.today().isoformat()}-{n}.json"
        n += 1
    return path
