"""Corpus readers: a folder of some emotional-speech corpus -> a list of `Clip`s whose labels
are on one label set (`streamemo.EMOTIONS`, plus any label a corpus has beyond it, such as
EmoDB's boredom).

Readers only look at names (folders and files; ASED's reader also hashes file contents to drop
duplicate recordings); audio is read later, when features are computed, so a corrupt file is
found there and skipped with a warning. A file whose name a reader cannot parse is skipped
here, also with a warning, and counted in `ReadResult`.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from pathlib import Path

from streamemo import EMOTIONS, StreamemoError
from streamemo.train.datasets import Clip, ReadResult, canonical_label

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".aiff", ".aif", ".mp3"}


def _audio_files(root: Path) -> list[Path]:
    """Audio files anywhere under `root`, through symlinked folders too (a corpus linked into
    place is common; Path.rglob would not enter it), each real folder once (a link loop ends)."""
    found, seen = [], set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        found += [Path(folder) / f for f in files if Path(f).suffix.lower() in AUDIO_SUFFIXES]
    return sorted(p for p in found if p.is_file())


def _require_dir(root: Path, kind: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise StreamemoError(f"--data {kind}:{root}: no such folder", 2)
    return root


def _check_folder(path: Path, label: str) -> None:
    """For corpora with one folder per class (`02Fearful/`, `Calm/`) whose file names also
    code the emotion: warns when the two disagree. The file name wins: it is the label the
    corpus documents for each recording and it stays with the file if the file is moved;
    the folder only groups. (They agree on every real ASED and TurEV file.)"""
    folder = canonical_label(path.parent.name.lstrip("0123456789"))
    if folder in EMOTIONS and folder != label:
        log.warning("%s: folder says %s, file name says %s; using the file name", path, folder, label)


def _content_hash(path: Path) -> str:
    """sha256 of a file's bytes, with each Ogg page's stream serial number and checksum
    blanked: an encoder picks the serial at random, so two encodings of one recording differ
    only there (the real ASED duplicates were byte-identical WAVs; the Opus copies are not)."""
    data = bytearray(path.read_bytes())
    pos = 0
    while data[pos:pos + 4] == b"OggS" and pos + 27 <= len(data):
        n_segments = data[pos + 26]
        body = sum(data[pos + 27:pos + 27 + n_segments])
        data[pos + 14:pos + 18] = data[pos + 22:pos + 26] = bytes(4)
        pos += 27 + n_segments + body
    return hashlib.sha256(data).hexdigest()


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


# --- EMOVO -----------------------------------------------------------------------------

EMOVO_EMOTIONS = {"dis": "disgust", "gio": "happy", "neu": "neutral", "pau": "fearful", "rab": "angry",
                  "sor": "surprised", "tri": "sad"}
EMOVO_NAME = re.compile(r"^(dis|gio|neu|pau|rab|sor|tri)-([fm][1-3])-([a-z]+\d+)$")


def read_emovo(root: Path) -> ReadResult:
    """`f1/neu-f1-n2.opus`: emotion (Italian: dis gio neu pau rab sor tri), speaker f1-f3 /
    m1-m3, sentence."""
    root = _require_dir(root, "emovo")
    result = ReadResult()
    for path in _audio_files(root):
        m = EMOVO_NAME.match(path.stem)
        if not m:
            result.skip(path, "not an EMOVO name (neu-f1-n2)")
            continue
        result.clips.append(Clip(path, EMOVO_EMOTIONS[m[1]], f"emovo:{m[2]}", "emovo", (("sentence", m[3]),)))
    return result


# --- nEMO ------------------------------------------------------------------------------

NEMO_NAME = re.compile(r"^([A-Z]{2}\d)_(anger|fear|happiness|neutral|sadness|surprised)_(\d+)$")


def read_nemo(root: Path) -> ReadResult:
    """`samples/SM0_anger_77.opus`: speaker, emotion, number; root is the nEMO folder or its
    `samples/`. `data.tsv` beside `samples/`, when present, adds the speaker's gender; a file
    whose row there names another speaker or emotion is skipped."""
    root = _require_dir(root, "nemo")
    tsv = root.parent / "data.tsv" if root.name == "samples" else root / "data.tsv"
    rows = {}
    if tsv.is_file():
        with tsv.open(newline="", encoding="utf-8") as f:  # file_id names the original .wav
            rows = {Path(row["file_id"]).stem: row for row in csv.DictReader(f, delimiter="\t")}
    result = ReadResult()
    for path in _audio_files(root):
        m = NEMO_NAME.match(path.stem)
        if not m:
            result.skip(path, "not an nEMO name (SM0_anger_77)")
            continue
        speaker, label = m[1], canonical_label(m[2])
        info = (("n", int(m[3])),)
        row = rows.get(path.stem)
        if row is not None:
            row_speaker, row_label = row["speaker_id"].strip(), canonical_label(row["emotion"])
            if (row_speaker, row_label) != (speaker, label):
                result.skip(path, f"data.tsv says speaker {row_speaker}, emotion {row_label}")
                continue
            info += (("gender", row["gender"].strip()),)
        result.clips.append(Clip(path, label, f"nemo:{speaker}", "nemo", info))
    return result


# --- ASED ------------------------------------------------------------------------------

ASED_EMOTIONS = {"n1": "neutral", "f2": "fearful", "h3": "happy", "s4": "sad", "a5": "angry"}
ASED_NAME = re.compile(r"^([a-z]\d)-(\d\d)-(\d\d)-(0[12])-(\d\d)$", re.IGNORECASE)


def read_ased(root: Path) -> ReadResult:
    """`02Fearful/f2-06-02-02-63.opus`: emotion (n1 f2 h3 s4 a5; one real file says `S4`),
    sentence, repetition, gender (01 female, 02 male), speaker. Of recordings with the same
    content the first (in path order) is kept, the others skipped: they would put one
    recording in both train and test, or count it twice."""
    root = _require_dir(root, "ased")
    result = ReadResult()
    seen: dict[str, Path] = {}
    for path in _audio_files(root):
        m = ASED_NAME.match(path.stem)
        if not m or m[1].lower() not in ASED_EMOTIONS:
            result.skip(path, "not an ASED name (f2-06-02-02-63)")
            continue
        first = seen.setdefault(_content_hash(path), path)
        if first != path:
            result.skip(path, f"the same recording as {first}")
            continue
        label = ASED_EMOTIONS[m[1].lower()]
        _check_folder(path, label)
        # The speaker number alone is the speaker: the real data has 65 numbers, the 65
        # speakers the corpus reports. The five numbers seen with both gender codes (09 15 21
        # 23 25) each have a single file coded male among 11-65 coded female: typos in the
        # gender field, not two speakers sharing a number (counting those five as female
        # gives the corpus's 25 F / 40 M; four of the five files also have a female pitch).
        # Gender is kept as the file codes it.
        info = (("sentence", int(m[2])), ("repetition", int(m[3])),
                ("gender", "female" if m[4] == "01" else "male"))
        result.clips.append(Clip(path, label, f"ased:{m[5]}", "ased", info))
    return result


# --- TurEV-DB --------------------------------------------------------------------------

TUREV_EMOTIONS = {"kz": "angry", "sk": "calm", "mt": "happy", "hl": "sad"}
TUREV_NAME = re.compile(r"^(\d+)_(kz|sk|mt|hl)_([^_]+)$")


def read_turev(root: Path) -> ReadResult:
    """`Calm/1984_sk_kagit.opus`: speaker, emotion (Turkish: kz sk mt hl), the word spoken.
    Not every speaker has every class (1157: no calm, no happy)."""
    root = _require_dir(root, "turev")
    result = ReadResult()
    for path in _audio_files(root):
        m = TUREV_NAME.match(path.stem)
        if not m:
            result.skip(path, "not a TurEV-DB name (1984_sk_kagit)")
            continue
        label = TUREV_EMOTIONS[m[2]]
        _check_folder(path, label)
        result.clips.append(Clip(path, label, f"turev:{m[1]}", "turev", (("word", m[3]),)))
    return result


# --- Korean emotional speech -----------------------------------------------------------

KOREAN_EMOTIONS = ["neutral", "happy", "angry", "sad"]  # file numbers 1-100, 101-200, 201-300, 301-400
KOREAN_NAME = re.compile(r"^((em|ne)[a-z])(\d{5})$")


def read_korean(root: Path) -> ReadResult:
    """`neo/neo00204.opus`: speaker (folder and prefix; em*: plain scripts, ne*: emotional
    ones), file number: 1-100 neutral, 101-200 happy, 201-300 angry, 301-400 sad."""
    root = _require_dir(root, "korean")
    result = ReadResult()
    for path in _audio_files(root):
        m = KOREAN_NAME.match(path.stem)
        number = int(m[3]) if m else 0
        if not 1 <= number <= 400:
            result.skip(path, "not a Korean-corpus name (neo00204, numbers 00001-00400)")
            continue
        info = (("script", "plain" if m[2] == "em" else "emotional"), ("number", number))
        result.clips.append(Clip(path, KOREAN_EMOTIONS[(number - 1) // 100], f"korean:{m[1]}", "korean", info))
    return result


# --- a user's own data -----------------------------------------------------------------


def read_folders(root: Path) -> ReadResult:
    """One sub-folder per class (`angry/`, `happy/`…), audio anywhere below it. A folder inside
    a class folder names the speaker of the files under it (`angry/alice/0001.flac`, as
    `streamemo record` writes them): one speaker across classes, whom speaker normalisation
    and evaluation treat as one voice, as the daemon hears a person. A file directly in a class
    folder has no speaker information and is its own speaker (validation splits by file)."""
    root = _require_dir(root, "folder")
    result = ReadResult()
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        label = canonical_label(class_dir.name)
        for path in _audio_files(class_dir):
            rel = path.relative_to(class_dir)
            speaker = rel.parts[0] if len(rel.parts) > 1 else path.relative_to(root).as_posix()
            result.clips.append(Clip(path, label, f"folder:{speaker}", "folder"))
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
    "emodb": read_emodb, "emovo": read_emovo, "nemo": read_nemo, "ased": read_ased, "turev": read_turev,
    "korean": read_korean, "folder": read_folders, "csv": read_manifest,
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
