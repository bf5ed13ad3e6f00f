"""Corpus readers on fixture trees named like the real corpora (generated audio), their
quirks, and the skipping of unreadable files."""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from streamemo import StreamemoError
from streamemo.audio.files import UnreadableAudio, load_audio, trim_silence
from streamemo.features import FrontendSpec
from streamemo.train.cache import FeatureRecipe, FeatureStore
from streamemo.train.datasets import label_set
from streamemo.train.readers import (read_ased, read_corpus, read_cremad, read_emodb, read_folders, read_korean,
                                     read_manifest, read_nemo, read_ravdess, read_savee, read_tess)

sys.path.insert(0, str(Path(__file__).parent))
from conftest import corpus  # noqa: E402


SENTENCES = ("where did you put the keys to the car", "I never said that she took the money",
             "the weather will be fine tomorrow morning", "nobody told me about the meeting today")


@functools.cache
def _spoken(pitch: int, seed: int) -> tuple[np.ndarray, int]:
    """espeak-ng saying one of SENTENCES at `pitch` (0-99), from its first sound on."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian: espeak-ng); `make test` installs it")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "voice.wav"
        subprocess.run(["espeak-ng", "-p", str(pitch), "-s", "190", "-w", str(wav), SENTENCES[seed % len(SENTENCES)]],
                       check=True, capture_output=True)
        x, rate = sf.read(wav, dtype="float32")
    start = int(np.argmax(np.abs(x) > 0.02 * np.abs(x).max()))
    return x[start:], rate


def voice(seconds: float = 1.0, rate: int = 16000, f0: float = 150.0, seed: int = 0) -> np.ndarray:
    """`seconds` of synthetic speech (espeak-ng, repeated to length) whose pitch follows `f0`,
    so classes made with different `f0` can be told apart, with a little noise: the voice
    gate hears speech, not tones, so generated corpora speak."""
    spoken, native = _spoken(int(np.clip(round((f0 - 60) / 3), 0, 99)), seed)
    x = np.resize(soxr.resample(spoken, native, rate), int(seconds * rate))
    x = 0.5 * x / np.abs(x).max() + 0.005 * np.random.default_rng(seed).standard_normal(len(x))
    return x.astype(np.float32)


def write(path: Path, rate: int = 16000, seconds: float = 0.5, f0: float = 150.0, channels: int = 1,
          fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = voice(seconds, rate, f0)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    opus = path.suffix == ".opus"  # libsndfile writes Ogg Opus, but does not know the suffix
    sf.write(path, data, rate, format=fmt or ("OGG" if opus else None), subtype="OPUS" if opus else None)
    return path


def test_ravdess_speech_and_song_fields(tmp_path):
    write(tmp_path / "Actor_01" / "03-01-05-02-01-01-01.wav")  # speech, angry, strong
    write(tmp_path / "Actor_01" / "03-02-03-01-02-02-01.wav")  # song, happy
    write(tmp_path / "Actor_02" / "03-01-01-01-02-01-02.wav")  # speech, neutral
    (tmp_path / "Actor_02" / "notes.wav").write_bytes(b"")  # a stray file: skipped by name
    speech = read_ravdess(tmp_path)
    assert [(c.label, c.speaker) for c in speech.clips] == [("angry", "ravdess:01"), ("neutral", "ravdess:02")]
    angry = speech.clips[0]
    assert angry.get("intensity") == "strong" and angry.get("statement") == 1 and angry.get("vocal") == "speech"
    assert len(speech.skipped) == 1 and "notes.wav" in speech.skipped[0]
    song = read_ravdess(tmp_path, channel="song")
    assert [(c.label, c.get("statement")) for c in song.clips] == [("happy", 2)]
    assert len(read_ravdess(tmp_path, channel="both").clips) == 3


def test_tess_folders_suffixes_and_quirks(tmp_path):
    write(tmp_path / "OAF_angry" / "OAF_back_angry.wav")
    write(tmp_path / "OAF_Pleasant_surprise" / "OAF_bath_ps.wav")
    write(tmp_path / "YAF_pleasant_surprised" / "YAF_bar_ps.wav")
    write(tmp_path / "YAF_fear" / "YAF_bean_fear.wav")
    write(tmp_path / "OAF_neutral" / "OA_bite_neutral.wav")  # real quirk: OA_ for OAF_
    write(tmp_path / "YAF_sad" / "YAF_chair_sad.wav", fmt="AIFF")  # real quirk: AIFF named .wav
    write(tmp_path / "YAF_happy" / "YAF_dog_happy.wav", rate=96000)  # real quirk: one file at 96 kHz
    write(tmp_path / "OAF_angry" / "take2.wav")  # a user's own file: the folder says who and what
    result = read_tess(tmp_path)
    got = sorted((c.speaker, c.label) for c in result.clips)
    assert got == [("tess:OAF", "angry"), ("tess:OAF", "angry"), ("tess:OAF", "neutral"), ("tess:OAF", "surprised"),
                   ("tess:YAF", "fearful"), ("tess:YAF", "happy"), ("tess:YAF", "sad"), ("tess:YAF", "surprised")]
    assert not result.skipped
    # The AIFF-named-.wav and the 96 kHz file load like the rest: mono, 16 kHz, same length.
    by_label = {c.label: c for c in result.clips if c.speaker == "tess:YAF"}
    assert len(load_audio(by_label["sad"].path, 16000)) == 8000
    assert len(load_audio(by_label["happy"].path, 16000)) == 8000


def test_cremad_savee_emodb_names(tmp_path):
    write(tmp_path / "crema" / "1001_DFA_ANG_XX.wav")
    write(tmp_path / "crema" / "1091_TSI_NEU_LO.wav")
    write(tmp_path / "crema" / "1001_DFA_XXX_XX.wav")  # unknown emotion code: skipped
    assert [(c.speaker, c.label, c.get("intensity")) for c in read_cremad(tmp_path / "crema").clips] == [
        ("cremad:1001", "angry", "XX"), ("cremad:1091", "neutral", "LO")]
    write(tmp_path / "savee" / "DC_a01.wav")
    write(tmp_path / "savee" / "JK_sa03.wav")
    write(tmp_path / "savee" / "KL" / "su12.wav")  # the original layout: speaker folder
    assert sorted((c.speaker, c.label) for c in read_savee(tmp_path / "savee").clips) == [
        ("savee:DC", "angry"), ("savee:JK", "sad"), ("savee:KL", "surprised")]
    for name in ("03a01Fa.wav", "16b10Lb.wav", "08a02Wc.wav", "09a05Ad.wav"):
        write(tmp_path / "emodb" / name)
    kept = read_emodb(tmp_path / "emodb")
    assert sorted((c.speaker, c.label) for c in kept.clips) == [
        ("emodb:03", "happy"), ("emodb:08", "angry"), ("emodb:09", "fearful"), ("emodb:16", "boredom")]
    assert label_set(kept.clips) == ["happy", "angry", "fearful", "boredom"]  # canonical order, extras last
    dropped = read_emodb(tmp_path / "emodb", boredom=False)
    assert "boredom" not in {c.label for c in dropped.clips} and len(dropped.clips) == 3


def test_emovo_and_korean_names_and_opus_files(tmp_path):
    write(tmp_path / "emovo" / "f1" / "neu-f1-n2.opus")
    write(tmp_path / "emovo" / "m3" / "gio-m3-b1.opus")
    write(tmp_path / "emovo" / "f2" / "pau-f2-l4.opus")
    write(tmp_path / "emovo" / "f2" / "xyz-f2-l4.opus")  # unknown emotion code: skipped
    emovo = read_corpus(f"emovo:{tmp_path / 'emovo'}")
    assert [(c.speaker, c.label, c.get("sentence")) for c in emovo.clips] == [
        ("emovo:f1", "neutral", "n2"), ("emovo:f2", "fearful", "l4"), ("emovo:m3", "happy", "b1")]
    assert len(emovo.skipped) == 1 and "xyz-f2-l4.opus" in emovo.skipped[0]
    assert len(load_audio(emovo.clips[0].path, 16000)) == 8000  # Opus reads like the rest
    for name in ("ema00001", "ema00100", "ema00101", "neo00200", "neo00201", "neo00300", "neo00301", "neo00400",
                 "neo00401", "neo00000"):  # the last two: outside the numbered ranges, skipped
        speaker = name[:3]
        write(tmp_path / "korean" / speaker / f"{name}.opus", seconds=0.1)
    korean = read_korean(tmp_path / "korean")
    assert [(c.speaker, c.get("number"), c.label) for c in korean.clips] == [
        ("korean:ema", 1, "neutral"), ("korean:ema", 100, "neutral"), ("korean:ema", 101, "happy"),
        ("korean:neo", 200, "happy"), ("korean:neo", 201, "angry"), ("korean:neo", 300, "angry"),
        ("korean:neo", 301, "sad"), ("korean:neo", 400, "sad")]
    assert [c.get("script") for c in korean.clips] == ["plain"] * 3 + ["emotional"] * 5
    assert sorted(Path(s.split(":")[0]).name for s in korean.skipped) == ["neo00000.opus", "neo00401.opus"]


def test_nemo_names_with_and_without_data_tsv(tmp_path):
    root = tmp_path / "nemo"
    for name in ("SM0_anger_77", "EB0_neutral_13", "KS0_fear_2", "MP0_happiness_5", "SM0_boredom_1"):
        write(root / "samples" / f"{name}.opus", seconds=0.1)
    by_name = read_nemo(root)  # no data.tsv: the names alone
    assert sorted((c.speaker, c.label) for c in by_name.clips) == [
        ("nemo:EB0", "neutral"), ("nemo:KS0", "fearful"), ("nemo:MP0", "happy"), ("nemo:SM0", "angry")]
    assert all(c.get("gender") is None for c in by_name.clips)
    assert len(by_name.skipped) == 1 and "SM0_boredom_1" in by_name.skipped[0]
    # data.tsv: file_id names the original .wav, speaker_id has leading blanks; one row
    # disagrees with its file's name (another speaker), one file has no row.
    (root / "data.tsv").write_text(
        "file_id\temotion\traw_text\tnormalized_text\tspeaker_id\tgender\tage\n"
        "SM0_anger_77.wav\tanger\tTak.\ttak\t        SM0\tmale\t24\n"
        "EB0_neutral_13.wav\tneutral\tNie.\tnie\t        EB0\tfemale\t27\n"
        "KS0_fear_2.wav\tfear\tNo.\tno\t        WR0\tmale\t23\n", encoding="utf-8")
    for checked in (read_nemo(root), read_corpus(f"nemo:{root / 'samples'}")):  # either folder works
        assert sorted((c.speaker, c.label, c.get("gender")) for c in checked.clips) == [
            ("nemo:EB0", "neutral", "female"), ("nemo:MP0", "happy", None), ("nemo:SM0", "angry", "male")]
        mismatch = [s for s in checked.skipped if "KS0_fear_2" in s]
        assert len(mismatch) == 1 and "data.tsv says speaker WR0" in mismatch[0]


def test_ased_duplicates_upper_case_code_and_speaker_numbers(tmp_path, caplog):
    root = tmp_path / "ased"
    write(root / "01Neutral" / "n1-01-01-01-05.opus", seconds=0.2, f0=110)
    write(root / "04Sad" / "S4-04-02-01-29.opus", seconds=0.2, f0=120)  # real quirk: upper-case code
    # Real quirk: the same recording under two names. Byte-identical copies...
    first = write(root / "03Happy" / "h3-01-01-02-08.opus", seconds=0.2, f0=130)
    (root / "03Happy" / "h3-01-02-02-08.opus").write_bytes(first.read_bytes())
    # ...and the same audio encoded twice, which differs in its bytes only by the Ogg stream serial.
    encoded = [write(root / "05Angry" / f"a5-07-0{rep}-02-63.opus", seconds=0.2, f0=140) for rep in (1, 2)]
    assert encoded[0].read_bytes() != encoded[1].read_bytes()
    # Real quirk: a speaker number with both gender codes is one speaker.
    write(root / "02Fearful" / "f2-01-01-02-09.opus", seconds=0.2, f0=150)
    write(root / "04Sad" / "s4-01-02-01-09.opus", seconds=0.2, f0=160)
    write(root / "02Fearful" / "h3-02-01-01-30.opus", seconds=0.2, f0=170)  # folder disagrees: the name wins
    write(root / "02Fearful" / "x9-01-01-01-01.opus", seconds=0.2, f0=180)  # unknown emotion code
    with caplog.at_level(logging.WARNING):
        result = read_ased(root)
    assert sorted((c.speaker, c.label, c.get("gender")) for c in result.clips) == [
        ("ased:05", "neutral", "female"), ("ased:08", "happy", "male"), ("ased:09", "fearful", "male"),
        ("ased:09", "sad", "female"), ("ased:29", "sad", "female"), ("ased:30", "happy", "female"),
        ("ased:63", "angry", "male")]
    assert sorted(result.skipped) == [
        f"{root / '02Fearful' / 'x9-01-01-01-01.opus'}: not an ASED name (f2-06-02-02-63)",
        f"{root / '03Happy' / 'h3-01-02-02-08.opus'}: the same recording as {first}",
        f"{encoded[1]}: the same recording as {encoded[0]}"]
    assert "folder says fearful, file name says happy" in caplog.text


def test_turev_words_and_a_speaker_without_some_classes(tmp_path):
    root = tmp_path / "turev"
    for folder, name in [("Angry", "1157_kz_acik"), ("Sad", "1157_hl_ekmek"), ("Angry", "1984_kz_bahce"),
                         ("Calm", "1984_sk_kagit"), ("Happy", "1984_mt_bahar"), ("Sad", "1984_hl_deniz"),
                         ("Calm", "1984_sk")]:  # the last: no word, skipped
        write(root / folder / f"{name}.opus", seconds=0.1)
    result = read_corpus(f"turev:{root}")
    by_speaker = {s: sorted(c.label for c in result.clips if c.speaker == s) for s in ("turev:1157", "turev:1984")}
    assert by_speaker == {"turev:1157": ["angry", "sad"], "turev:1984": ["angry", "calm", "happy", "sad"]}
    assert label_set(result.clips) == ["calm", "happy", "sad", "angry"]
    assert {c.get("word") for c in result.clips if c.speaker == "turev:1157"} == {"acik", "ekmek"}
    assert len(result.skipped) == 1 and "1984_sk.opus" in result.skipped[0]


# Real corpus -> (files kept, skipped, speakers, class counts), as the data's README states them.
REAL_CORPORA = {
    "emovo": (588, 0, 6, dict.fromkeys(["neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"], 84)),
    "nemo": (4481, 0, 9, {"neutral": 809, "happy": 749, "sad": 769, "angry": 749, "fearful": 736, "surprised": 669}),
    "ased": (2470, 4, 65, {"neutral": 521, "happy": 485, "sad": 469, "angry": 485, "fearful": 510}),
    "turev": (1735, 0, 6, {"calm": 408, "happy": 357, "sad": 483, "angry": 487}),
    "korean": (300, 0, 15, dict.fromkeys(["neutral", "happy", "sad", "angry"], 75)),
}


@pytest.mark.corpus
@pytest.mark.parametrize("kind", REAL_CORPORA)
def test_real_corpora_counts(kind):
    files, skipped, speakers, classes = REAL_CORPORA[kind]
    result = read_corpus(f"{kind}:{corpus(kind)}")
    assert (len(result.clips), len(result.skipped)) == (files, skipped)
    assert len({c.speaker for c in result.clips}) == speakers
    assert dict(Counter(c.label for c in result.clips)) == classes


def test_folder_per_class_and_csv_manifest(tmp_path):
    write(tmp_path / "mine" / "Anger" / "a.wav")
    write(tmp_path / "mine" / "happy" / "sub" / "b.flac")
    write(tmp_path / "mine" / "sarcastic" / "c.wav")
    folder = read_folders(tmp_path / "mine")
    assert sorted(c.label for c in folder.clips) == ["angry", "happy", "sarcastic"]
    assert len({c.speaker for c in folder.clips}) == 3  # no speaker info: each file its own
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label,speaker\nmine/Anger/a.wav,angry,alice\nmine/sarcastic/c.wav,Sad,bob\n"
                        "mine/happy/sub/b.flac\n")
    result = read_manifest(manifest)
    assert [(c.label, c.speaker) for c in result.clips] == [("angry", "csv:alice"), ("sad", "csv:bob")]
    assert result.clips[0].path == tmp_path / "mine" / "Anger" / "a.wav"
    assert len(result.skipped) == 1 and "list.csv:4" in result.skipped[0]


def test_bad_data_spec_is_a_one_line_user_error(tmp_path):
    with pytest.raises(StreamemoError, match="KIND:PATH"):
        read_corpus("nonsense")
    with pytest.raises(StreamemoError, match="no such folder"):
        read_corpus(f"ravdess:{tmp_path}/absent")
    with pytest.raises(StreamemoError, match="no usable audio"):
        read_corpus(f"emodb:{tmp_path}")


def test_corrupt_empty_and_unreadable_files_are_skipped_with_their_names(tmp_path, caplog):
    good = write(tmp_path / "Actor_01" / "03-01-05-01-01-01-01.wav")
    empty = tmp_path / "Actor_01" / "03-01-04-01-01-01-01.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "Actor_01" / "03-01-03-01-01-01-01.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    silent = tmp_path / "Actor_01" / "03-01-02-01-01-01-01.wav"
    sf.write(silent, np.zeros((0, 1), np.float32), 16000)  # a valid header, no samples
    clips = read_ravdess(tmp_path).clips
    assert len(clips) == 4
    store = FeatureStore(FeatureRecipe(FrontendSpec(), 16000), tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        kept, feats, skipped = store.get_many(clips, progress=False)
    assert [c.path for c in kept] == [good]
    assert len(skipped) == 3
    for bad in (empty, corrupt, silent):
        assert any(str(bad) in line for line in skipped)
        assert str(bad) in caplog.text


def test_any_rate_and_channels_become_mono_16k(tmp_path):
    t = np.arange(44100) / 44100
    sine = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = tmp_path / "s.wav"
    sf.write(stereo, np.stack([sine, sine], axis=1), 44100)
    audio = load_audio(stereo, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) == 16000
    # The resampled tone keeps its pitch and level.
    assert np.argmax(np.abs(np.fft.rfft(audio))) * 16000 / len(audio) == pytest.approx(440, abs=1)
    assert np.abs(audio).max() == pytest.approx(0.5, abs=0.02)
    with pytest.raises(UnreadableAudio):
        load_audio(tmp_path / "missing.wav", 16000)


def test_trim_silence_cuts_quiet_ends_only():
    rate = 16000
    x = np.concatenate([np.zeros(rate), voice(1.0), np.zeros(rate)])
    trimmed = trim_silence(x, rate)
    assert 1.0 <= len(trimmed) / rate <= 1.25
    assert len(trim_silence(np.zeros(rate, np.float32), rate)) == rate  # nothing loud: unchanged
