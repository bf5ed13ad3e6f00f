"""Corpus readers on fixture trees named like the real corpora (generated audio), their
quirks, and the skipping of unreadable files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamemo import StreamemoError
from streamemo.features import FrontendSpec
from streamemo.train.audio import UnreadableAudio, load_audio, trim_silence
from streamemo.train.cache import FeatureRecipe, FeatureStore
from streamemo.train.datasets import (label_set, read_corpus, read_cremad, read_emodb, read_folders, read_manifest,
                                      read_ravdess, read_savee, read_tess)


def voice(seconds: float = 1.0, rate: int = 16000, f0: float = 150.0, seed: int = 0) -> np.ndarray:
    """A voice-like harmonic tone with a little noise, loud enough to pass the voice gate."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 + 20 * np.sin(2 * np.pi * 3 * t)) / rate
    x = sum(0.2 / k * np.sin(k * phase) for k in range(1, 6))
    x = x + 0.005 * np.random.default_rng(seed).standard_normal(len(t))
    return x.astype(np.float32)


def write(path: Path, rate: int = 16000, seconds: float = 0.5, f0: float = 150.0, channels: int = 1,
          fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = voice(seconds, rate, f0)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    sf.write(path, data, rate, format=fmt)
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
