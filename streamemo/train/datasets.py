"""What training data is: a `Clip` (a file, its label on one label set, its speaker and
corpus), what a reader returns (`ReadResult`), the label names corpora use and where the
corpora live. The readers themselves are in `readers.py`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from streamemo import EMOTIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str  # canonical (streamemo.EMOTIONS) or a corpus's own extra class
    speaker: str  # "<corpus>:<id>": unique across corpora, the unit folds hold out
    corpus: str
    info: tuple = ()  # corpus-specific parsed fields as (key, value) pairs, e.g. intensity

    def get(self, key: str, default=None):
        return dict(self.info).get(key, default)


@dataclass
class ReadResult:
    clips: list[Clip] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: why"

    def extend(self, other: ReadResult) -> None:
        self.clips += other.clips
        self.skipped += other.skipped

    def skip(self, path: Path, why: str) -> None:
        log.warning("skipping %s: %s", path, why)
        self.skipped.append(f"{path}: {why}")


# Label names seen in folder names and manifests -> canonical labels.
ALIASES = {
    "neutral": "neutral", "calm": "calm",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "angry": "angry", "anger": "angry",
    "fear": "fearful", "fearful": "fearful", "afraid": "fearful",
    "disgust": "disgust", "disgusted": "disgust",
    "surprise": "surprised", "surprised": "surprised", "ps": "surprised",
    "pleasant_surprise": "surprised", "pleasant_surprised": "surprised",
    "boredom": "boredom", "bored": "boredom",
}


def shared_data_dir() -> Path:
    """Where the corpora live when no path is given: $STREAMEMO_DATA, else `shared/data`
    beside the project's checkout (the team's layout)."""
    if os.environ.get("STREAMEMO_DATA"):
        return Path(os.environ["STREAMEMO_DATA"])
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def canonical_label(name: str) -> str:
    """Maps a label name onto the canonical set; an unknown name is kept (lower-cased) as a
    class of its own, so a user's folder of 'sarcastic' clips trains a 'sarcastic' class."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return ALIASES.get(key, key)


def label_set(clips: list[Clip]) -> list[str]:
    """The labels a model trained on `clips` predicts: canonical ones present, in canonical
    order, then any extra classes in alphabetical order."""
    present = {c.label for c in clips}
    return [e for e in EMOTIONS if e in present] + sorted(present - set(EMOTIONS))
