"""Several `streamemo evaluate` reports of one recipe as one report: their folds together,
summarised again. For a leave-one-corpus-out run done in parts (`--fold` by part), or when a
part must be run again; a fold present twice is refused.

    .venv/bin/python benchmarks/merge_reports.py OUT_DIR REPORT_DIR [REPORT_DIR ...] [--only NAME,...]

`--only` keeps the named folds (e.g. the five corpora no shipped model's first recipe heard).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from streamemo.train.evaluate import summarise
from streamemo.train.report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("reports", type=Path, nargs="+")
    parser.add_argument("--only", type=lambda s: s.split(","), help="fold names to keep")
    args = parser.parse_args()
    parts = [json.loads((r / "report.json").read_text()) for r in args.reports]
    recipes = {json.dumps(p["meta"].get("recipe"), sort_keys=True) for p in parts}
    if len(recipes) > 1:
        raise SystemExit("the reports were made with different recipes: merging them would mean nothing")
    folds = [f for p in parts for f in p["folds"] if not args.only or f.get("name") in args.only]
    names = [f.get("name") or f["fold"] for f in folds]
    if len(set(names)) != len(names):
        raise SystemExit(f"a fold is in more than one report: {sorted(n for n in names if names.count(n) > 1)}")
    folds.sort(key=lambda f: str(f.get("name") or f["fold"]))
    meta = dict(parts[0]["meta"])
    meta["command"] = " ; ".join(p["meta"].get("command", "?") for p in parts)
    meta["merged_by"] = "benchmarks/merge_reports.py " + " ".join(map(str, args.reports))
    counts = {}
    for p in parts:
        counts.update({k: Counter(v) for k, v in p["class_counts"].items() if not args.only or k in args.only})
    summary = summarise(folds)
    write_report(args.out, parts[0]["title"], summary, folds, counts, meta)
    print(f"{len(folds)} folds: UA {100 * summary['ua']['mean']:.1f} ± {100 * summary['ua']['std']:.1f} %"
          + "".join(f"; {view} {100 * summary[view]['ua']['mean']:.1f} %" for view in
                    ("four_class", "degraded", "degraded_four_class") if view in summary))


if __name__ == "__main__":
    main()
