"""`streamemo evaluate`: honest figures for a recipe or a model.

    # speaker-independent folds (folds.json); other --data corpora only ever add training data
    streamemo evaluate --data ravdess:../shared/data/ravdess --data emodb:../shared/data/emodb \\
        --drop-boredom --folds ravdess --jobs 2 --report reports/ravdess
    # leave-one-corpus-out: per corpus, train on all the others and test on it
    streamemo evaluate --data ravdess:PATH --data emodb:PATH --data emovo:PATH … \
        --drop-boredom --leave-one-corpus-out --degrade reverb+noise --jobs 2
    # cross-corpus / an extra labelled folder: train on --data, test on --test
    streamemo evaluate --data ravdess:PATH --test emodb:PATH --drop-boredom
    # an existing model on a test set, no training; several models side by side on the same clips
    streamemo evaluate --model models/default --test folder:my_clips
    streamemo evaluate --model models/default --model models/mine --test folder:my_clips
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from streamemo import StreamemoError


def fold_numbers(text: str) -> list[int]:
    """`--fold 1,3` -> [1, 3]; anything but positive whole numbers is one line (a
    StreamemoError passes through argparse, which would print its usage too)."""
    from streamemo import StreamemoError

    try:
        numbers = [int(x) for x in text.split(",")]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise StreamemoError(f"--fold {text}: give fold numbers from 1, separated by commas, e.g. 1,3", 2)
    return numbers


def configure(parser) -> None:
    from streamemo.train.options import add_data_arguments, add_recipe_arguments

    add_data_arguments(parser, required=False)
    parser.add_argument("--folds", metavar="CORPUS", help="run the speaker-independent folds of this corpus")
    parser.add_argument("--folds-file", type=Path,
                        help="fold definitions (default: folds.json in $STREAMEMO_DATA, else in shared/data "
                             "beside the checkout)")
    parser.add_argument("--fold", type=fold_numbers, metavar="N[,N…]", help="only these folds (1-based)")
    parser.add_argument("--jobs", type=int, default=1, help="folds trained at once, in separate processes")
    parser.add_argument("--leave-one-corpus-out", action="store_true",
                        help="for each --data corpus, train on all the others and test on it")
    parser.add_argument("--degrade", metavar="SPEC",
                        help="also score the test clips degraded, e.g. reverb+noise (rooms and noise never "
                             "trained on, noise at 10 dB SNR); words: reverb, noise, channel")
    parser.add_argument("--test", action="append", default=[], metavar="KIND:PATH",
                        help="a labelled test set (another corpus, or your own folder); repeatable")
    parser.add_argument("--model", action="append", default=[], metavar="MODEL",
                        help="evaluate this model on --test instead of training; repeat it to compare models "
                             "on the same clips, each against the first (a report each, in --report/NAME)")
    parser.add_argument("--init", metavar="MODEL",
                        help="each fold fine-tunes this model instead of starting afresh; {fold} in the path "
                             "names each fold's own (refused for a fold whose test speakers the model heard)")
    parser.add_argument("--save-models", metavar="DIR",
                        help="keep each fold's model as DIR/fold<N> (e.g. to --init a second stage from)")
    parser.add_argument("--report", type=Path, default=None, help="report folder (default reports/<mode>)")
    add_recipe_arguments(parser)


def main(args) -> int:
    from streamemo.cli import setup_logging
    from streamemo.model import load_model
    from streamemo.train.evaluate import corpus_folds, load_folds, run_folds
    from streamemo.train.datasets import shared_data_dir
    from streamemo.train.options import command_line, config_from_args, git_commit, read_data, say_recipe_notes
    from streamemo.train.trainer import Trainer

    setup_logging("warning")
    folds_mode = args.folds or args.leave_one_corpus_out
    if args.folds and args.leave_one_corpus_out:
        raise StreamemoError("--folds and --leave-one-corpus-out are two protocols: run them separately", 2)
    if folds_mode and (args.test or args.model):
        raise StreamemoError("--folds and --leave-one-corpus-out run their own test folds; use --test "
                             "(with --data or --model) separately", 2)
    if not folds_mode and not args.test:
        raise StreamemoError("nothing to evaluate: give --folds CORPUS, --leave-one-corpus-out, "
                             "or --test KIND:PATH", 2)
    if (args.init or args.save_models) and not folds_mode:
        raise StreamemoError("--init and --save-models are for the folds of --folds or --leave-one-corpus-out; "
                             "for a single model use `streamemo train`", 2)
    if not args.model and not args.data:
        raise StreamemoError("give --data to train on (or --model to evaluate an existing model)", 2)
    degrade = None
    if args.degrade:
        from streamemo.train.rooms import Degrader

        degrade = Degrader(args.degrade, cache_dir=args.cache_dir)  # checks the spec and noise folder first
    config = config_from_args(args)
    if args.save_models:  # found unwritable after training, the folds' models would be lost
        from streamemo.model import check_writable

        check_writable(Path(args.save_models) / "fold1", "--save-models")
    meta = {"command": command_line(),
            "git_commit": git_commit(), "recipe": config.to_dict()}
    data = read_data(args.data, args) if args.data else None
    if data is not None:
        say_recipe_notes(args)
    counts: dict[str, Counter] = {}

    if args.folds:
        corpus_clips = [c for c in data.clips if c.corpus == args.folds]
        if not corpus_clips:
            raise StreamemoError(f"--folds {args.folds}: no --data of that kind was given", 2)
        folds = load_folds(args.folds_file or shared_data_dir() / "folds.json", args.folds)
        results = run_folds(config, data.clips, folds, only=args.fold, jobs=args.jobs, cache_dir=args.cache_dir,
                            use_cache=not args.no_cache, degrade=degrade, init_path=args.init,
                            save_dir=args.save_models)
        counts["all training data"] = Counter(c.label for c in data.clips)
        counts[f"{args.folds} (test folds)"] = Counter(c.label for c in corpus_clips)
        title = f"{args.folds}: speaker-independent folds"
        report_dir = args.report or Path("reports") / f"folds-{args.folds}"
    elif args.leave_one_corpus_out:
        names, folds = corpus_folds(data.clips)
        results = run_folds(config, data.clips, folds, only=args.fold, jobs=args.jobs, cache_dir=args.cache_dir,
                            use_cache=not args.no_cache, names=names, degrade=degrade,
                            init_path=args.init, save_dir=args.save_models)
        counts = {name: Counter(c.label for c in data.clips if c.corpus == name) for name in names}
        title = "leave one corpus out: each corpus tested by a model trained on the others"
        report_dir = args.report or Path("reports") / "leave-one-corpus-out"
    else:
        tests = read_data(args.test, args)
        report_dir = args.report or Path("reports") / "test"
        test_counts = {f"test: {name}": Counter(c.label for c in tests.clips if c.corpus == name)
                       for name in sorted({c.corpus for c in tests.clips})}
        if args.model:
            models = {path: load_model(path) for path in args.model}  # every path checked before scoring
            summaries = {}
            for path, model in models.items():
                warn_if_heard(path, model, tests.clips)
                folder = report_dir if len(models) == 1 else report_dir / report_name(path, list(models))
                results = results_on(tests, model, [], f"model {path}", degrade, args)
                summaries[path] = finish(f"{path} on {', '.join(args.test)}", results, test_counts, meta, folder,
                                         data, args)
            if len(models) > 1:
                print_comparison(summaries, len(tests.clips), args.test)
            return 0
        result = Trainer(config, args.cache_dir, use_cache=not args.no_cache).fit(data.clips, name="evaluate")
        counts = {"training": Counter(c.label for c in result.train_clips), **test_counts}
        title = f"train {', '.join(args.data)}; test {', '.join(args.test)}"
        results = results_on(tests, result.model, result.history, result.chosen, degrade, args)
    finish(title, results, counts, meta, report_dir, data, args)
    return 0


def results_on(tests, model, history: list, chosen: str, degrade, args) -> list[dict]:
    """One result per test corpus: each scored over its own classes (the summary then takes
    the mean over corpora)."""
    from streamemo.train.evaluate import held_out_result

    results = []
    for i, name in enumerate(sorted({c.corpus for c in tests.clips}), 1):
        clips = [c for c in tests.clips if c.corpus == name]
        results.append({"fold": i, "name": name, "history": history, "chosen": chosen,
                        **held_out_result(model, clips, degrade, not args.quiet)})
    results[0]["skipped"] += tests.skipped
    return results


def finish(title: str, results: list[dict], counts: dict, meta: dict, report_dir: Path, data, args) -> dict:
    """Writes the report and prints its figures; returns the summary."""
    from streamemo.train.evaluate import summarise
    from streamemo.train.report import write_report

    summary = summarise(results)
    # A bad training file is skipped by every fold that trains on it: count files, not skips.
    meta["skipped"] = len({line for r in results for line in r.get("skipped", [])} | set(data.skipped if data else []))
    write_report(report_dir, title, summary, results, counts, meta)
    print(f"{title}: UA {100 * summary['ua']['mean']:.1f} ± {100 * summary['ua']['std']:.1f} %, "
          f"WA {100 * summary['wa']['mean']:.1f} ± {100 * summary['wa']['std']:.1f} %, "
          f"macro F1 {100 * summary['macro_f1']['mean']:.1f} % over {len(results)} fold(s); "
          f"{meta['skipped']} file(s) skipped")
    for view, words in (("four_class", "4 classes"), ("degraded", f"degraded ({args.degrade})")):
        if view in summary:
            print(f"  {words}: UA {100 * summary[view]['ua']['mean']:.1f} ± {100 * summary[view]['ua']['std']:.1f} %")
    for r in results:
        m = r["metrics"]
        print(f"  fold {r.get('name') or r['fold']}: UA {100 * m['ua']:.1f}  WA {100 * m['wa']:.1f}  F1 {100 * m['macro_f1']:.1f}  "
              f"({m['n_clips']} clips, {m['no_voice']} without a voiced window)")
    print(f"report: {report_dir}/report.md")
    return summary


def report_name(path: str, paths: list[str]) -> str:
    """A compared model's report folder: its name (`models/mine` -> mine), numbered when two share one."""
    def name(p: str) -> str:
        return Path(p).name.removesuffix(".json").removesuffix(".safetensors")

    return name(path) if [name(p) for p in paths].count(name(path)) == 1 else f"{paths.index(path) + 1}-{name(path)}"


def warn_if_heard(path: str, model, clips) -> None:
    """A model trained on some of the test clips (its card names the folders it trained on)
    scores them as no new voice would: said, with how many, not refused (the figure may be
    wanted anyway, e.g. how well it learnt them)."""
    import sys

    from streamemo.train.card import trained_on

    entries, held = trained_on(model.card, clips)
    if held:
        print(f"note: {path} was trained on {', '.join(entries)}, which holds {held} of the {len(clips)} test "
              "clips: its figures on them are not held-out figures", file=sys.stderr)


def print_comparison(summaries: dict, n_clips: int, tests: list[str]) -> None:
    """The models' figures side by side, each in brackets as a gain over the first model's."""
    width = max(len(p) for p in summaries)
    first_path, first = next(iter(summaries.items()))
    print(f"\nthe same {n_clips} clips ({', '.join(tests)}); in brackets, the gain over {first_path}:")
    print(f"  {'model':<{width}}  {'UA':<14} {'WA':<14} macro F1")
    for path, summary in summaries.items():
        cells = []
        for key in ("ua", "wa", "macro_f1"):
            value, gain = 100 * summary[key]["mean"], 100 * (summary[key]["mean"] - first[key]["mean"])
            cells.append(f"{value:.1f}" + (f" ({gain:+.1f})" if summary is not first else ""))
        print(f"  {path:<{width}}  {cells[0]:<14} {cells[1]:<14} {cells[2]}")
