"""Seconds per training epoch on RAVDESS (speech, 1440 clips) on this machine, with the
feature cache cold (an empty cache folder: every clip is read, resampled and run through
the frontend first) and warm (the same run again: features come from the cache).

    .venv/bin/python benchmarks/train_epoch.py [--data ravdess:../shared/data/ravdess] [--threads 2]

The recipe is the shipped one (TrainConfig defaults: no validation speakers) with one
epoch. Cold includes making its augmented waveform copies (2 per clip: stretch, pitch,
noise, ... then the frontend), a one-off cost cached like the features.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from streamemo.train.readers import read_corpus
from streamemo.train.recipe import TrainConfig
from streamemo.train.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ravdess:../shared/data/ravdess")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clips = read_corpus(args.data).clips
    config = replace(TrainConfig(), epochs=1, progress=False, threads=args.threads)
    with tempfile.TemporaryDirectory() as cache:
        for state in ("cold", "warm"):
            t = time.perf_counter()
            trainer = Trainer(config, Path(cache))
            result = trainer.fit(clips)
            total = time.perf_counter() - t
            epoch = result.history[0]["seconds"]
            print(f"{state}: {total:.1f} s for one epoch on {len(result.train_clips)} clips "
                  f"(features computed {trainer.store.computed}, from cache {trainer.store.hits}, "
                  f"{config.wave_copies} augmented copies per clip; "
                  f"the epoch's training steps alone {epoch:.1f} s), {args.threads} thread(s)")


if __name__ == "__main__":
    main()
