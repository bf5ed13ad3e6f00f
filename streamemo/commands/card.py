"""`streamemo card MODEL --evaluation REPORT`: an evaluation's figures into a model's card,
for a model trained before its recipe was evaluated (`train --evaluation` does it in one go)."""

from __future__ import annotations

from pathlib import Path


def configure(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="the model to update: models/NAME (NAME.safetensors + NAME.json)")
    parser.add_argument("--evaluation", type=Path, metavar="REPORT_JSON",
                        help="an evaluate report.json of this model's recipe")
    parser.add_argument("--cross-corpus", type=Path, metavar="REPORT_JSON",
                        help="an evaluate report.json of this model on corpora it never heard "
                             "(`evaluate --model MODEL --test KIND:PATH …`), for the card's cross-corpus part")
    parser.add_argument("--leave-one-corpus-out", type=Path, metavar="REPORT_JSON", dest="loco",
                        help="an `evaluate --leave-one-corpus-out` report.json of this model's recipe")
    parser.add_argument("--card-md", type=Path, metavar="MD",
                        help="also write a human-readable model card (e.g. models/MODEL_CARD.md)")


def main(args) -> int:
    from streamemo.model import model_paths
    from streamemo.train.card import attach_evaluation

    attach_evaluation(args.model, args.evaluation, args.card_md, args.cross_corpus, args.loco)
    print(f"wrote the figures from {', '.join(str(p) for p in (args.evaluation, args.cross_corpus, args.loco) if p)} "
          f"into {model_paths(args.model)[1]}"
          + (f" and {args.card_md}" if args.card_md else ""))
    return 0
