"""Honest evaluation: speaker-independent folds, extra test sets and cross-corpus runs.

Every reported per-clip prediction comes from `stream.pipeline.Pipeline` and
`file_probabilities`, the path `streamemo classify` and the daemon take: the label a clip
gets here is the label `classify` prints for it.

A clip none of whose windows passes the daemon's voice gate gets no label from `classify`.
Here it is scored on all its windows with the gate open (`no_voice` marks it) so that it
still counts; the summary also gives `ua_strict`/`wa_strict`, counting those clips wrong.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from streamemo import StreamemoError
from streamemo.config import PipelineConfig
from streamemo.model import Model
from streamemo.stream.pipeline import Pipeline, Scorer, file_probabilities
from streamemo.train.audio import UnreadableAudio, load_audio
from streamemo.train.datasets import Clip
from streamemo.train.metrics import classification_metrics
from streamemo.train.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipScore:
    path: str
    label: str
    predicted: str
    probabilities: list[float]
    no_voice: bool  # no window passed the voice gate; scored with the gate open


def speaker_sessions(clips: list[Clip], seed: int = 0) -> list[list[Clip]]:
    """The order clips are scored in: one session per speaker (speakers sorted), that
    speaker's clips shuffled with `seed`. A session is what the daemon would hear if the
    speaker said these utterances one after another: speaker adaptation carries over from
    each clip to the next, so early clips are scored with little adaptation, as live."""
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[Clip]] = {}
    for clip in clips:
        by_speaker.setdefault(clip.speaker, []).append(clip)
    return [[group[i] for i in rng.permutation(len(group))] for _, group in sorted(by_speaker.items())]


def score_clips(model: Model, clips: list[Clip], config: PipelineConfig | None = None,
                progress: bool = True) -> tuple[list[ClipScore], list[str]]:
    """Each clip through the daemon's pipeline -> whole-file probabilities and label, in
    `speaker_sessions` order (the order of the returned scores). `streamemo classify` given
    one speaker's files in that order prints the same labels."""
    config = config or PipelineConfig()
    scorer = Scorer(model, "cpu")
    gated = Pipeline(model, config, scorer=scorer)
    open_gate = Pipeline(model, replace(config, vad_min_voiced=0.0), scorer=scorer)  # every window counts
    open_gate.adapter = gated.adapter  # the same voice heard so far
    scores, skipped = [], []
    bar = tqdm(total=len(clips), desc="scoring", unit="clip", disable=not progress, leave=False)
    for session in speaker_sessions(clips):
        gated.reset(speaker=True)
        for clip in session:
            bar.update()
            try:
                audio = load_audio(clip.path, model.frontend.sample_rate)
            except UnreadableAudio as e:
                log.warning("skipping unreadable audio %s", e)
                skipped.append(str(e))
                continue
            probs = _file_probabilities(gated, audio)
            no_voice = probs is None
            if no_voice:  # classify prints no label here and learns nothing from it: nor may this
                with open_gate.adapter.frozen() if open_gate.adapter is not None else contextlib.nullcontext():
                    probs = _file_probabilities(open_gate, audio)
            scores.append(ClipScore(str(clip.path), clip.label, model.labels[int(np.argmax(probs))],
                                    [float(p) for p in probs], no_voice))
    bar.close()
    return scores, skipped


def _file_probabilities(pipeline: Pipeline, audio: np.ndarray):
    pipeline.reset()
    estimates = pipeline.feed(audio) + pipeline.flush()
    return file_probabilities(estimates)


def score_metrics(scores: list[ClipScore], labels: list[str]) -> dict:
    """Figures over the clips whose true label the model knows (cross-corpus tests may hold
    classes the model never saw; those are counted in `unknown_label`)."""
    index = {label: i for i, label in enumerate(labels)}
    known = [s for s in scores if s.label in index]
    y = np.array([index[s.label] for s in known], dtype=int)
    p = np.array([index[s.predicted] for s in known], dtype=int)
    m = classification_metrics(y, p, len(labels))
    strict = classification_metrics(y, np.where([s.no_voice for s in known], -1, p) % (len(labels) + 1),
                                    len(labels) + 1)  # no-voice clips land in an extra column
    present = np.array(m["support"]) > 0
    m["ua_strict"] = float(np.array(strict["recall"][: len(labels)])[present].mean()) if present.any() else 0.0
    m["wa_strict"] = strict["wa"]
    m["no_voice"] = sum(s.no_voice for s in known)
    m["n_clips"] = len(known)
    m["unknown_label"] = len(scores) - len(known)
    return m


# --- protocols ------------------------------------------------------------------------


def load_folds(path: str | Path, corpus: str) -> list[list[str]]:
    """folds.json -> per fold, the held-out speaker ids as readers spell them ("ravdess:01")."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        folds = data[corpus]["folds"]
    except FileNotFoundError:
        raise StreamemoError(f"--folds-file {path}: no such file", 2) from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise StreamemoError(f"--folds-file {path}: no folds for {corpus!r} ({e})", 2) from None
    return [[f"{corpus}:{int(s):02d}" for s in fold] for fold in folds]


def run_fold(config: TrainConfig, clips: list[Clip], test_speakers: list[str], cache_dir=None,
             fold: int = 0, use_cache: bool = True) -> dict:
    """Trains on every clip whose speaker is not held out, tests on those that are."""
    held = set(test_speakers)
    train = [c for c in clips if c.speaker not in held]
    test = [c for c in clips if c.speaker in held]
    if not test:
        raise StreamemoError(f"fold {fold}: no clips for speakers {', '.join(test_speakers)}", 1)
    result = Trainer(config, cache_dir, use_cache).fit(train, name=f"fold{fold}")
    scores, skipped = score_clips(result.model, test, progress=config.progress)
    return {
        "fold": fold,
        "test_speakers": sorted(held),
        "val_speakers": sorted({c.speaker for c in result.val_clips}),
        "n_train": len(result.train_clips),
        "n_val": len(result.val_clips),
        "labels": result.labels,
        "metrics": score_metrics(scores, result.labels),
        "history": result.history,
        "chosen": result.chosen,
        "train_seconds": result.seconds,
        "skipped": result.skipped + skipped,
        "predictions": [s.__dict__ for s in scores],
    }


def _run_fold_worker(args) -> dict:
    config_dict, clips, speakers, cache_dir, fold, threads, use_cache = args
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    return run_fold(TrainConfig.from_dict(config_dict), clips, speakers, cache_dir, fold, use_cache)


def run_folds(config: TrainConfig, clips: list[Clip], folds: list[list[str]], only: list[int] | None = None,
              jobs: int = 1, cache_dir=None, use_cache: bool = True) -> list[dict]:
    """All (or `only` the 1-based numbered) folds, `jobs` of them at once in separate
    processes sharing the CPU cores between them."""
    chosen = [i for i in range(1, len(folds) + 1) if not only or i in only]
    if jobs <= 1:
        return [run_fold(config, clips, folds[i - 1], cache_dir, i, use_cache) for i in chosen]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    quiet = replace(config, progress=False).to_dict()
    work = [(quiet, clips, folds[i - 1], cache_dir, i, threads, use_cache) for i in chosen]
    results = []
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_fold_worker, w) for w in work]
        for future in tqdm(as_completed(futures), total=len(futures), desc="folds", unit="fold"):
            r = future.result()
            tqdm.write(f"fold {r['fold']}: UA {100 * r['metrics']['ua']:.1f} %, WA {100 * r['metrics']['wa']:.1f} % "
                       f"({r['train_seconds']:.0f} s)")
            results.append(r)
    return sorted(results, key=lambda r: r["fold"])


def _spread_over_folds(results: list[dict], i: int) -> dict:
    """Std over the folds that test class i, of its precision, recall and F1."""
    tested = [r["metrics"] for r in results if r["metrics"]["support"][i] > 0]
    return {f"{key}_std": float(np.std([m[key][i] for m in tested])) if tested else 0.0
            for key in ("precision", "recall", "f1")}


def summarise(results: list[dict]) -> dict:
    """Mean and spread (population std over folds) of WA, UA, macro F1; summed confusion."""
    labels = results[0]["labels"]
    out = {"n_folds": len(results), "labels": labels}
    for key in ("wa", "ua", "macro_f1", "ua_strict", "wa_strict"):
        values = np.array([r["metrics"][key] for r in results])
        out[key] = {"mean": float(values.mean()), "std": float(values.std()), "per_fold": values.tolist()}
    if all(r["labels"] == labels for r in results):
        out["confusion"] = np.sum([r["metrics"]["confusion"] for r in results], axis=0).tolist()
        y_true = np.repeat(np.arange(len(labels)), np.sum(out["confusion"], axis=1))
        y_pred = np.concatenate([np.repeat(np.arange(len(labels)), row) for row in out["confusion"]])
        pooled = classification_metrics(y_true, y_pred, len(labels))
        out["per_class"] = {label: {"precision": pooled["precision"][i], "recall": pooled["recall"][i],
                                    "f1": pooled["f1"][i], "support": pooled["support"][i],
                                    **_spread_over_folds(results, i)}
                            for i, label in enumerate(labels)}
    out["no_voice"] = int(sum(r["metrics"]["no_voice"] for r in results))
    return out
