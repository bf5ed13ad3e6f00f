"""`streamemo train`: corpora -> models/<name>.safetensors + <name>.json.

Runs on one process, or several under torchrun (DistributedDataParallel):
    torchrun --nproc-per-node 2 -m streamemo train --data ravdess:PATH -o models/x
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

log = logging.getLogger("streamemo.train")


def configure(parser) -> None:
    from streamemo.train.options import add_data_arguments, add_recipe_arguments

    add_data_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="MODEL",
                        help="where to write the model: models/NAME -> NAME.safetensors + NAME.json")
    parser.add_argument("--force", action="store_true", help="replace a model already at -o")
    parser.add_argument("--init", metavar="MODEL", help="fine-tune from this model instead of starting afresh")
    parser.add_argument("--evaluation", type=Path, metavar="REPORT_JSON",
                        help="an evaluate report.json whose figures go into the model card")
    parser.add_argument("--card-md", type=Path, metavar="MD",
                        help="also write a human-readable model card (e.g. models/MODEL_CARD.md)")
    add_recipe_arguments(parser)


def main(args) -> int:
    import torch

    from streamemo.cli import setup_logging
    from streamemo import StreamemoError
    from streamemo.model import check_writable, load_model, model_paths, save_model
    from streamemo.train.card import check_labels, evaluation_figures, read_report
    from streamemo.train.licenses import LICENSES
    from streamemo.train.options import command_line, config_from_args, git_commit, read_data, say_recipe_notes
    from streamemo.train.trainer import Trainer, fine_tuning, model_labels

    setup_logging("info")
    commit = git_commit()  # before training: the code that trained, not what changed meanwhile
    # A bad --evaluation file must stop the run now, not after the training it was for.
    report = read_report(args.evaluation) if args.evaluation else None
    config = config_from_args(args)
    check_writable(args.output, "-o")  # found unwritable after training, the run would be lost
    there = [str(p) for p in model_paths(args.output) if p.exists()]
    if there and not args.force:  # hours of someone's training are not replaced unasked
        raise StreamemoError(f"-o {args.output}: a model is already there ({', '.join(there)}); choose another "
                             "name, or pass --force to replace it", 2)
    data = read_data(args.data, args)
    init = load_model(args.init) if args.init else None
    if init is not None:
        config = fine_tuning(config, init)
    if report is not None:
        check_labels(report, args.evaluation, model_labels(data.clips, init), f"a model of {' '.join(args.data)}")
    say_recipe_notes(args)
    trainer = Trainer(config, args.cache_dir, use_cache=not args.no_cache)
    name = Path(args.output).name.removesuffix(".json").removesuffix(".safetensors")
    result = trainer.fit(data.clips, name=name, init=init)
    skipped = data.skipped + result.skipped
    if trainer.main_process:
        card = {
            "training": {
                "data": args.data,
                "licenses": {c: LICENSES.get(c, "unknown") for c in sorted({x.corpus for x in data.clips})},
                "clips": {"train": len(result.train_clips), "validation": len(result.val_clips),
                          "skipped": len(skipped)},
                "class_counts": dict(Counter(c.label for c in result.train_clips + result.val_clips)),
                "speakers": len({c.speaker for c in result.train_clips + result.val_clips}),
                "validation_speakers": sorted({c.speaker for c in result.val_clips}),
                "recipe": config.to_dict(),
                "weights": result.chosen,
                "final_epoch": result.history[-1] if result.history else None,
                "init": args.init,
                "seconds": round(result.seconds, 1),
            },
            "git_commit": commit,
            "command": command_line(),
        }
        if report is not None:
            card["evaluation"] = evaluation_figures(report)
        weights, card_path = save_model(result.model, args.output, extra_card=card)
        print(f"trained {result.model.n_parameters():,} parameters on {len(result.train_clips)} clips "
              f"({len(result.val_clips)} validation, {len(skipped)} skipped) in {result.seconds:.0f} s; "
              f"kept the {result.chosen}")
        for line in skipped:
            print(f"  skipped {line}")
        if result.history and "val_ua" in result.history[-1]:
            print(f"validation (held-out speakers): UA {100 * result.history[-1]['val_ua']:.1f} % at the last epoch")
        print(f"wrote {weights} and {card_path}")
        if args.card_md:
            from streamemo.train.report import model_card_markdown

            args.card_md.write_text(model_card_markdown(result.model.card, report))
            print(f"wrote {args.card_md}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
