"""streamemo classify: score files offline, through exactly the daemon's processing.

Prints each window's top label (the same messages `run --source FILE --no-realtime`
publishes) and a whole-file label: the mean of the voiced windows' raw probabilities.

Several files are one session, in the order given, as if one person said them one after
another: speaker adaptation carries from each file to the next, as it would live
(`--each-file-alone` starts it afresh for every file)."""

from __future__ import annotations

import sys
import time

import numpy as np

from streamemo import StreamemoError
from streamemo.commands._options import add_config_arguments, config_from_args


def configure(parser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files (anything libsndfile reads)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file instead of a table")
    parser.add_argument("--each-file-alone", action="store_true",
                        help="speaker adaptation starts afresh for each file (default: the files are one "
                             "speaker's session, in the order given)")
    add_config_arguments(parser, skip=("--source", "--realtime", "--capture-rate", "--stdin-rate", "--stdin-channels", "--bind",
                                       "--wait-subscriber"))


def classify_file(path: str, pipeline, new_speaker: bool = False) -> dict:
    """The messages the daemon would publish for `path`, and the whole-file result."""
    from streamemo.audio.sources import EndOfStream, FileSource
    from streamemo.config import AudioConfig
    from streamemo.stream.pipeline import file_probabilities
    from streamemo.stream.processor import Processor

    source = FileSource(path, realtime=False, block_s=AudioConfig().block_s)
    pipeline.reset(speaker=new_speaker)
    processor = Processor(pipeline, source.rate, path)
    results = []
    try:
        while True:
            results += processor.process(source.read(0))
    except EndOfStream:
        results += processor.finish()
    finally:
        source.close()
    probs = file_probabilities([e for e, _ in results])
    labels = processor.labels
    printed = time.time()  # this command's "publishing" is writing the windows out, all at once
    return {
        "file": path,
        "label": None if probs is None else labels[int(np.argmax(probs))],
        "probs": None if probs is None else [round(float(p), 5) for p in probs],
        "labels": labels,
        "duration_s": round(source.position / source.rate, 3),
        "repaired_samples": processor.repaired,  # NaN, infinite or far past full scale: silenced or clipped
        "windows": [message.to_body(printed) for _, message in results],
    }


def main(args) -> int:
    config = config_from_args(args)
    if args.print_config:
        print(config.to_toml(), end="")
        return 0
    from streamemo.features import pick_device
    from streamemo.model import load_model
    from streamemo.stream.pipeline import Pipeline

    import torch

    torch.set_num_threads(config.pipeline.threads)
    device = pick_device(config.pipeline.device)
    pipeline = Pipeline(load_model(config.model.path, device), config.pipeline, device)
    failures = 0
    for path in args.files:
        try:
            result = classify_file(path, pipeline, new_speaker=args.each_file_alone)
        except StreamemoError as e:
            print(f"streamemo classify: error: {e}", file=sys.stderr)
            failures += 1
            continue
        if args.json:
            from streamemo.protocol import to_json

            print(to_json(result))
        else:
            _print_table(result)
    return 1 if failures else 0


def _print_table(result: dict) -> None:
    print(f"{result['file']}  ({result['duration_s']:.2f} s)")
    print(f"  {'end (s)':>8}  {'voiced':<6}  {'top':<10} {'conf':>5}  raw top")
    for w in result["windows"]:
        raw_top = "" if w["raw"] is None else w["labels"][int(np.argmax(w["raw"]))]
        conf = "" if w["confidence"] is None else f"{w['confidence']:.2f}"
        print(f"  {w['t_audio']:8.2f}  {'yes' if w['voiced'] else 'no':<6}  {w['top'] or '-':<10} {conf:>5}  {raw_top}")
    if result["repaired_samples"]:
        print(f"  {result['repaired_samples']} samples were NaN, infinite or far past full scale: "
              "silenced or clipped before scoring")
    if result["label"] is None:
        print("  whole file: no voiced window (silence or too quiet; see --vad-threshold)")
    else:
        best = max(result["probs"])
        print(f"  whole file: {result['label']} ({best:.2f})")
    print()
