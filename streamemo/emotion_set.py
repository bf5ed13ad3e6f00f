"""A chosen set of emotions: a model's probabilities over some of its classes only.

`emotions = ["angry", "happy", "neutral", "sad"]` in `[pipeline]` (`--emotions`) makes the
daemon, `classify` and the dashboard decide among those classes alone. Each window's
probabilities are cut to the chosen classes and renormalised (`restrict`), which is the
softmax over their logits alone: the model's own judgement when it must pick one of them.
Evaluation scores a test set over the classes it has with the same function
(train/evaluate.py), so a figure "over angry, happy, neutral and sad" is what this set
gives live.

The restriction is made on each window's probabilities before anything else sees them
(stream/pipeline.py): the smoother, the top label and its hysteresis, arousal and valence
(dimensions.py) and every subscriber then work over the same classes, and a dropped class
cannot win the smoothed top label or pull arousal towards itself.
"""

from __future__ import annotations

import numpy as np

from streamemo import StreamemoError


def chosen_classes(labels, emotions, model_name: str) -> list[int] | None:
    """Indices into `labels` of the chosen `emotions`, in the model's order; None when no set
    is chosen (every class is in force). A set naming a class the model lacks, or fewer than
    two classes (nothing to decide between), is one line naming the model's labels."""
    if emotions is None:
        return None
    theirs = f"model {model_name}'s labels are {', '.join(labels)}"
    unknown = [e for e in emotions if e not in labels]
    if unknown:
        named = ", ".join(map(repr, unknown)) + (" is not a label" if len(unknown) == 1 else " are not labels")
        raise StreamemoError(f"--emotions (pipeline.emotions): {named} of model {model_name}; {theirs}: "
                             "choose two or more of them", 2)
    if len(set(emotions)) < 2:
        given = ", ".join(emotions) or "none"
        raise StreamemoError(f"--emotions (pipeline.emotions) must name at least two emotions to decide between, got "
                             f"{given}; {theirs}: choose two or more of them, or leave it unset for all", 2)
    return [i for i, label in enumerate(labels) if label in emotions]


def restrict(probs, keep: list[int]) -> np.ndarray:
    """`probs` (..., n_classes) over the classes `keep` only, renormalised to sum to 1. Where
    the model gave those classes no probability at all (float32 underflow, a gap of over
    100 in the logits) the result is NaN, which the pipeline counts as a window it could
    not score, never as a guess."""
    kept = np.asarray(probs, dtype=np.float64)[..., keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        return kept / kept.sum(axis=-1, keepdims=True)
