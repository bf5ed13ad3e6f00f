"""`streamemo report`: a session recorded from the real daemon over a real socket becomes a
timeline PNG and a Markdown summary; a recording cut mid-line still reads."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import STREAMEMO, _collect, _daemon, _stop, _subscriber


def test_a_recorded_session_becomes_a_timeline_and_a_summary(speech_and_silence_wav, free_endpoint, tmp_path):
    proc = _daemon("--source", str(speech_and_silence_wav), "--no-realtime", "--bind", free_endpoint,
                   "--wait-subscriber", "20")
    sock = _subscriber(free_endpoint)
    messages = _collect(sock, lambda m: False, 60, proc)
    code, err = _stop(proc)
    assert code == 0, err
    emotions = [body for topic, body in messages if topic == "emotion"]
    assert any(m["voiced"] for m in emotions) and not all(m["voiced"] for m in emotions)
    # Every voiced message carries arousal and valence; an unvoiced one has none (nothing heard).
    assert all((m["arousal"] is not None) == m["voiced"] == (m["valence"] is not None) for m in emotions)
    recording = tmp_path / "session.jsonl"
    lines = [json.dumps({"topic": topic, **body}) for topic, body in messages]
    # As a kill mid-write would leave it: the last line cut short.
    recording.write_text("\n".join(lines) + "\n" + lines[-1][: len(lines[-1]) // 2])
    out = subprocess.run([*STREAMEMO, "report", str(recording), "-o", str(tmp_path / "rep")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    png = (tmp_path / "rep" / "timeline.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "1 line(s) were not valid messages and were skipped" in md and "![timeline](timeline.png)" in md
    voiced_s = sum(m["voiced"] for m in emotions) * 0.25
    assert f"with voice ({100 * voiced_s / (len(emotions) * 0.25):.0f} %)" in md
    assert "| emotion | share of voiced time |" in md and emotions[0]["model"] in md


def test_a_file_without_emotion_messages_is_one_line(tmp_path):
    empty = tmp_path / "status-only.jsonl"
    empty.write_text(json.dumps({"topic": "status", "v": 1}) + "\n")
    out = subprocess.run([*STREAMEMO, "report", str(empty), "-o", str(tmp_path / "rep")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "no emotion messages" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "rep").exists()
    out = subprocess.run([*STREAMEMO, "report", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "rep")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "cannot read" in out.stderr
    pytest.importorskip("matplotlib")
