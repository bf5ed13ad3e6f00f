"""streamemo classify: score files offline, through exactly the daemon's processing.

Prints each window's top label (the same messages `run --source FILE --no-realtime`
publishes, less their clock times, which mean nothing for a file) and a whole-file label:
the mean of the voiced windows' raw probabilities, with the arousal and valence derived
from it. A folder stands for the audio files in it and its subfolders, in sorted order.

Each file is its own speaker: speaker adaptation starts afresh for every file, since a
folder of clips is usually several people, and one voice's statistics would distort the
next (a sad clip scored 0.60 alone and 0.28 after another voice's file). `--same-speaker`
makes the files one person's session in the order given, adaptation carrying from each to
the next as it would live; `--list FILE.csv` (path[,speaker] rows) makes the rows of each
speaker one session.

Sessions are scored `--jobs` at a time (by default one per CPU core): by this process and
`--jobs` - 1 workers, each with its own pipeline, and printed in the order given."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from pathlib import Path

import numpy as np

from streamemo import StreamemoError
from streamemo.commands._options import add_config_arguments, config_from_args

log = logging.getLogger(__name__)


# What a folder given to classify is searched for (as the trainer's readers do).
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".aiff", ".aif", ".mp3"}


def configure(parser) -> None:
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help="audio files (anything libsndfile reads), or folders of them (searched recursively)")
    parser.add_argument("--list", type=Path, metavar="CSV",
                        help="files to classify as CSV rows path[,speaker]: rows of one speaker are one session "
                             "(printed together, speakers in order of first appearance)")
    parser.add_argument("--format", choices=["table", "json", "csv"], default="table",
                        help="table (default): per-window timeline; json: one object per file with every window; "
                             "csv: one row per file (label, confidence, arousal, valence, probabilities)")
    parser.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")
    parser.add_argument("--same-speaker", action="store_true",
                        help="the files are one speaker's session, in the order given: adaptation carries over "
                             "(default: each file is its own speaker)")
    # Kept so scripts written when sessions were the default still run: it is the default now.
    parser.add_argument("--each-file-alone", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=0, metavar="N",
                        help="sessions (files, unless --same-speaker or --list joins them) scored at once, each in "
                             "its own process, this one included (default: 0, one per CPU core, given 8 sessions "
                             "or more per process)")
    add_config_arguments(parser, skip=("--source", "--realtime", "--capture-rate", "--stdin-rate", "--stdin-channels", "--bind",
                                       "--wait-subscriber"))


def classify_file(path: str, pipeline, new_speaker: bool = True, progress: bool = False) -> dict:
    """The messages the daemon would publish for `path`, and the whole-file result.
    `progress`: a percentage on stderr as the file is read (for long files on a terminal)."""
    from streamemo.audio.sources import EndOfStream, FileSource
    from streamemo.config import AudioConfig
    from streamemo.dimensions import arousal_valence
    from streamemo.stream.pipeline import file_probabilities
    from streamemo.stream.processor import Processor

    source = FileSource(path, realtime=False, block_s=AudioConfig().block_s)
    pipeline.reset(speaker=new_speaker)
    processor = Processor(pipeline, source.rate, path)
    results, total, shown = [], max(source.file.frames, 1), -1
    try:
        while True:
            results += processor.process(source.read(0))
            if progress and (percent := 100 * source.position // total) != shown:
                shown = percent
                print(f"\r{Path(path).name}: {percent} %", end="", file=sys.stderr, flush=True)
    except EndOfStream:
        results += processor.finish()
    finally:
        source.close()
        if progress and shown >= 0:
            print("\r\033[K", end="", file=sys.stderr, flush=True)  # the line goes once the file is done
    probs = file_probabilities([e for e, _ in results])
    labels = processor.labels
    dims = arousal_valence(labels, probs)
    windows = []
    for _, message in results:
        body = message.to_body()
        # When the window's last sample was read and when it was printed: clock times of this
        # run, not of the recording (t_audio places a window in the file).
        del body["t_capture"], body["t_publish"]
        windows.append(body)
    return {
        "file": path,
        "label": None if probs is None else labels[int(np.argmax(probs))],
        "confidence": None if probs is None else round(float(np.max(probs)), 5),
        "probs": None if probs is None else [round(float(p), 5) for p in probs],
        "arousal": None if dims is None else dims[0],
        "valence": None if dims is None else dims[1],
        "labels": labels,
        "emotions": None if pipeline.keep is None else labels,  # a chosen set (--emotions), as the daemon says it
        "duration_s": round(source.position / source.rate, 3),
        "voiced_windows": sum(w["voiced"] for w in windows),  # what the whole-file label is the mean of
        "repaired_samples": processor.repaired,  # NaN, infinite or far past full scale: silenced or clipped
        "windows": windows,
    }


def audio_files(paths: list[str]) -> list[str]:
    """`paths` with each folder replaced by the audio files under it, sorted; hidden files
    and folders are skipped (a Mac's `._talk.wav` beside `talk.wav` is not audio). A folder
    with none stays itself, for `_score_session` to name."""
    out = []
    for path in paths:
        if not Path(path).is_dir():
            out.append(path)
            continue
        found = sorted(str(f) for f in Path(path).rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file()
                       and not any(part.startswith(".") for part in f.relative_to(path).parts))
        out += found or [path]
    return out


def sessions(args) -> list[tuple[str, bool]]:
    """(file, whether speaker adaptation starts afresh for it), in the order to score them."""
    if args.list is None:
        if not args.files:
            raise StreamemoError("no files: give FILE… or --list CSV", 2)
        return [(f, not args.same_speaker or i == 0) for i, f in enumerate(audio_files(args.files))]
    if args.files:
        raise StreamemoError("give files either as arguments or in --list, not both", 2)
    try:
        with open(args.list, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row and row[0].strip() and not row[0].startswith("#")]
    except (OSError, UnicodeDecodeError) as e:
        raise StreamemoError(f"--list {args.list}: cannot read it ({e}); give a CSV of path[,speaker] rows", 2) from None
    if rows and rows[0][0].strip().lower() in ("path", "file"):
        rows = rows[1:]  # a header row
    base = args.list.parent
    by_speaker: dict[str, list[str]] = {}
    for i, row in enumerate(rows):
        path = row[0].strip() if Path(row[0].strip()).is_absolute() else str(base / row[0].strip())
        # No speaker column: each row its own speaker (unless --same-speaker: all one).
        speaker = row[1].strip() if len(row) > 1 and row[1].strip() else ("all" if args.same_speaker else f"#{i}")
        by_speaker.setdefault(speaker, []).append(path)
    return [(path, j == 0) for paths in by_speaker.values() for j, path in enumerate(paths)]


def main(args) -> int:
    config = config_from_args(args)
    if args.print_config:
        print(config.to_toml(), end="")
        return 0
    if args.jobs < 0:
        raise StreamemoError(f"--jobs {args.jobs}: give a number of processes, or 0 for one per CPU core", 2)
    groups = _session_groups(sessions(args))
    # By default one process per core, once there are enough sessions to repay starting them.
    jobs = min(args.jobs or len(os.sched_getaffinity(0)), len(groups) // (1 if args.jobs else WORTH_A_PROCESS))
    if jobs <= 1:
        _start_worker(config, progress=sys.stderr.isatty())
        results = (result for group in groups for result in _score_session(group))
        return _print_results(results, args.format)
    return _print_results(_score_in_parallel(config, groups, jobs), args.format)


def _session_groups(work: list[tuple[str, bool]]) -> list[list[tuple[str, bool]]]:
    """`sessions()` cut where speaker adaptation starts afresh: the units a worker scores whole."""
    groups: list[list[tuple[str, bool]]] = []
    for path, new_speaker in work:
        if new_speaker or not groups:
            groups.append([])
        groups[-1].append((path, new_speaker))
    return groups


WORTH_A_PROCESS = 8  # sessions per worker before the default --jobs starts one (each costs ~2 s to start)
_WORKER: dict = {}  # this process's pipeline and whether to show progress (set by _start_worker)


def _score_in_parallel(config, groups: list, jobs: int):
    """Each group's results, in order, scored by this process and `jobs - 1` workers.

    Workers are spawned first, so they import torch and load the model while this process
    does the same (that start is about 2 s, a sixth of a folder of 1440 clips on two cores);
    a bad model is then one line from here, not one per worker. The workers take groups
    from the front, a few at a time, and this process takes them one at a time from the
    back, so both run until the last group. A worker that dies (killed for memory, say)
    costs nothing but time: its groups are scored here."""
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    done: dict[int, list] = {}  # group index -> its results, until printed
    in_flight: deque = deque()  # (first group index, futures' groups, future), oldest first
    front, back = 0, len(groups)  # groups[front:back] are not yet handed out
    # Spawned, not forked: a fork would inherit torch's thread pools mid-state.
    pool = ProcessPoolExecutor(jobs - 1, mp_context=get_context("spawn"), initializer=_start_spawned_worker,
                               initargs=(config,))
    per_task = max(1, min(8, len(groups) // (8 * jobs)))  # groups per task: few round trips, an even finish

    def hand_out() -> None:
        nonlocal front
        while front < back and len(in_flight) < 2 * (jobs - 1) and not broken:
            take = groups[front : min(front + per_task, back)]
            try:
                in_flight.append((front, take, pool.submit(_score_groups, take)))
            except BrokenProcessPool:
                return died()
            front += len(take)

    def died() -> None:
        nonlocal broken
        if not broken:
            log.warning("a classify worker process died; its files are scored in the main process")
        broken = True

    def collect(block: bool) -> None:
        while in_flight and (block or in_flight[0][2].done()):
            first, take, future = in_flight.popleft()
            try:
                results = future.result()
            except BrokenProcessPool:
                died()
                results = _score_groups(take)
            done.update(zip(range(first, first + len(take)), results))

    printed, broken = 0, False
    try:
        hand_out()  # starts the workers
        _start_worker(config, progress=False)
        while printed < len(groups):
            collect(block=False)
            hand_out()
            while printed in done:  # in order, as soon as the groups before are done
                yield from done.pop(printed)
                printed += 1
            if front < back:
                back -= 1
                done[back] = _score_session(groups[back])
            elif in_flight:
                collect(block=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(config, progress: bool) -> None:
    import torch

    from streamemo.cli import keep_freed_memory

    keep_freed_memory()  # a spawned worker starts in a fresh interpreter, not through cli.main
    from streamemo.features import pick_device
    from streamemo.model import load_model
    from streamemo.stream.pipeline import Pipeline

    torch.set_num_threads(config.pipeline.threads)
    device = pick_device(config.pipeline.device)
    _WORKER.update(pipeline=Pipeline(load_model(config.model.path, device), config.pipeline, device), progress=progress)


def _start_spawned_worker(config) -> None:
    """A worker's start. A bad model is the main process's one-line error (it loads the same
    model at the same time), not a traceback from each worker: the error waits here."""
    try:
        _start_worker(config, progress=False)
    except StreamemoError as e:
        _WORKER["error"] = e


def _score_groups(groups: list[list[tuple[str, bool]]]) -> list[list[dict | str]]:
    if "error" in _WORKER:
        raise _WORKER["error"]
    return [_score_session(group) for group in groups]


def _score_session(group: list[tuple[str, bool]]) -> list[dict | str]:
    """Each file's result, or its one-line error."""
    out: list[dict | str] = []
    for path, new_speaker in group:
        if Path(path).is_dir():  # left by audio_files: nothing to score in it
            out.append(f"{path}: a folder with no audio files in it ({', '.join(sorted(AUDIO_SUFFIXES))})")
            continue
        try:
            out.append(classify_file(path, _WORKER["pipeline"], new_speaker=new_speaker, progress=_WORKER["progress"]))
        except StreamemoError as e:
            out.append(str(e))
    return out


def _print_results(results, fmt: str) -> int:
    failures, writer = 0, None
    for result in results:
        if isinstance(result, str):
            print(f"streamemo classify: error: {result}", file=sys.stderr)
            failures += 1
        elif fmt == "json":
            from streamemo.protocol import to_json

            print(to_json(result))
        elif fmt == "csv":
            if writer is None:
                writer = csv.writer(sys.stdout)
                writer.writerow(["file", "duration_s", "label", "confidence", "arousal", "valence", "voiced_windows",
                                 *result["labels"]])
            writer.writerow(_csv_row(result))
        else:
            _print_table(result)
        sys.stdout.flush()
    return 1 if failures else 0


def _csv_row(result: dict) -> list:
    probs = result["probs"] or [""] * len(result["labels"])
    return [result["file"], result["duration_s"], result["label"] or "",
            "" if result["confidence"] is None else result["confidence"],
            "" if result["arousal"] is None else result["arousal"], "" if result["valence"] is None else result["valence"],
            result["voiced_windows"], *probs]


def _print_table(result: dict) -> None:
    print(f"{result['file']}  ({result['duration_s']:.2f} s)")
    if result["emotions"]:
        print(f"  deciding among {', '.join(result['emotions'])} only (--emotions)")
    print(f"  {'end (s)':>8}  {'voiced':<6}  {'top':<10} {'conf':>5}  raw top")
    for w in result["windows"]:
        raw_top = "" if w["raw"] is None else w["labels"][int(np.argmax(w["raw"]))]
        conf = "" if w["confidence"] is None else f"{w['confidence']:.2f}"
        print(f"  {w['t_audio']:8.2f}  {'yes' if w['voiced'] else 'no':<6}  {w['top'] or '-':<10} {conf:>5}  {raw_top}")
    if result["repaired_samples"]:
        print(f"  {result['repaired_samples']} samples were NaN, infinite or far past full scale: "
              "silenced or clipped before scoring")
    if result["label"] is None:
        print("  whole file: no voiced window (no speech heard; see --speech-threshold)")
    else:
        dims = "" if result["arousal"] is None else \
            f"; arousal {result['arousal']:+.2f}, valence {result['valence']:+.2f}"
        print(f"  whole file: {result['label']} ({result['confidence']:.2f}){dims}")
    print()
