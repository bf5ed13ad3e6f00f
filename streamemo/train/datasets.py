"""Corpus readers: a folder of some emotional-speech corpus -> a list of `Clip`s whose labels
are on one label set (`streamemo.EMOTIONS`, plus any label a corpus has beyond it, such as
EmoDB's boredom).

Readers only look at names (folders and files); audio is read later, when features are
computed, so a corrupt file is found there and skipped with a warning. A file whose name a
reader cannot parse is skipped here, also with a warning, and counted in `ReadResult`.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from streamemo import EMOTIONS, StreamemoError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3"}


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


def canonical_label(name: str) -> str:
    """Maps a label name onto the canonical set; an unknown name is kept (lower-cased) as a
    class of its own, so a user's folder of 'sarcastic' clips trains a 'sarcastic' class."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return ALIASES.get(key, key)


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def _require_dir(root: Path, kind: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise StreamemoError(f"--data {kind}:{root}: no such folder", 2)
    return root


# --- RAVDESS ---------------------------------------------------------------------------

RAVDESS_EMOTIONS = dict(zip(["01", "02", "03", "04", "05", "06", "07", "08"], EMOTIONS))
RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def read_ravdess(root: Path, channel: str = "speech") -> ReadResult:
    """`MM-VV-EE-II-SS-RR-AA.wav`: VV 01 speech / 02 song (`channel` picks; "both" keeps
    both), EE emotion, II intensity, SS statement, AA actor."""
    root = _require_dir(root, "ravdess")
    wanted = {"speech": {"01"}, "song": {"02"}, "both": {"01", "02"}}[channel]
    result = ReadResult()
    for path in _audio_files(root):
        m = RAVDESS_NAME.match(path.stem)
        if not m or m[3] not in RAVDESS_EMOTIONS:
            result.skip(path, "not a RAVDESS name (MM-VV-EE-II-SS-RR-AA)")
            continue
        _modality, vocal, emotion, intensity, statement, repetition, actor = m.groups()
        if vocal not in wanted:
            continue
        info = (("vocal", "speech" if vocal == "01" else "song"),
                ("intensity", "strong" if intensity == "02" else "normal"),
                ("statement", int(statement)), ("repetition", int(repetition)), ("actor", int(actor)))
        result.clips.append(Clip(path, RAVDESS_EMOTIONS[emotion], f"ravdess:{int(actor):02d}", "ravdess", info))
    return result


# --- TESS ------------------------------------------------------------------------------

TESS_SPEAKERS = {"OAF": "OAF", "OA": "OAF", "YAF": "YAF"}  # one real file says OA_ for OAF_


def read_tess(root: Path) -> ReadResult:
    """Folders like `OAF_angry`, `YAF_pleasant_surprised`; files `OAF_back_angry.wav`,
    `YAF_bar_ps.wav`. The label comes from the file name's last field, falling back to the
    folder's; the speaker from the file's prefix, falling back to the folder's."""
    root = _require_dir(root, "tess")
    result = ReadResult()
    for path in _audio_files(root):
        fields = path.stem.split("_")
        folder = path.parent.name.split("_", 1)
        label = canonical_label(fields[-1]) if len(fields) >= 3 else None
        if label not in EMOTIONS and len(folder) == 2:
            label = canonical_label(folder[1])
        speaker = TESS_SPEAKERS.get(fields[0].upper()) or TESS_SPEAKERS.get(folder[0].upper())
        if label not in EMOTIONS or speaker is None:
            result.skip(path, "not a TESS name (OAF_word_emotion / YAF_word_emotion)")
            continue
        word = fields[1] if len(fields) >= 3 else path.stem
        result.clips.append(Clip(path, label, f"tess:{speaker}", "tess", (("word", word),)))
    return result


# --- CREMA-D ---------------------------------------------------------------------------

CREMAD_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMAD_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def read_cremad(root: Path) -> ReadResult:
    """`1001_DFA_ANG_XX.wav`: actor, sentence, emotion, intensity (LO/MD/HI/XX)."""
    root = _require_dir(root, "cremad")
    result = ReadResult()
    for path in _audio_files(root):
        m = CREMAD_NAME.match(path.stem)
        if not m or m[3] not in CREMAD_EMOTIONS:
            result.skip(path, "not a CREMA-D name (1001_DFA_ANG_XX)")
            continue
        info = (("sentence", m[2]), ("intensity", m[4]))
        result.clips.append(Clip(path, CREMAD_EMOTIONS[m[3]], f"cremad:{m[1]}", "cremad", info))
    return result


# --- SAVEE -----------------------------------------------------------------------------

SAVEE_EMOTIONS = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral",
                  "sa": "sad", "su": "surprised"}
SAVEE_NAME = re.compile(r"^(?:([A-Za-z]{2})_)?(a|d|f|h|n|sa|su)(\d\d)$")


def read_savee(root: Path) -> ReadResult:
    """`DC_a01.wav` (speaker prefix), or the original layout `DC/a01.wav` (speaker folder).
    Emotion codes: a d f h n sa su."""
    root = _require_dir(root, "savee")
    result = ReadResult()
    for path in _audio_files(root):
        m = SAVEE_NAME.match(path.stem)
        speaker = (m[1] if m and m[1] else path.parent.name).upper() if m else None
        if not m or not re.fullmatch(r"[A-Z]{2}", speaker or ""):
            result.skip(path, "not a SAVEE name (DC_a01, or DC/a01)")
            continue
        result.clips.append(Clip(path, SAVEE_EMOTIONS[m[2]], f"savee:{speaker}", "savee"))
    return result


# --- EmoDB -----------------------------------------------------------------------------

EMODB_EMOTIONS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy",
                  "T": "sad", "N": "neutral"}
EMODB_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([WLEAFTN])([a-z])$")


def read_emodb(root: Path, boredom: bool = True) -> ReadResult:
    """`03a01Fa.wav`: speaker, text, German emotion letter, version. Boredom (L) has no
    canonical counterpart: kept as a class of its own, or dropped with `boredom=False`."""
    root = _require_dir(root, "emodb")
    result = ReadResult()
    for path in _audio_files(root):
        m = EMODB_NAME.match(path.stem)
        if not m:
            result.skip(path, "not an EmoDB name (03a01Fa)")
            continue
        label = EMODB_EMOTIONS[m[3]]
        if label == "boredom" and not boredom:
            continue
        result.clips.append(Clip(path, label, f"emodb:{m[1]}", "emodb", (("text", m[2]),)))
    return result


# --- a user's own data -----------------------------------------------------------------


def read_folders(root: Path) -> ReadResult:
    """One sub-folder per class (`angry/`, `happy/`…), audio anywhere below it. There is no
    speaker information, so each file is its own speaker (validation splits by file)."""
    root = _require_dir(root, "folder")
    result = ReadResult()
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        label = canonical_label(class_dir.name)
        for path in _audio_files(class_dir):
            rel = path.relative_to(root).as_posix()
            result.clips.append(Clip(path, label, f"folder:{rel}", "folder"))
    return result


def read_manifest(csv_path: Path) -> ReadResult:
    """CSV rows `path,label[,speaker]`, paths relative to the CSV's folder; a header row
    (first field 'path') is allowed. Without a speaker column each file is its own speaker."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise StreamemoError(f"--data csv:{csv_path}: no such file", 2)
    result = ReadResult()
    with csv_path.open(newline="") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if line_no == 1 and row[0].lower() == "path":
                continue
            if len(row) < 2 or not row[1]:
                result.skip(Path(f"{csv_path}:{line_no}"), "expected path,label[,speaker]")
                continue
            path = Path(row[0]) if Path(row[0]).is_absolute() else csv_path.parent / row[0]
            speaker = row[2] if len(row) > 2 and row[2] else Path(row[0]).as_posix()
            result.clips.append(Clip(path, canonical_label(row[1]), f"csv:{speaker}", "csv"))
    return result


READERS = {
    "ravdess": read_ravdess, "tess": read_tess, "cremad": read_cremad, "savee": read_savee,
    "emodb": read_emodb, "folder": read_folders, "csv": read_manifest,
}


def read_corpus(spec: str, *, boredom: bool = True, ravdess_channel: str = "speech") -> ReadResult:
    """`KIND:PATH` (e.g. `ravdess:../shared/data/ravdess`) -> clips."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in READERS or not path:
        raise StreamemoError(f"--data {spec!r}: expected KIND:PATH with KIND one of {', '.join(READERS)}", 2)
    if kind == "emodb":
        result = read_emodb(Path(path), boredom=boredom)
    elif kind == "ravdess":
        result = read_ravdess(Path(path), channel=ravdess_channel)
    else:
        result = READERS[kind](Path(path))
    if not result.clips:
        raise StreamemoError(f"--data {spec}: no usable audio files found", 1)
    return result


def label_set(clips: list[Clip]) -> list[str]:
    """The labels a model trained on `clips` predicts: canonical ones present, in canonical
    order, then any extra classes in alphabetical order."""
    present = {c.label for c in clips}
    return [e for e in EMOTIONS if e in present] + sorted(present - set(EMOTIONS))


def class_counts(clips: list[Clip]) -> Counter:
    return Counter(c.label for c in clips)
