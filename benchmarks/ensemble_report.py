"""The fold report of an ensemble, from fold reports of its members trained apart.

    .venv/bin/python benchmarks/ensemble_report.py reports/folds-ravdess-r6 \
        reports/folds-ravdess-r6-seed1 -o reports/folds-ravdess-ens2

`streamemo evaluate --ensemble N` trains the N seeds of each fold one after another (N x 35
minutes here); when the single-seed runs exist already, their predictions give the same
figures: an `Ensemble` scores a window with its members' mean probability, a clip is the
mean over its voiced windows, and which windows are voiced (and the speaker adaptation)
does not depend on the network. So the ensemble's clip probabilities are the mean of the
members' clip probabilities, exactly. Each report must come from the same recipe and data,
differing only in `--seed` (members seed, seed+1, ... as `--ensemble` trains them).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from streamemo.train.evaluate import ClipScore, scored_views, summarise
from streamemo.train.report import write_report
from streamemo.train.ensemble import mean_history
from streamemo.train.recipe import TrainConfig


def combine(reports: list[dict]) -> list[dict]:
    folds = []
    for members in zip(*(r["folds"] for r in reports), strict=True):
        first = members[0]
        by_path = [{p["path"]: p for p in m["predictions"]} for m in members]
        if any(set(b) != set(by_path[0]) or m["fold"] != first["fold"] for m, b in zip(members, by_path)):
            sys.exit(f"fold {first['fold']}: the reports scored different clips; they are not one recipe's seeds")
        labels = first["labels"]
        scores = []
        for p in first["predictions"]:  # the first report's order: speaker sessions
            probs = np.mean([b[p["path"]]["probabilities"] for b in by_path], axis=0)
            scores.append(ClipScore(p["path"], p["label"], labels[int(np.argmax(probs))],
                                    [float(x) for x in probs], p["no_voice"]))
        # Over the classes the test set has, and its 4-class view, as evaluate scores a fold (a
        # corpus without disgust is not marked wrong for clips the ensemble calls disgust).
        # A degraded condition's clip probabilities are not in the reports: its figures go.
        combined = {k: v for k, v in first.items() if k != "degraded"}
        folds.append({**combined, **scored_views(scores, labels),
                      "history": mean_history([m["history"] for m in members]),
                      "chosen": f"{len(members)} members' {first['chosen']} each",
                      "train_seconds": sum(m["train_seconds"] for m in members),
                      "predictions": [s.__dict__ for s in scores]})
    return folds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report folders, one per member seed")
    parser.add_argument("-o", "--output", type=Path, required=True, help="report folder to write")
    args = parser.parse_args()
    reports = [json.loads((r / "report.json").read_text()) for r in args.reports]
    # Through TrainConfig, so a report written before a setting existed reads as its default.
    # Run settings (progress bars, device, threads) are no part of a recipe: members may differ in them.
    run = dict(seed=None, progress=None, device=None, threads=None)
    recipes = [dict(TrainConfig.from_dict(r["meta"]["recipe"]).to_dict(), **run) for r in reports]
    if any(recipe != recipes[0] for recipe in recipes):
        sys.exit("the reports' recipes differ in more than the seed; an ensemble's members share one recipe")
    folds = combine(reports)
    summary = summarise(folds)
    first = reports[0]
    # The command these figures equal (members trained one after another, one report),
    # and how they were actually obtained.
    equivalent = re.sub(r" --seed \S+", "", first["meta"]["command"])
    equivalent = re.sub(r" --report \S+", "", equivalent) + f" --ensemble {len(reports)} --report {args.output}"
    meta = {"command": equivalent,
            "computed_by": "benchmarks/ensemble_report.py " + " ".join(map(str, args.reports)) + f" -o {args.output}",
            "members": [{"command": r["meta"]["command"], "git_commit": r["meta"]["git_commit"],
                         "seed": r["meta"]["recipe"]["seed"]} for r in reports],
            # One commit for the whole only when every member ran from it; else see the members.
            "git_commit": first["meta"]["git_commit"] if len({r["meta"]["git_commit"] for r in reports}) == 1 else None,
            "recipe": dict(first["meta"]["recipe"], ensemble=len(reports)),
            "skipped": first["meta"].get("skipped", 0)}
    counts = {k: Counter(v) for k, v in first["class_counts"].items()}
    write_report(args.output, f"{first['title']}, {len(reports)}-seed ensemble", summary, folds, counts, meta)
    ua, wa, f1 = (summary[k] for k in ("ua", "wa", "macro_f1"))
    print(f"UA {100 * ua['mean']:.1f} ± {100 * ua['std']:.1f} %, WA {100 * wa['mean']:.1f} ± {100 * wa['std']:.1f} %, "
          f"macro F1 {100 * f1['mean']:.1f} %; per fold UA " + " ".join(f"{100 * x:.1f}" for x in ua["per_fold"]))
    print(f"report: {args.output}/report.md")


if __name__ == "__main__":
    main()
