"""The report folder: report.json (everything), report.md (for people) and three plots:
class_distribution.png, training_curves.png, confusion_matrix.png."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

PLOTS = ("class_distribution.png", "training_curves.png", "confusion_matrix.png")


def write_report(folder: str | Path, title: str, summary: dict, folds: list[dict],
                 class_counts: dict[str, Counter], meta: dict) -> Path:
    """`summary` from evaluate.summarise, `folds` as run_fold returns them, `class_counts`
    per data set name (e.g. {"train": ..., "test": ...}), `meta` whatever else to record
    (command line, config, git commit)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"title": title, "summary": summary, "folds": folds, "meta": meta,
            "class_counts": {k: dict(v) for k, v in class_counts.items()}}
    (folder / "report.json").write_text(json.dumps(data, indent=1) + "\n")
    (folder / "report.md").write_text(markdown(title, summary, folds, meta))
    _plot_class_distribution(folder / PLOTS[0], class_counts, summary["labels"])
    _plot_training_curves(folder / PLOTS[1], folds)
    _plot_confusion(folder / PLOTS[2], np.array(summary.get("confusion", folds[0]["metrics"]["confusion"])),
                    summary["labels"])
    return folder


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(title: str, summary: dict, folds: list[dict], meta: dict) -> str:
    labels = summary["labels"]
    lines = [f"# {title}", ""]
    if meta.get("command"):
        lines += ["Reproduce:", "", f"    {meta['command']}", ""]
    if meta.get("computed_by"):  # an ensemble's figures from its members' single-seed runs
        lines += ["Computed, to the same figures, from each member's own single-seed run "
                  "(an ensemble's clip probabilities are its members' mean):", "",
                  f"    {meta['computed_by']}", ""]
        lines += [f"- `{m['command']}` (commit `{m['git_commit']}`)" for m in meta.get("members", [])] + [""]
    if meta.get("git_commit"):
        lines += [f"Code: git commit `{meta['git_commit']}`.", ""]
    lines += ["| fold | test speakers | clips | WA % | UA % | macro F1 % | no-voice clips |",
              "|---|---|---|---|---|---|---|"]
    for r in folds:
        m = r["metrics"]
        speakers = _speakers(r["test_speakers"])
        lines.append(f"| {r.get('name') or r['fold']} | {speakers} | {m['n_clips']} | {_pct(m['wa'])} | {_pct(m['ua'])} | "
                     f"{_pct(m['macro_f1'])} | {m['no_voice']} |")
    s = summary
    lines.append(f"| **mean ± std** | | | **{_pct(s['wa']['mean'])} ± {_pct(s['wa']['std'])}** | "
                 f"**{_pct(s['ua']['mean'])} ± {_pct(s['ua']['std'])}** | "
                 f"**{_pct(s['macro_f1']['mean'])} ± {_pct(s['macro_f1']['std'])}** | {s['no_voice']} |")
    lines += ["", "WA: accuracy over clips. UA: mean per-class recall. Each clip is scored as `streamemo classify`",
              "scores it (windows through the daemon's pipeline, voiced windows' probabilities averaged).",
              f"Clips with no voiced window ({s['no_voice']}) are scored with the voice gate open; counting them",
              f"as wrong instead gives UA {_pct(s['ua_strict']['mean'])} ± {_pct(s['ua_strict']['std'])} %, "
              f"WA {_pct(s['wa_strict']['mean'])} ± {_pct(s['wa_strict']['std'])} %.", ""]
    lines += _views(s, folds)
    if "per_class" in s:
        lines += ["## Per class (all folds pooled; ± the spread over folds)", "",
                  "| class | precision % | recall % | F1 % | clips |", "|---|---|---|---|---|"]
        for label, c in s["per_class"].items():
            cells = [f"{_pct(c[k])} ± {_pct(c[k + '_std'])}" if k + "_std" in c else _pct(c[k])
                     for k in ("precision", "recall", "f1")]
            lines.append(f"| {label} | {' | '.join(cells)} | {c['support']} |")
        lines += ["", "## Confusion matrix (rows: true, columns: predicted; all folds summed)", "",
                  "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for label, row in zip(labels, s["confusion"]):
            lines.append(f"| **{label}** | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in PLOTS), ""]
    return "\n".join(lines)


def _speakers(ids: list[str]) -> str:
    """'01, 11, 20, 21', or for a whole corpus held out 'all 65 of ased'."""
    corpora = {s.split(":")[0] for s in ids}
    if len(ids) > 8 and len(corpora) == 1:
        return f"all {len(ids)} of {corpora.pop()}"
    return ", ".join(s.split(":")[-1] for s in ids)


VIEWS = {"four_class": "4 classes (angry, happy, neutral, sad)",
         "degraded": "degraded: {condition}",
         "degraded_four_class": "degraded, 4 classes"}


def _views(summary: dict, folds: list[dict]) -> list[str]:
    """A table of UA per fold for each other view of the same test clips: the 4-class view
    published cross-corpus figures use, and the degraded condition (what a room costs)."""
    present = [v for v in VIEWS if v in summary]
    if not present:
        return []
    condition = next((r["degraded"]["condition"] for r in folds if "degraded" in r), "")
    heads = [VIEWS[v].format(condition=condition) for v in present]
    lines = ["## Other views of the same test clips (UA %; each view over the classes it has)", "",
             "| fold | all classes | " + " | ".join(heads) + " |", "|---" * (len(present) + 2) + "|"]
    for i, r in enumerate(folds):
        cells = [_pct(summary[v]["ua"]["per_fold"][i]) for v in present]
        lines.append(f"| {r.get('name') or r['fold']} | {_pct(r['metrics']['ua'])} | " + " | ".join(cells) + " |")
    cells = [f"**{_pct(summary[v]['ua']['mean'])} ± {_pct(summary[v]['ua']['std'])}**" for v in present]
    lines.append(f"| **mean ± std** | **{_pct(summary['ua']['mean'])} ± {_pct(summary['ua']['std'])}** | "
                 + " | ".join(cells) + " |")
    if "degraded" in summary:
        cost = summary["ua"]["mean"] - summary["degraded"]["ua"]["mean"]
        lines += ["", f"Degraded ({condition}): the same held-out clips under {condition}, with rooms and noises "
                      f"that training never uses (noise at 10 dB SNR); it costs {100 * cost:.1f} UA points."]
    return lines + [""]


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _plot_class_distribution(path: Path, counts: dict[str, Counter], labels: list[str]) -> None:
    plt = _figure()
    names = list(labels) + sorted({k for c in counts.values() for k in c} - set(labels))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(counts))
    for i, (name, c) in enumerate(counts.items()):
        ax.bar(np.arange(len(names)) + i * width, [c.get(n, 0) for n in names], width, label=name)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30)
    ax.set_ylabel("clips")
    ax.set_title("Class distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_training_curves(path: Path, folds: list[dict]) -> None:
    plt = _figure()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for r in folds:
        h = r.get("history") or []
        if not h:
            continue
        epochs = [e["epoch"] for e in h]
        line, = ax_loss.plot(epochs, [e["loss"] for e in h], label=f"fold {r['fold']} train")
        if "val_loss" in h[0]:
            ax_loss.plot(epochs, [e["val_loss"] for e in h], "--", color=line.get_color())
            ax_acc.plot(epochs, [e["val_ua"] for e in h], "--", color=line.get_color(), label=f"fold {r['fold']} val UA")
        ax_acc.plot(epochs, [e["acc"] for e in h], color=line.get_color(), label=f"fold {r['fold']} train acc")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (solid: train, dashed: validation)")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    if ax_acc.get_legend_handles_labels()[0]:  # an existing model's report has no curves
        ax_acc.legend(fontsize=6)
    fig.suptitle("Training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_confusion(path: Path, cm: np.ndarray, labels: list[str]) -> None:
    plt = _figure()
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (counts; colour: row share)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _members(arch: dict) -> int:
    """How many networks the weights hold: an ensemble's members, else 1."""
    return arch.get("params", {}).get("members", 1) if arch["name"] == "ensemble" else 1


def _arch(arch: dict) -> str:
    """'cnn_lstm', or for an ensemble 'ensemble of 2 cnn_lstm networks averaged'."""
    if arch["name"] != "ensemble":
        return arch["name"]
    return f"ensemble of {_members(arch)} {arch['params'].get('member_arch')} networks averaged"


def _degraded(recipe: dict) -> str:
    """' (and 1 through a room and noise)', or '' for a recipe without degraded copies."""
    n = recipe.get("degraded_copies", 0)
    return f" (and {n} through a room and noise)" if n else ""


def _seeds(recipe: dict, arch: dict) -> str:
    """'seed 0', or for an ensemble the members' seeds: 'seeds 0, 1 (one per member)'."""
    seed, members = recipe.get("seed"), _members(arch)
    if members == 1 or not isinstance(seed, int):
        return f"seed {seed}"
    return f"seeds {', '.join(str(seed + k) for k in range(members))} (one per member)"


# The licenses' terms that bind weights trained on a corpus (train/licenses.py gives the texts).
SHARE_ALIKE = {"ravdess", "nemo"}
NO_DERIVATIVES = {"turev", "tess"}
NON_COMMERCIAL = {"emovo", "korean", "ased", "savee"}  # research or non-commercial use only


CROSS_HEADING = "## Across corpora: voices, languages and rooms it never heard"
LIMITS_HEADING = "## Intended use and limits"


def _report_section(heading: str, what: str, report: dict) -> list[str]:
    """A model card's part made of an evaluate report: its heading, what it measured, its tables."""
    body = markdown(report["title"], report["summary"], report["folds"], report.get("meta", {})).split("\n", 2)[2]
    return [heading, "", what, "", body.split("\nPlots:")[0].replace("## ", "### "), ""]


def cross_corpus_markdown(cross: dict) -> list[str]:
    """The model card's part for an `evaluate --model M --test …` report of corpora M never heard."""
    return _report_section(CROSS_HEADING, "These very weights on whole corpora that no part of their training saw "
                           "(other languages, studios and microphones), each scored over the classes it has; chance "
                           "is 1 / (its classes). This is the figure closest to what a new live user gets.", cross)


def splice_cross_corpus(card_md: str, cross: dict, weights_sha256: str) -> str:
    """An existing MODEL_CARD.md with its cross-corpus part put in (or replaced), before its
    limits: for a card whose own evaluation report is no longer at hand. The header's weights
    hash is made current too, since a model re-saved (with its frontend's kernels, say) has
    a new one, while whatever else that line says stays."""
    card_md = re.sub(r"(Weights SHA-256 `)[0-9a-f]+…`", lambda m: f"{m.group(1)}{weights_sha256[:16]}…`", card_md,
                     count=1)
    section = "\n".join(cross_corpus_markdown(cross))
    if CROSS_HEADING in card_md:
        before, rest = card_md.split(CROSS_HEADING, 1)
        card_md = before + rest[rest.index(LIMITS_HEADING):]
    before, limits = card_md.split(LIMITS_HEADING, 1)
    return before + section + "\n" + LIMITS_HEADING + limits


LOCO_HEADING = "## Evaluation: leave one corpus out"


def loco_markdown(loco: dict) -> list[str]:
    """The model card's part for an `evaluate --leave-one-corpus-out` report of its recipe."""
    return _report_section(LOCO_HEADING, "The recipe (not these exact weights) trained once per corpus on all the "
                           "others and tested on the corpus it never heard (another language, studio and set of "
                           "speakers), each scored over the classes it has; chance is 1 / (its classes). These weights "
                           "are that recipe trained on every corpus: the closest estimate of what a new live user "
                           "gets.", loco)


def _features(fe: dict) -> str:
    """What the network reads, in words."""
    kind = fe.get("kind", "logmel")
    if kind == "whisper":
        return (f"the frozen encoder `{fe['encoder']}` (first {fe['encoder_layers']} layers of Whisper, SHA-256 "
                f"`{fe['encoder_sha256'][:16]}…`; {fe['block_frames'] * 20} ms blocks with "
                f"{fe['context_frames'] * 20} ms of left context) over Whisper's 80-band log-mel, "
                f"{fe['encoder_width']} features every 20 ms at {fe['sample_rate']} Hz")
    bands = f"{fe['n_mels']}-band log-mel" if kind == "logmel" else f"{fe.get('n_mfcc')}-coefficient MFCC"
    return f"{bands} at {fe['sample_rate']} Hz ({1000 * fe['hop_length'] // fe['sample_rate']} ms frames)"


def model_card_markdown(card: dict, report: dict | None, latency: str | None = None, cross: dict | None = None,
                        loco: dict | None = None) -> str:
    """MODEL_CARD.md for a trained model: what it is, what it was trained on and under which
    licenses, how it scored on held-out speakers (from an evaluate report) and, for its
    recipe, on held-out corpora (`loco`), and its limits."""
    t = card.get("training", {})
    recipe = t.get("recipe", {})
    corpora = list(t.get("licenses", {}))
    share_alike = [c for c in corpora if c in SHARE_ALIKE]
    no_derivatives = [c for c in corpora if c in NO_DERIVATIVES]
    non_commercial = bool(share_alike or no_derivatives or set(corpora) & NON_COMMERCIAL)
    lines = [f"# Model card: {card['name']}", "",
             f"`{card['name']}.safetensors` + `{card['name']}.json`: {_arch(card['arch'])} "
             f"({card['n_parameters']:,} parameters), {card['window_s']:g} s windows of "
             f"{_features(card['frontend'])}. Labels: {', '.join(card['labels'])}.", "",
             f"Weights SHA-256 `{card['weights_sha256'][:16]}…`; trained from git commit `{card.get('git_commit')}`.",
             ""]
    if latency:
        lines += [f"Speed: {latency}", ""]
    lines += ["## Training data and licenses", ""]
    for spec in t.get("data", []):
        lines.append(f"- `{spec}`")
    lines.append("")
    for corpus, text in t.get("licenses", {}).items():
        lines.append(f"- **{corpus}**: {text}")
    held = t.get("validation_speakers") or []
    held = f"{', '.join(held)} held out for validation" if held else "all of them trained, none held out"
    lines.append("")
    if share_alike:
        lines += [f"Because {' and '.join(share_alike)} {'is' if len(share_alike) == 1 else 'are'} CC BY-NC-SA "
                  "4.0, these weights are shared under the same terms (attribution, non-commercial, share-alike): "
                  "whoever passes them on, changed or not, must do so under CC BY-NC-SA 4.0 and credit the "
                  "corpora above.", ""]
    if no_derivatives:
        lines += [f"{', '.join(no_derivatives)} is licensed no-derivatives (CC BY-NC-ND 4.0): whether trained "
                  "weights are a derivative of a recording is legally unsettled, and if they are, that license "
                  "does not allow sharing them; a model to be published without that doubt is trained without "
                  "it (drop its `--data`).", ""]
    if non_commercial:
        lines += ["Corpora here are licensed for research or non-commercial use only, so these weights are too: "
                  "no commercial use.", ""]
    lines += [f"Clips: {t.get('clips')}; classes: {t.get('class_counts')}; {t.get('speakers')} speakers "
              f"({held}). Kept weights: "
              f"{t.get('weights')}. Recipe: {recipe.get('epochs')} epochs, {recipe.get('optimizer')} "
              f"lr {recipe.get('lr')} ({recipe.get('schedule')}), batch {recipe.get('batch_size')}, "
              f"mixup {recipe.get('mixup')}, SpecAugment {recipe.get('spec_augment')}, "
              f"waveform copies {recipe.get('wave_copies')}{_degraded(recipe)}, "
              f"class weighting {recipe.get('class_weighting')}, "
              f"{_seeds(recipe, card['arch'])}; the full recipe is in the JSON card.", ""]
    if report and str(report.get("title", "")).startswith("leave one corpus out"):
        lines += loco_markdown(report)  # the recipe's own evaluation is by corpus
    elif report:
        folds = all(isinstance(f.get("fold"), int) for f in report["folds"])
        lines += (["## Evaluation: speaker-independent folds", "",
                   "The recipe (not these exact weights) was evaluated by training one model per fold with the "
                   "fold's speakers held out entirely, then scoring each held-out clip the way `streamemo classify` "
                   "does. These weights are that recipe trained on all the data.", ""] if folds else
                  ["## Evaluation: a held-out test set", "",
                   "Each test clip scored the way `streamemo classify` does; the command below says what was "
                   "trained on and what was tested.", ""])
        if card.get("speaker_norm"):
            lines += ["With speaker adaptation, each held-out speaker's clips are one session in a seeded random "
                      "order, as if the daemon heard them one after another: adaptation starts from the average "
                      "speaker at the first clip and carries over, so the figures include a session's first words.",
                      ""]
        md = markdown(report["title"], report["summary"], report["folds"], report.get("meta", {}))
        body = md.split("\n", 2)[2]  # drop the report's own title
        lines += [body.split("\nPlots:")[0].replace("## ", "### "), ""]
    if loco:
        lines += loco_markdown(loco)
    if cross:
        lines += cross_corpus_markdown(cross)
    lines += [LIMITS_HEADING, "",
              "- Intended: research and demos of real-time speech-emotion estimation; a signal for "
              "dashboards, not a decision about a person.",
              f"- Acted emotions: every training corpus ({', '.join(corpora) or 'none named'}) is actors "
              "or volunteers portraying emotions, mostly in fixed sentences. Spontaneous speech, children, "
              "languages not among the corpora and far-field microphones are outside the training data; expect "
              "much lower accuracy there (the leave-one-corpus-out figures are the closest estimate).",
              "- Eight classes on held-out actors score far below the 90 %+ figures seen for splits that "
              "share speakers; see the per-class table for the confusions (neutral/calm/sad, happy/surprised).",
              ("- Speaker adaptation: loudness and spread relative to the voice's own are the cues. The "
               "daemon learns a voice over its first tens of seconds (until then it scores it as the average "
               "training speaker) and forgets over about ten minutes, so someone who stays angry for many "
               "minutes slowly reads as less angry, and a new speaker is misjudged for a while."
               if card.get("speaker_norm") else
               "- Loudness is a cue (normalisation is global, not per window): a very quiet or very loud "
               "microphone shifts predictions toward calm/sad or angry."),
              "- Very soft speech may not pass the daemon's voice gate at all (no label is published for it).",
              "- Not for employment, education, health, law-enforcement or any decision about individuals"
              + ("; non-commercial use only (licenses above)." if non_commercial else "."), ""]
    return "\n".join(lines)
