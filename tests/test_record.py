"""`streamemo record` on the private PulseAudio server's virtual microphone, then the walk-through
it starts: `train --init` on the clips it wrote, and `evaluate` of the shipped and the tuned model
side by side on clips held out of training."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, STREAMEMO
from streamemo.cli import main as cli

# Spoken one after another with silence between: two takes to keep and, between
# them, one with too little speech to keep (espeak-ng says "No." in about 0.3 s).
TAKES = ["Do not touch that.", "No.", "Why not listen?"]
GAP_S = 0.8  # longer than the pause that ends an utterance (0.6 s)


@dataclass(frozen=True)
class Takes:
    path: Path  # 16 kHz mono WAV: silence, take, silence, take, ...
    lengths: list[float]  # each take's length as espeak-ng wrote it (its own short silences included)


@pytest.fixture(scope="module")
def takes(tmp_path_factory) -> Takes:
    import soxr

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian: espeak-ng); `make test` installs it")
    folder = tmp_path_factory.mktemp("takes")
    parts, lengths = [], []
    for i, text in enumerate(TAKES):
        subprocess.run(["espeak-ng", "-w", str(folder / f"{i}.wav"), text], check=True, capture_output=True)
        audio, rate = sf.read(folder / f"{i}.wav", dtype="float32")
        audio = soxr.resample(audio, rate, 16000).astype(np.float32)
        parts += [np.zeros(int(GAP_S * 16000), np.float32), audio]
        lengths.append(len(audio) / 16000)
    parts.append(np.zeros(int(GAP_S * 16000), np.float32))
    sf.write(folder / "takes.wav", np.concatenate(parts), 16000, subtype="PCM_16")
    return Takes(folder / "takes.wav", lengths)


def _rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-10)


@pytest.mark.pulse
def test_record_from_the_microphone_then_fine_tune_and_compare_on_held_out_clips(pulse, takes, tmp_path, capsys):
    from streamemo.commands.evaluate import warn_if_heard
    from streamemo.model import load_model
    from streamemo.train.readers import read_folders

    voice = tmp_path / "voice"
    proc = subprocess.Popen([*STREAMEMO, "record", "--label", "anger", "--speaker", "alice", str(voice)],
                            env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # said once the microphone is open
        assert "recording angry clips of alice" in first and "0 there already" in first, first
        pulse.play(takes.path)
        folder = voice / "angry" / "alice"  # "anger" is the canonical label's alias
        deadline = time.monotonic() + 5
        while len(list(folder.glob("*.flac"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the last take ends once its pause has been heard
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "not kept: 0." in out and "under --min-length 0.5 s" in out, out  # "No." comes between the two
    assert "recorded 2 angry clips" in out and "1 utterance(s) with less speech" in out, out
    clips = sorted(folder.iterdir())
    assert [c.name for c in clips] == ["angry-0001.flac", "angry-0002.flac"]  # nothing else: no temporary files
    for clip, length in zip(clips, [takes.lengths[0], takes.lengths[2]]):
        info = sf.info(clip)
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
        # One take each, trimmed: none of the second of silence either side, a little padding kept
        # (its first and last 50 ms are quiet, so no word was cut).
        assert length - 0.3 < info.duration < length + 0.5, (clip, info.duration, length)
        audio, _ = sf.read(clip, dtype="float32")
        edge = 800
        assert _rms_db(audio[:edge]) < _rms_db(audio) - 25 and _rms_db(audio[-edge:]) < _rms_db(audio) - 25

    # The same takes as another label, read from the file as fast as it goes (in this process).
    assert cli(["record", "--label", "happy", "--speaker", "alice", str(voice), "--source", str(takes.path),
                "--no-realtime"]) == 0
    assert "recorded 2 happy clips" in capsys.readouterr().out
    read = read_folders(voice)
    assert sorted((c.label, c.speaker) for c in read.clips) == [("angry", "folder:alice")] * 2 + [
        ("happy", "folder:alice")] * 2  # one speaker across labels: normalised and scored as one voice

    # Held out by file: one clip of each label leaves the training folder.
    held = tmp_path / "held"
    for label in ("angry", "happy"):
        (held / label / "alice").mkdir(parents=True)
        (voice / label / "alice" / f"{label}-0002.flac").rename(held / label / "alice" / f"{label}-0002.flac")
    small, mine = ROOT / "models" / "small", tmp_path / "mine"
    assert cli(["train", "--init", str(small), "--data", f"folder:{voice}", "-o", str(mine), "--epochs", "1",
                "--wave-copies", "0", "--threads", "1", "--quiet", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "trained 189,561 parameters on 2 clips" in capsys.readouterr().out
    assert cli(["evaluate", "--model", str(small), "--model", str(mine), "--test", f"folder:{held}",
                "--report", str(tmp_path / "rep"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert f"the same 2 clips (folder:{held}); in brackets, the gain over {small}:" in out, out
    rows = out.split("in brackets")[1].splitlines()[2:]
    assert rows[0].split()[0] == str(small) and rows[1].split()[0] == str(mine) and "(" in rows[1], out
    assert (tmp_path / "rep" / "small" / "report.md").exists() and (tmp_path / "rep" / "mine" / "report.md").exists()
    assert "note:" not in err  # held out: neither model trained on these clips
    # Tested on its own training folder, the tuned model's figures are said not to be held-out ones.
    warn_if_heard(str(mine), load_model(mine), read_folders(voice).clips)
    assert f"was trained on folder:{voice}, which holds 2 of the 2 test clips" in capsys.readouterr().err


def test_utterances_are_cut_at_the_longest_length_and_go_on(takes):
    from streamemo.audio.utterances import UtteranceCutter

    audio, _ = sf.read(takes.path, dtype="float32")

    def cut(max_s: float) -> list:
        cutter = UtteranceCutter(threshold=0.7, min_s=0.1, max_s=max_s)
        got = [u for block in np.array_split(audio, 37) for u in cutter.feed(block)]  # reads of any length
        last = cutter.finish()
        return got + ([last] if last is not None else [])

    whole, pieces = cut(10.0), cut(1.0)
    assert len(whole) == len(TAKES) and not any(u.cut for u in whole)
    assert all(len(u.audio) <= 16000 for u in pieces) and any(u.cut for u in pieces)
    # The speech cut off goes on in the next clip: none is lost at a cut.
    assert abs(sum(u.speech_s for u in pieces) - sum(u.speech_s for u in whole)) < 0.1


@pytest.mark.parametrize("args, needle", [
    (["--label", "angyr"], "--label 'angyr' is not an emotion the models know; use one of neutral, calm"),
    (["--label", "sad", "--speaker", "a/b"], "--speaker 'a/b': a speaker is a folder name"),
    (["--label", "sad", "--min-length", "3", "--max-length", "2"], "--min-length 3 is not below --max-length 2"),
    (["--label", "sad", "--max-length", "nan"], "--max-length nan: give seconds from 0.1 to 60"),
])
def test_bad_options_are_one_line_and_create_nothing(args, needle, tmp_path, capsys):
    assert cli(["record", *args, str(tmp_path / "voice")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("streamemo record: error: ") and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "voice").exists()


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert cli(["record", "--label", "sad", "--speaker", "bob", str(tmp_path / "file" / "voice")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"streamemo record: error: cannot write clips in {tmp_path}/file/voice/sad/bob: "
                   f"{tmp_path}/file is a file, not a folder; choose another DIR")
