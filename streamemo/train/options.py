"""Command-line options shared by `streamemo train` and `streamemo evaluate`: which data,
and the training recipe. Defaults come from `TrainConfig`, so they live in one place."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from streamemo import StreamemoError
from streamemo.config import Range
from streamemo.features import FrontendSpec
from streamemo.networks import check_arch_params
from streamemo.train.augment import AugmentConfig
from streamemo.train.datasets import ReadResult
from streamemo.train.readers import READERS, read_corpus
from streamemo.train.recipe import RECIPES, TrainConfig, watches_validation

log = logging.getLogger(__name__)
DEFAULTS = TrainConfig()

# The recipe's numbers and their ranges (config.Range, as for the daemon's keys).
TRAIN_LIMITS = {
    "window_s": Range(0.1, 60.0, "a window in seconds such as 2"),
    "epochs": Range(1, 100_000, "e.g. --epochs 120", integer=True),
    "batch_size": Range(1, 65_536, "e.g. --batch-size 32", integer=True),
    "lr": Range(0.0, 10.0, "a peak learning rate such as 3e-3", above=True),
    "weight_decay": Range(0.0, 10.0, "e.g. 1e-2"),
    "early_stop": Range(0, 100_000, "epochs without gain, 0 for never", integer=True),
    "average_last": Range(0, 100_000, "epochs to average, 0 for the last one", integer=True),
    "corpus_sampling_power": Range(0.0, 1.0, "0 (corpora alike) to 1 (every clip once an epoch)"),
    "mixup": Range(0.0, 100.0, "a Beta parameter such as 0.2, 0 for off"),
    "label_smoothing": Range(0.0, 0.99, "e.g. 0.1, 0 for off"),
    "wave_copies": Range(0, 100, "augmented copies per clip such as 2, 0 for off", integer=True),
    "degraded_copies": Range(0, 100, "copies through a room and noise such as 1, 0 for off", integer=True),
    "ensemble": Range(1, 16, "networks to train, e.g. 1", integer=True),
    "val_fraction": Range(0.0, 0.9, "a share of speakers such as 0.15, 0 for none"),
    "threads": Range(0, 1024, "torch CPU threads, 0 for torch's choice", integer=True),
}


def add_data_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--data", action="append", default=[], required=required, metavar="KIND:PATH",
                        help=f"training corpus, repeatable; KIND one of {', '.join(READERS)} "
                             "(e.g. ravdess:../shared/data/ravdess, csv:my/manifest.csv)")
    parser.add_argument("--drop-boredom", action="store_true",
                        help="leave out EmoDB's boredom clips (no canonical class) instead of training a class for them")
    parser.add_argument("--ravdess-channel", choices=["speech", "song", "both"], default="speech",
                        help="RAVDESS vocal channel to read (default: speech)")


def read_data(specs: list[str], args) -> ReadResult:
    result = ReadResult()
    for spec in specs:
        result.extend(read_corpus(spec, boredom=not args.drop_boredom, ravdess_channel=args.ravdess_channel))
    return result


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    g = parser.add_argument_group("recipe (defaults: the shipped model's recipe)")
    g.add_argument("--recipe", type=Path, metavar="NAME|FILE",
                   help=f"a named recipe ({', '.join(RECIPES)}: the shipped models') or a JSON file of "
                        "TrainConfig fields; flags override it")
    g.add_argument("--arch", choices=["encoder_head", "cnn_lstm", "cnn2d", "conv1d"], help=f"network (default {d.arch})")
    g.add_argument("--arch-params", type=json.loads, metavar="JSON",
                   help='network hyper-parameters, e.g. \'{"channels": [128, 128], "lstm_hidden": 64}\'')
    g.add_argument("--features", choices=["whisper", "logmel", "mfcc"],
                   help=f"frontend kind (default {d.frontend.kind}; logmel and mfcc take the small recipe's "
                        "frontend; mfcc for --arch conv1d)")
    g.add_argument("--window", type=float, metavar="S", help=f"window length in seconds (default {d.window_s})")
    g.add_argument("--trim", action="store_true", default=None, help="trim leading/trailing silence")
    g.add_argument("--epochs", type=int, help=f"default {d.epochs}")
    g.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    g.add_argument("--optimizer", choices=["adamw", "sgd"], help=f"default {d.optimizer}")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    g.add_argument("--weight-decay", type=float, help=f"default {d.weight_decay}")
    g.add_argument("--schedule", choices=["cosine", "plateau"],
                   help=f"cosine decay, or reduce-on-plateau of validation UA (default {d.schedule})")
    g.add_argument("--early-stop", type=int, metavar="N", help="stop after N epochs without validation gain")
    g.add_argument("--select", choices=["best", "last"],
                   help=f"weights to keep: the best validation epoch's, or the last (default {d.select})")
    g.add_argument("--average-last", type=int, metavar="N",
                   help=f"with --select last: keep the average of the last N epochs' weights, 0 = the last "
                        f"epoch's (default {d.average_last})")
    g.add_argument("--no-class-weighting", dest="class_weighting", action="store_false", default=None)
    g.add_argument("--corpus-classes-only", action="store_true", default=None,
                   help="score each training clip's softmax over its own corpus's classes only")
    g.add_argument("--corpus-sampling-power", type=float, metavar="P",
                   help="each corpus's share of an epoch's draws goes as its size to this power: 1 = every clip "
                        f"once, 0.5 = square root, 0 = corpora alike (default {d.corpus_sampling_power:g})")
    g.add_argument("--mixup", type=float, metavar="ALPHA", help=f"mixup Beta parameter, 0 = off (default {d.mixup})")
    g.add_argument("--label-smoothing", type=float, help=f"default {d.label_smoothing}")
    g.add_argument("--no-spec-augment", dest="spec_augment", action="store_false", default=None)
    g.add_argument("--wave-copies", type=int, metavar="K",
                   help=f"augmented waveform copies per training clip, 0 = off (default {d.wave_copies})")
    g.add_argument("--degraded-copies", type=int, metavar="K",
                   help="further copies per clip that always pass through a simulated room and background "
                        f"noise (default {d.degraded_copies})")
    g.add_argument("--ensemble", type=int, metavar="N",
                   help=f"train N networks (seeds seed..seed+N-1) shipped as one averaging model (default {d.ensemble})")
    g.add_argument("--no-speaker-norm", dest="speaker_norm", action="store_false", default=None,
                   help="train on features as the frontend gives them, without mapping each speaker "
                        "onto the average speaker (and so without speaker adaptation in the daemon)")
    g.add_argument("--augment", type=json.loads, metavar="JSON",
                   help='augmentation switches and strengths, e.g. \'{"pitch": false, "noise_snr_db": [10, 30]}\'')
    g.add_argument("--val-fraction", type=float, help=f"share of training speakers held for validation "
                                                      f"(default {d.val_fraction})")
    g.add_argument("--seed", type=int, help=f"default {d.seed}")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--cache-dir", type=Path, help="feature cache folder (default ~/.cache/streamemo/features)")
    g.add_argument("--no-cache", action="store_true", help="recompute features, write nothing to the cache")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args) -> TrainConfig:
    base = DEFAULTS.to_dict()
    if args.recipe and str(args.recipe) in RECIPES and not args.recipe.exists():
        base = RECIPES[str(args.recipe)]().to_dict()
    elif args.recipe:
        try:
            base.update(json.loads(args.recipe.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise StreamemoError(f"--recipe {args.recipe}: {e}", 2) from None
    flags = {
        "arch": args.arch, "arch_params": args.arch_params, "window_s": args.window, "trim": args.trim,
        "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
        "weight_decay": args.weight_decay, "schedule": args.schedule, "early_stop": args.early_stop,
        "select": args.select, "average_last": args.average_last, "class_weighting": args.class_weighting,
        "corpus_sampling_power": args.corpus_sampling_power,
        "corpus_classes_only": args.corpus_classes_only,
        "mixup": args.mixup, "label_smoothing": args.label_smoothing, "spec_augment": args.spec_augment,
        "wave_copies": args.wave_copies, "degraded_copies": args.degraded_copies, "ensemble": args.ensemble,
        "speaker_norm": args.speaker_norm,
        "val_fraction": args.val_fraction, "seed": args.seed,
        "device": args.device, "threads": args.threads,
    }
    recipe_arch = base["arch"]
    base.update({k: v for k, v in flags.items() if v is not None})
    if args.arch and args.arch != recipe_arch and args.arch_params is None:
        base["arch_params"] = {}  # the default recipe's parameters belong to its architecture
    # Each network takes its own features unless --features says otherwise: conv1d the MFCC
    # notebooks' sequences, the 2D networks log-mel maps, the encoder head an encoder's.
    if args.arch == "conv1d":
        features = args.features or "mfcc"
    elif args.arch in ("cnn_lstm", "cnn2d") and base["frontend"]["kind"] == "whisper":
        features = args.features or "logmel"
    elif args.arch == "encoder_head":
        features = args.features or "whisper"
    else:
        features = args.features
    if features and features != base["frontend"]["kind"]:
        if base["frontend"]["kind"] == "whisper":  # a spectrogram network: the small recipe's frontend
            small = TrainConfig.small().to_dict()
            base["frontend"] = small["frontend"]
            if args.arch is None:
                base.update(arch=small["arch"], arch_params=small["arch_params"])
            if args.window is None:
                base["window_s"] = small["window_s"]
        elif features == "whisper":
            base["frontend"] = DEFAULTS.frontend.to_dict()
        base["frontend"] = {**base["frontend"], "kind": features}
        if features == "mfcc" and args.speaker_norm is None:
            base["speaker_norm"] = False  # it needs log-mel or encoder features
    if args.augment:
        base["augment"] = {**base["augment"], **args.augment}
    base["progress"] = not args.quiet
    try:
        config = TrainConfig.from_dict(base)
        FrontendSpec.from_dict(config.frontend.to_dict())
        AugmentConfig.from_dict(config.augment.__dict__)
    except TypeError as e:
        raise StreamemoError(f"bad recipe field: {e}", 2) from None
    # Every number checked now, not hours into a run (`recipe` when it came from --recipe).
    for key, limit in TRAIN_LIMITS.items():
        from_file = args.recipe is not None and flags.get(key) is None
        flag = "--window" if key == "window_s" else "--" + key.replace("_", "-")
        limit.check(key if from_file else flag, getattr(config, key), f"--recipe {args.recipe}" if from_file else None)
    check_arch_params(config.arch, config.arch_params,
                      "--arch-params" if args.arch_params is not None or not args.recipe else f"--recipe {args.recipe}")
    if config.corpus_classes_only and config.label_smoothing > 0:  # smoothing would put mass on masked classes
        raise StreamemoError("--corpus-classes-only and --label-smoothing cannot be combined: drop one", 2)
    # A missing noise folder: said now, not after features.
    if config.copy_augments() and config.augment.background:
        from streamemo.train.noise import load_noise_set

        try:
            load_noise_set(config.augment.noise_dir, "train")
        except StreamemoError as e:
            if args.augment and "background" in args.augment:  # asked for by name: an error
                raise
            # The default recipe's noise comes from ../shared/data; away from it, train without, and
            # say so when training starts (`say_recipe_notes`), not before the command's own checks.
            args.recipe_notes = [f"{str(e).split(': point')[0]}; training without background noise"]
            config = replace(config, augment=replace(config.augment, background=False))
    if config.val_fraction <= 0 and watches_validation(config):
        raise StreamemoError("--select best, --schedule plateau and --early-stop judge epochs on validation speakers, "
                             "and none are held out: add --val-fraction 0.15", 2)
    return config


def say_recipe_notes(args) -> None:
    """Logs what `config_from_args` changed in the recipe on its own (e.g. no noise folder)."""
    for note in getattr(args, "recipe_notes", []):
        log.warning(note)


def command_line() -> str:
    """The command as typed (every flag, e.g. --drop-boredom), for reports and cards."""
    return "streamemo " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def git_commit() -> str | None:
    """The commit the code ran from, with '+dirty' when the tree has changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None
