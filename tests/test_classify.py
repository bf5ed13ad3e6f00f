"""`streamemo classify` as a user meets it: the real CLI in a subprocess, on real files."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess

import pytest

from conftest import STREAMEMO


def _classify(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*STREAMEMO, "classify", *args], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture
def folder(tmp_path, speech_wav, speech_and_silence_wav):
    """A folder as users have them: audio in subfolders, other files beside it, hidden files."""
    root = tmp_path / "clips"
    (root / "b" / "deeper").mkdir(parents=True)
    (root / "a").mkdir()
    shutil.copy(speech_wav, root / "b" / "deeper" / "two.WAV")
    shutil.copy(speech_and_silence_wav, root / "b" / "one.wav")
    shutil.copy(speech_wav, root / "a" / "zero.wav")
    (root / "a" / "notes.txt").write_text("not audio")
    (root / "b" / "._one.wav").write_bytes(b"\x00\x05\x16\x07")  # a Mac's resource fork beside one.wav
    return root


def test_a_folder_is_its_audio_files_recursively_in_sorted_order(folder, random_model):
    result = _classify(str(folder), "--format", "csv", "--model", str(random_model))
    assert result.returncode == 0, result.stderr
    files = [line.split(",")[0] for line in result.stdout.splitlines()[1:]]
    assert files == [str(folder / "a" / "zero.wav"), str(folder / "b" / "deeper" / "two.WAV"),
                     str(folder / "b" / "one.wav")]


def test_a_folder_without_audio_is_named_and_the_rest_still_scored(tmp_path, speech_wav, random_model):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing to hear")
    result = _classify(str(empty), str(speech_wav), "--format", "csv", "--model", str(random_model))
    assert result.returncode == 1
    assert result.stderr.strip() == f"streamemo classify: error: {empty}: a folder with no audio files in it " \
                                    "(.aif, .aiff, .flac, .mp3, .ogg, .opus, .wav)"
    assert str(speech_wav) in result.stdout


def test_json_gives_the_whole_file_confidence_and_voiced_windows_and_no_clock_times(speech_and_silence_wav,
                                                                                     random_model):
    result = _classify(str(speech_and_silence_wav), "--json", "--model", str(random_model))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    voiced = [w for w in out["windows"] if w["voiced"]]
    assert 0 < out["voiced_windows"] == len(voiced) < len(out["windows"])
    assert out["confidence"] == max(out["probs"])
    for window in out["windows"]:  # when this run read and printed them: nothing about the file
        assert "t_capture" not in window and "t_publish" not in window and "t_audio" in window
    csv_row = _classify(str(speech_and_silence_wav), "--format", "csv", "--model", str(random_model)).stdout
    header, row = (line.split(",") for line in csv_row.splitlines())
    assert float(row[header.index("confidence")]) == out["confidence"]
    assert int(row[header.index("voiced_windows")]) == out["voiced_windows"]


@pytest.mark.parametrize("fmt, jobs", [("csv", "1"), ("json", "2")])
def test_a_reader_that_stops_early_ends_classify_quietly(fmt, jobs, speech_wav, random_model):
    """`streamemo classify … | head -1`: the reader goes after one line; classify ends at its
    next write, quietly, with the status of a Unix tool that SIGPIPE ended. The pipe is made
    one page small, so the output is sure to outlast it: a write after the reader has gone
    is certain, whatever the timing."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen([*STREAMEMO, "classify", *[str(speech_wav)] * 40, "--format", fmt, "--jobs", jobs,
                             "--model", str(random_model)], stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    with open(read_end) as reader:
        first = reader.readline()  # then head closes its end
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err
    assert first and err == ""


def test_a_file_name_that_is_not_utf8_prints_as_its_own_bytes(tmp_path, speech_wav):
    """Issue 31, cause 7: under a strict UTF-8 output encoding, classify's CSV once ended in a
    UnicodeEncodeError for a name that is not valid UTF-8; it prints the name's own bytes."""
    import os
    import shutil
    import subprocess
    import sys

    name = os.fsencode(tmp_path) + b"/bad-\xff\xfe.wav"
    shutil.copy(speech_wav, name)
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    out = subprocess.run([sys.executable, "-m", "streamemo", "classify", "--model", "small", "--format", "csv",
                          name], env=env, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert b"bad-\xff\xfe.wav" in out.stdout
