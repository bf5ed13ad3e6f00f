"""Evaluation figures into a model's card: the JSON card's `evaluation` field and the
human-readable MODEL_CARD.md."""

from __future__ import annotations

import json
from pathlib import Path

from streamemo import StreamemoError
from streamemo.model import load_model, save_model
from streamemo.train.report import model_card_markdown, splice_cross_corpus


def trained_corpora(card: dict) -> set[str]:
    """The corpora a model's card says it trained on (the kinds of its `--data`)."""
    return {entry.split(":", 1)[0] for entry in (card.get("training") or {}).get("data") or []}


def trained_on(card: dict, clips) -> tuple[list[str], int]:
    """The `--data` folders of a model's card that hold some of `clips`, and how many of the
    clips they hold: a personal model tested on the folder it trained on. The card keeps
    paths as typed at training, so relative ones are read from here."""
    roots = {}
    for entry in (card.get("training") or {}).get("data") or []:
        kind, _, path = str(entry).partition(":")
        if kind != "csv" and path:  # a manifest names files anywhere
            roots[entry] = Path(path).resolve()
    paths = [Path(c.path).resolve() for c in clips]
    entries = [e for e, root in roots.items() if any(p.is_relative_to(root) for p in paths)]
    held = sum(any(p.is_relative_to(roots[e]) for e in entries) for p in paths)
    return entries, held


def read_report(path: str | Path, flag: str = "--evaluation") -> dict:
    """An evaluate report.json, checked enough to build a card from; one clear line if not."""
    try:
        report = json.loads(Path(path).read_text())
        report["summary"]["labels"]
    except OSError as e:
        raise StreamemoError(f"{flag} {path}: cannot be read ({e.strerror}); give an evaluate report.json", 2) from None
    except RecursionError:
        raise StreamemoError(f"{flag} {path}: nested too deep to be an evaluate report.json", 2) from None
    except (ValueError, KeyError, TypeError) as e:  # not UTF-8, not JSON, or not a report's shape
        raise StreamemoError(f"{flag} {path}: not an evaluate report.json ({str(e)[:200]})", 2) from None
    return report


def check_labels(report: dict, report_path, labels: list[str], model: str) -> None:
    """A report of other classes would put figures on the card that are not this model's."""
    if list(report["summary"]["labels"]) != list(labels):
        raise StreamemoError(f"{report_path} evaluated the labels {', '.join(report['summary']['labels'])}, "
                             f"but {model} predicts {', '.join(labels)}: attach a report of this model's recipe", 2)


def evaluation_figures(report: dict) -> dict:
    """The headline numbers of an evaluate report, for the card."""
    s = report["summary"]
    keep = ("wa", "ua", "macro_f1", "ua_strict", "wa_strict")
    return {
        "title": report.get("title"),
        "command": report.get("meta", {}).get("command"),
        "git_commit": report.get("meta", {}).get("git_commit"),
        **{k: s[k] for k in keep if k in s},
        "per_class": s.get("per_class"),
        "confusion": s.get("confusion"),
        "labels": s.get("labels"),
        "folds": [{"fold": f["fold"], "test_speakers": f["test_speakers"],
                   **{k: f["metrics"][k] for k in ("wa", "ua", "macro_f1")}} for f in report.get("folds", [])],
    }


def cross_corpus_figures(report: dict) -> dict:
    """An existing model's figures per test corpus it never heard (`evaluate --model M --test
    …`): over each corpus's classes, the 4-class view and, when measured, degraded."""
    s = report["summary"]
    views = ("four_class", "degraded", "degraded_four_class")
    return {
        "title": report.get("title"),
        "command": report.get("meta", {}).get("command"),
        "corpora": {f["name"]: {"clips": f["metrics"]["n_clips"], "ua": f["metrics"]["ua"], "wa": f["metrics"]["wa"],
                                "macro_f1": f["metrics"]["macro_f1"],
                                **{v: s[v]["ua"]["per_fold"][i] for v in views if v in s}}
                    for i, f in enumerate(report["folds"])},
        "mean": {"ua": s["ua"]["mean"], **{v: s[v]["ua"]["mean"] for v in views if v in s}},
    }


def attach_evaluation(model_path: str | Path, report_path: Path | None, card_md: Path | None = None,
                      cross_path: Path | None = None, loco_path: Path | None = None) -> None:
    """Rewrites the model's card with the report's figures (the weights file is rewritten
    byte for byte, so its hash is unchanged) and, if asked, writes MODEL_CARD.md. `cross_path`:
    a report of this very model on corpora it never heard, for the card's cross-corpus part;
    given alone, the card keeps its evaluation and MODEL_CARD.md gets that part put in."""
    if report_path is None and cross_path is None and loco_path is None:
        raise StreamemoError("nothing to attach: give --evaluation, --cross-corpus, --leave-one-corpus-out or more", 2)
    if card_md and report_path is None and cross_path is None:
        raise StreamemoError("--card-md needs --evaluation (to write the card whole) or --cross-corpus", 2)
    report = read_report(report_path) if report_path else None
    cross = read_report(cross_path, "--cross-corpus") if cross_path else None
    loco = read_report(loco_path, "--leave-one-corpus-out") if loco_path else None
    model = load_model(model_path)
    extra = {}
    if loco is not None:
        check_labels(loco, loco_path, model.labels, str(model_path))
        extra["leave_one_corpus_out"] = cross_corpus_figures(loco)
    if report is not None:
        check_labels(report, report_path, model.labels, str(model_path))
        extra["evaluation"] = evaluation_figures(report)
    if cross is not None:
        heard = trained_corpora(model.card)
        if not all(f.get("name") for f in cross["folds"]) or heard & {f["name"] for f in cross["folds"]}:
            raise StreamemoError(f"--cross-corpus {cross_path}: give a report of this model on corpora it was not "
                                 f"trained on (`evaluate --model {model_path} --test KIND:PATH …`); it was trained "
                                 f"on {', '.join(sorted(heard)) or 'nothing named'}", 2)
        extra["cross_corpus"] = cross_corpus_figures(cross)
    save_model(model, model_path, extra_card=extra)
    if card_md and report is None:
        if not Path(card_md).exists():
            raise StreamemoError(f"--card-md {card_md}: no such card to add the cross-corpus part to; give "
                                 "--evaluation too, to write it whole", 2)
        Path(card_md).write_text(splice_cross_corpus(Path(card_md).read_text(), cross,
                                                     load_model(model_path).card["weights_sha256"]))
    elif card_md:
        Path(card_md).write_text(model_card_markdown(load_model(model_path).card, report, cross=cross, loco=loco))
