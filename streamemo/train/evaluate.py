"""Honest evaluation: speaker-independent folds, leave-one-corpus-out, extra test sets.

Every reported per-clip prediction comes from `stream.pipeline.Pipeline` and
`file_probabilities`, the path `streamemo classify` and the daemon take: the label a clip
gets here is the label `classify` prints for it.

A clip none of whose windows passes the daemon's voice gate gets no label from `classify`.
Here it is scored on all its windows with the gate open (`no_voice` marks it) so that it
still counts; the summary also gives `ua_strict`/`wa_strict`, counting those clips wrong.

A test set is scored over the classes it has (the protocol of published cross-corpus
figures): a clip's label is the most probable of those classes. Beside it, every fold
reports the 4-class view (angry, happy, neutral, sad) that cross-corpus papers compare on,
and, when a degraded condition is asked for (`rooms.Degrader`), the same figures for the
held-out clips played through a room with noise.
"""

from __future__ import annotations

import contextlib
import json
import zlib
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
from streamemo.emotion_set import restrict
from streamemo.model import Model
from streamemo.stream.pipeline import Pipeline, Scorer, file_probabilities
from streamemo.audio.files import UnreadableAudio, load_audio
from streamemo.train.datasets import Clip
from streamemo.train.metrics import classification_metrics
from streamemo.train.card import trained_corpora
from streamemo.train.recipe import DAEMON, TrainConfig
from streamemo.train.trainer import Trainer, copy_augmenters, fine_tuning

log = logging.getLogger(__name__)


FOUR_CLASSES = ("angry", "happy", "neutral", "sad")  # the cross-corpus literature's common set


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


def clip_seed(path) -> int:
    """A seed that depends on the clip's file name only: a degraded condition puts each clip
    in the same room with the same noise in every run and every fold."""
    return zlib.crc32(Path(path).name.encode())


def score_clips(model: Model, clips: list[Clip], config: PipelineConfig | None = None,
                progress: bool = True, degrade=None) -> tuple[list[ClipScore], list[str]]:
    """Each clip through the daemon's pipeline -> whole-file probabilities and label, in
    `speaker_sessions` order (the order of the returned scores). `streamemo classify` given
    one speaker's files in that order prints the same labels. `degrade`, a callable
    (audio, rate, seed) -> audio, changes each clip's audio first (a test condition)."""
    config = config or PipelineConfig()
    with _torch_threads(config.threads):
        return _score_clips(model, clips, config, progress, degrade)


@contextlib.contextmanager
def _torch_threads(n: int):
    """Scores with the daemon's torch threads (one): a window is too small to share, and on a
    busy machine idle workers spinning at every small operation made scoring 5-15x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _score_clips(model: Model, clips: list[Clip], config: PipelineConfig, progress: bool,
                 degrade) -> tuple[list[ClipScore], list[str]]:
    scorer = Scorer(model, "cpu")
    gated = Pipeline(model, config, scorer=scorer)
    open_gate = Pipeline(model, replace(config, speech_share=0.0), scorer=scorer)  # every window counts
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
            if degrade is not None:
                audio = degrade(audio, model.frontend.sample_rate, clip_seed(clip.path))
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


def score_metrics(scores: list[ClipScore], labels: list[str], over=None) -> dict:
    """Figures over the clips whose true label the model knows (cross-corpus tests may hold
    classes the model never saw; those are counted in `unknown_label`). `over`, a subset of
    `labels`, restricts both truth and prediction to those classes: clips of other classes
    are left out and each clip's prediction is its most probable class among them, its
    probabilities over them as the daemon's `--emotions` makes them (`restrict`). Matrices
    keep the model's full label order, so folds with different class sets still add up."""
    index = {label: i for i, label in enumerate(labels)}
    keep = [index[label] for label in labels if over is None or label in over]
    known = [s for s in scores if s.label in index and index[s.label] in keep]
    y = np.array([index[s.label] for s in known], dtype=int)
    if len(keep) == len(labels):
        p = np.array([index[s.predicted] for s in known], dtype=int)
    else:
        p = np.array([keep[int(np.argmax(restrict(s.probabilities, keep)))] for s in known], dtype=int)
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


def scored_views(scores: list[ClipScore], labels: list[str]) -> dict:
    """A test set's figures over the classes it has, and its 4-class view."""
    present = {s.label for s in scores}
    return {"metrics": score_metrics(scores, labels, over=present),
            "four_class": score_metrics(scores, labels, over=present & set(FOUR_CLASSES))}


# --- protocols ------------------------------------------------------------------------


def load_folds(path: str | Path, corpus: str) -> list[list[str]]:
    """folds.json -> per fold, the held-out speaker ids as readers spell them ("ravdess:01")."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        folds = data[corpus]["folds"]
    except FileNotFoundError:
        raise StreamemoError(f"--folds-file {path}: no such file (give --folds-file, or set STREAMEMO_DATA to "
                             "the folder that holds folds.json)", 2) from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise StreamemoError(f"--folds-file {path}: no folds for {corpus!r} ({e})", 2) from None
    return [[f"{corpus}:{int(s):02d}" for s in fold] for fold in folds]


def corpus_folds(clips: list[Clip]) -> tuple[list[str], list[list[str]]]:
    """Leave-one-corpus-out: (corpus names, per corpus the speakers it holds out: all of its own)."""
    names = sorted({c.corpus for c in clips})
    if len(names) < 2:
        raise StreamemoError("--leave-one-corpus-out needs --data from at least two corpora", 2)
    return names, [sorted({c.speaker for c in clips if c.corpus == name}) for name in names]


def check_init_unseen(init: Model, init_path: str, test: list[Clip]) -> None:
    """A fold may start from a trained model only if that model never heard the fold's test
    speakers: otherwise they were in training, and the figure is a lie. A fold model
    (`--save-models`) lists the speakers it trained on; any other model's card names only
    its corpora, so then no corpus it trained on may be tested."""
    training = init.card.get("training") or {}
    if "speaker_ids" in training:
        seen = sorted(set(training["speaker_ids"]) & {c.speaker for c in test})
        what = f"{len(seen)} of the test speakers ({', '.join(seen[:3])}{', …' if len(seen) > 3 else ''})"
    else:
        seen = sorted(trained_corpora(init.card) & {c.corpus for c in test})
        what = ", ".join(seen)
    if seen:
        raise StreamemoError(f"--init {init_path} was trained on {what}, which the folds test on: start from "
                             "a model that never heard them (or choose other folds with --fold)", 2)


def fold_init(init_path: str | None, fold: int) -> str | None:
    """`--init` for one fold: a path with `{fold}` names each fold's own starting model (the
    folds of an earlier `evaluate --save-models DIR` run: DIR/fold{fold})."""
    return None if init_path is None else init_path.replace("{fold}", str(fold))


def run_fold(config: TrainConfig, clips: list[Clip], test_speakers: list[str], cache_dir=None,
             fold: int = 0, use_cache: bool = True, name: str | None = None, degrade=None,
             init_path: str | None = None, save_dir: str | None = None) -> dict:
    """Trains on every clip whose speaker is not held out (fine-tuning the model at
    `init_path` when given), tests on those that are (and, with `degrade`, on the same clips
    degraded). With `save_dir`, keeps the fold's model as save_dir/fold{fold}."""
    held = set(test_speakers)
    train = [c for c in clips if c.speaker not in held]
    test = [c for c in clips if c.speaker in held]
    if not test:
        raise StreamemoError(f"fold {fold}: no clips for speakers {', '.join(test_speakers)}", 1)
    init = None
    if init_path is not None:  # run_folds has checked it never heard these speakers
        from streamemo.model import load_model

        init = load_model(init_path)
        config = fine_tuning(config, init)
    result = Trainer(config, cache_dir, use_cache).fit(train, name=f"fold{fold}", init=init)
    if save_dir is not None:
        from streamemo.model import save_model

        trained = result.train_clips + result.val_clips
        save_model(result.model, Path(save_dir) / f"fold{fold}", extra_card={"training": {
            "data": sorted({c.corpus for c in trained}), "speaker_ids": sorted({c.speaker for c in trained}),
            "recipe": config.to_dict(), "init": init_path, "fold": fold}})
    return {"fold": fold, "name": name, "n_train": len(result.train_clips), "n_val": len(result.val_clips),
            "val_speakers": sorted({c.speaker for c in result.val_clips}), "history": result.history,
            "chosen": result.chosen, "train_seconds": result.seconds, "init": init_path,
            **held_out_result(result.model, test, degrade, config.progress, result.skipped)}


def held_out_result(model: Model, test: list[Clip], degrade=None, progress: bool = True, skipped=()) -> dict:
    """A model's figures on one test set: over its classes, the 4-class view, degraded."""
    scores, bad = score_clips(model, test, progress=progress)
    out = {
        "test_speakers": sorted({c.speaker for c in test}),
        "labels": model.labels,
        **scored_views(scores, model.labels),
        "skipped": list(skipped) + bad,
        "predictions": [s.__dict__ for s in scores],
    }
    if degrade is not None:
        degraded, _ = score_clips(model, test, progress=progress, degrade=degrade)
        out["degraded"] = {"condition": degrade.spec, **scored_views(degraded, model.labels)}
    return out


def _run_fold_worker(args) -> dict:
    config_dict, clips, speakers, cache_dir, fold, threads, use_cache, name, degrade, init_path, save_dir = args
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    return run_fold(TrainConfig.from_dict(config_dict), clips, speakers, cache_dir, fold, use_cache, name, degrade,
                    init_path, save_dir)


def _warm_worker(args) -> int:
    config_dict, clips, cache_dir = args
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)  # unreadable files are reported by the folds
    config = TrainConfig.from_dict(config_dict)
    trainer = Trainer(config, cache_dir)
    plans = copy_augmenters(config, trainer.store.cache_dir)
    for clip in clips:
        try:
            trainer.store.get(clip)
            for augmenter, k in plans:
                trainer.store.get(clip, augmenter, k)
            if config.speaker_norm:
                trainer.store.voice(clip, trainer.window_samples, trainer.hop_samples, DAEMON)
        except UnreadableAudio:
            pass
    return len(clips)


def warm_cache(config: TrainConfig, clips: list[Clip], cache_dir=None, jobs: int = 2) -> None:
    """Computes into the feature cache, `jobs` processes at once, everything training on
    `clips` reads (features, augmented copies, voice statistics), so that folds running in
    parallel do not each compute the same missing entries."""
    quiet = replace(config, progress=False).to_dict()
    shards = [clips[k::jobs] for k in range(jobs)]
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        # Small pieces, so the bar moves and the two processes finish together.
        pieces = [(quiet, shard[i : i + 50], cache_dir) for shard in shards for i in range(0, len(shard), 50)]
        bar = tqdm(total=len(clips), desc="feature cache", unit="clip", disable=not config.progress)
        for future in as_completed([pool.submit(_warm_worker, p) for p in pieces]):
            bar.update(future.result())
        bar.close()


def run_folds(config: TrainConfig, clips: list[Clip], folds: list[list[str]], only: list[int] | None = None,
              jobs: int = 1, cache_dir=None, use_cache: bool = True, names: list[str] | None = None,
              degrade=None, init_path: str | None = None, save_dir: str | None = None) -> list[dict]:
    """All (or `only` the 1-based numbered) folds, `jobs` of them at once in separate
    processes sharing the CPU cores between them. `names` names the folds (corpora); each
    fold fine-tunes the model at `init_path` when given (`fold_init`) and is kept in
    `save_dir` when given."""
    beyond = sorted({i for i in only or [] if not 1 <= i <= len(folds)})
    if beyond:
        raise StreamemoError(f"--fold {','.join(map(str, beyond))}: there are {len(folds)} folds, numbered 1 to "
                             f"{len(folds)}", 2)
    chosen = [i for i in range(1, len(folds) + 1) if not only or i in only]
    names = names or [None] * len(folds)
    if init_path is not None:  # refuse before any fold trains, not after the others finished
        from streamemo.model import load_model

        # One model for every fold is checked once, so the error names all it heard.
        groups = [chosen] if "{fold}" not in init_path else [[i] for i in chosen]
        for group in groups:
            held, path = {s for i in group for s in folds[i - 1]}, fold_init(init_path, group[0])
            check_init_unseen(load_model(path), path, [c for c in clips if c.speaker in held])
    if jobs <= 1:
        return [run_fold(config, clips, folds[i - 1], cache_dir, i, use_cache, names[i - 1], degrade,
                         fold_init(init_path, i), save_dir) for i in chosen]
    if use_cache:
        warm_cache(config, clips, cache_dir, jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    quiet = replace(config, progress=False).to_dict()
    work = [(quiet, clips, folds[i - 1], cache_dir, i, threads, use_cache, names[i - 1], degrade,
             fold_init(init_path, i), save_dir) for i in chosen]
    results = []
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_fold_worker, w) for w in work]
        for future in tqdm(as_completed(futures), total=len(futures), desc="folds", unit="fold"):
            r = future.result()
            tqdm.write(f"fold {r['name'] or r['fold']}: UA {100 * r['metrics']['ua']:.1f} %, WA {100 * r['metrics']['wa']:.1f} % "
                       f"({r['train_seconds']:.0f} s)")
            results.append(r)
    return sorted(results, key=lambda r: r["fold"])


def _spread_over_folds(results: list[dict], i: int) -> dict:
    """Std over the folds that test class i, of its precision, recall and F1."""
    tested = [r["metrics"] for r in results if r["metrics"]["support"][i] > 0]
    return {f"{key}_std": float(np.std([m[key][i] for m in tested])) if tested else 0.0
            for key in ("precision", "recall", "f1")}


def _mean_std(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std()), "per_fold": values.tolist()}


def summarise(results: list[dict]) -> dict:
    """Mean and spread (population std over folds) of WA, UA, macro F1; summed confusion;
    the same headline figures for the 4-class view and the degraded condition when folds
    have them."""
    labels = results[0]["labels"]
    out = {"n_folds": len(results), "labels": labels}
    for key in ("wa", "ua", "macro_f1", "ua_strict", "wa_strict"):
        out[key] = _mean_std([r["metrics"][key] for r in results])
    views = {"four_class": lambda r: r.get("four_class"),
             "degraded": lambda r: r.get("degraded", {}).get("metrics"),
             "degraded_four_class": lambda r: r.get("degraded", {}).get("four_class")}
    for view, get in views.items():
        found = [get(r) for r in results]
        if all(m is not None and m["n_clips"] for m in found):
            out[view] = {key: _mean_std([m[key] for m in found]) for key in ("wa", "ua", "macro_f1")}
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
