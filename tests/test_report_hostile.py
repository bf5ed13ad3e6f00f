"""`streamemo report` on hostile recordings (issue 31 items 1 and 2, issue 30 item 9): files
that are not recordings, lines in any order, repeated, missing or holding any values, and
names that are Markdown or HTML. Real files, read by the real reader in-process for the
properties, and by the real CLI in a subprocess for what a user sees."""

from __future__ import annotations

import json
import random
import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import STREAMEMO
from feedgen import emotion_body, one_hot, status_body
from streamemo import EMOTIONS, StreamemoError, session_report
from streamemo.protocol import to_json
from streamemo.session_report import read_recording, summarise, timeline

pytestmark = pytest.mark.timeout(180)

HOP = 0.24
T0 = 1_780_000_000.0  # a unix time in 2026


def _line(seq: int, voiced: bool = True, label: str = "sad", run_start: float = T0, source: str = "mic",
          **changes) -> str:
    """One recorded emotion line as `subscribe --record` writes it: sent at its audio time
    after the run's start, `seq` windows into the run."""
    t = run_start + (seq + 1) * HOP
    body = emotion_body(seq, one_hot(label), voiced=voiced, t_capture=t, t_publish=t + 0.01, source=source)
    body.update(t_audio=round((seq + 1) * HOP + 1.76, 6), **changes)
    return to_json({"topic": "emotion", "v": 2, **body})


def _session(n: int, voiced_every: int = 2, start_seq: int = 0, **kwargs) -> list[str]:
    return [_line(seq, voiced=seq % voiced_every == 0, **kwargs) for seq in range(start_seq, start_seq + n)]


def _report(tmp_path, lines: list[str] | bytes, name: str = "session.jsonl") -> subprocess.CompletedProcess:
    path = tmp_path / name
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n")
    return subprocess.run([*STREAMEMO, "report", str(path), "-o", str(tmp_path / "rep")], capture_output=True,
                          text=True, timeout=170)


def _summaries(path):
    reading = read_recording(path)
    return reading, [summarise(s, timeline(s)) for s in reading.sessions]


# --- 1. files that are not recordings: refused in one line, in bounded memory -------------------------------


@pytest.mark.parametrize("make", ["zeros", "one long line", "random bytes"])
def test_what_is_not_a_recording_is_refused_in_one_line(tmp_path, make):
    """/dev/zero once grew to 4.9 GB; a file with no message in its first 16 MiB is now
    refused, read a line (of at most 64 KiB) at a time."""
    if make == "zeros":
        path = "/dev/zero"
    else:
        path = tmp_path / "garbage.jsonl"
        rng = random.Random(make)
        with open(path, "wb") as f:
            for _ in range(20):
                f.write(b"x" * (1 << 20) if make == "one long line" else rng.randbytes(1 << 20))
    out = subprocess.run([*STREAMEMO, "report", str(path), "-o", str(tmp_path / "rep")], capture_output=True,
                         text=True, timeout=170)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "no streamemo message in its first 16 MiB: it is not a recording" in out.stderr
    assert not (tmp_path / "rep").exists()


def test_long_lines_are_skipped_unread_and_counted(tmp_path):
    lines = _session(20)
    lines.insert(5, '{"topic": "emotion", "source": "' + "x" * (1 << 20) + '"}')
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    reading, (summary,) = _summaries(path)
    assert reading.invalid == 1 and "longer than 65536 bytes" in reading.first_problem
    assert summary["messages"] == 20 and summary["missed"] == 0


def test_more_than_a_report_holds_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(session_report, "MAX_KEPT_BYTES", 100 * 59)  # a hundred messages of 8 labels
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(_session(101)) + "\n")
    with pytest.raises(StreamemoError, match="more messages than one report holds"):
        read_recording(path)


# --- 2. any order, any values -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 120), restart_at=st.integers(0, 120), data=st.data())
def test_any_order_repeats_and_losses_give_the_true_totals(tmp_path_factory, n, restart_at, data):
    """One daemon's messages, restarted once (its seq from 0 again, a pause between), are
    shuffled, some repeated, some lost, with garbage lines among them. The report counts each
    message once, the lost ones inside a run as missed, never more voice than time, and the
    recorded time as the runs' own (the pause left out)."""
    first = _session(min(restart_at, n))
    second = _session(n - len(first), run_start=T0 + 3600, voiced_every=3)
    lines = first + second
    lost = set(data.draw(st.lists(st.integers(0, len(lines) - 1), max_size=len(lines) // 3)))
    kept = [line for i, line in enumerate(lines) if i not in lost]
    if not kept:
        return
    repeated = data.draw(st.lists(st.sampled_from(kept), max_size=10))
    garbage = data.draw(st.lists(st.sampled_from(["{", "null", "[]", '{"topic": "emotion"}', "\x00\xff", "NaN"]),
                                 max_size=5))
    shuffled = kept + repeated + garbage
    random.Random(data.draw(st.integers())).shuffle(shuffled)
    path = tmp_path_factory.mktemp("rec") / "s.jsonl"
    path.write_text("\n".join(shuffled) + "\n", errors="surrogateescape")
    reading, (summary,) = _summaries(path)

    def inner_losses(run: list[str]) -> int:  # a lost first or last message leaves no gap to see
        kept_seqs = [i for i in range(len(run)) if run[i] in kept]
        return kept_seqs[-1] - kept_seqs[0] + 1 - len(kept_seqs) if kept_seqs else 0

    assert reading.invalid == len(garbage)
    assert summary["messages"] == len(kept) and summary["repeated"] == len(repeated)
    assert summary["missed"] == inner_losses(first) + inner_losses(second)
    runs = [run for run in (first, second) if any(line in kept for line in run)]
    assert summary["runs"] == len(runs)
    true_time = sum((max(i for i in range(len(r)) if r[i] in kept) - min(i for i in range(len(r)) if r[i] in kept) + 1)
                    for r in runs) * HOP
    assert summary["duration_s"] == pytest.approx(true_time, abs=1e-6)
    assert 0 <= summary["voiced_s"] <= summary["duration_s"] + 1e-9


@pytest.mark.parametrize("where", ["repeated", "its own"])
def test_one_absurd_audio_time_cannot_inflate_the_totals(tmp_path, where):
    """A message claiming 3 years of audio, as a repeat of a real one's seq or with a seq of
    its own: dropped as a repeat, or set apart as a run of its own, one hop long."""
    lines = _session(100)
    if where == "repeated":
        lines.insert(60, json.dumps({**json.loads(lines[50]), "t_audio": 1e8}))
    else:
        lines[50] = json.dumps({**json.loads(lines[50]), "t_audio": 1e8})
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    _, (summary,) = _summaries(path)
    assert summary["duration_s"] == pytest.approx(100 * HOP, abs=1e-6)
    assert summary["missed"] == 0 and summary["voiced_s"] <= summary["duration_s"]
    assert summary["repeated"] == (1 if where == "repeated" else 0)


def _bad(**changes) -> str:
    return json.dumps({**json.loads(_line(3)), **changes})  # json.dumps writes NaN, as Python allows


# Each kind of bad line the issue found getting through, with a valid session around it.
BAD_LINES = [_bad(t_audio=float("nan")), _bad(t_audio=-5.0), _bad(probs=[5.0] * 8), _bad(arousal=5.0),
             _bad(top="HACKED"), _bad(source="\ud800"), _bad(v=3), _bad(seq=-1), _bad(t_capture=-1.0),
             _bad(t_publish=float("inf")), "[" * 100_000]


def test_every_bad_line_is_skipped_and_counted(tmp_path):
    lines = _session(10) + BAD_LINES + [to_json({"topic": "status", "v": 2, **status_body(1, t_publish=T0)})]
    out = _report(tmp_path, lines)
    assert out.returncode == 0, out.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"{len(BAD_LINES)} line(s) were not valid messages and were skipped" in md
    assert "10 messages, 0 missed (gaps in seq)" in md  # the missed line, 0 included


def test_names_are_shown_not_acted_on(tmp_path):
    """A source named with Markdown, HTML and newlines was copied raw into report.md; a
    label with `$` is mathematics to matplotlib. Both are shown as written, on one line."""
    source = "talk\n# HACKED\n<img src=x onerror=alert(1)> *bold* [link](http://x) | cell"
    labels = ["$x^2$", *EMOTIONS[1:]]
    lines = [_line(i, source=source, labels=labels, top=None if i % 2 else "$x^2$",
                   probs=one_hot("$x^2$", labels=labels)) for i in range(12)]
    out = _report(tmp_path, lines)
    assert out.returncode == 0, out.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "<img" not in md and "\n# HACKED" not in md and "[link](" not in md
    assert "## talk \\# HACKED &lt;img src=x onerror=alert(1)&gt; \\*bold\\* \\[link\\](http://x) \\| cell" in md
    assert (tmp_path / "rep" / "timeline.png").read_bytes().startswith(b"\x89PNG")
    assert "\n" not in out.stdout.split(":")[0]  # the printed line names the source on one line


def test_many_sources_are_summarised_and_only_a_few_drawn(tmp_path):
    """481 sources once took 6 min 40 s and wrote 482 PNGs."""
    lines = [_line(seq, source=f"mic-{i}") for i in range(481) for seq in range(3 if i else 40)]
    out = _report(tmp_path, lines)
    assert out.returncode == 0, out.stderr
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert len(pngs) == session_report.MAX_TIMELINES
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "481 sources: timelines are drawn for the 8 with the most messages; the other 473 are summarised only" in md
    assert md.index("## mic-0\n") < md.index("## mic-1\n")  # the one with the most messages first
    assert md.count("\n## ") == 481 and "and 473 more sources" in out.stdout


def test_pauses_are_drawn_as_pauses_on_a_clock_time_axis(tmp_path):
    """The PNG filled pauses with the probabilities the daemon holds through them, while its
    lower panel shaded them; its time axis counted seconds from the first message. Now what
    is drawn over a pause is nothing, and the axis is the clock."""
    lines = _session(30, voiced_every=1) + [_line(seq, voiced=False) for seq in range(30, 60)] + \
        _session(30, voiced_every=1, start_seq=60)
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    reading = read_recording(path)
    session = reading.sessions[0]
    start, end, probs, dims = session_report.segments(session, timeline(session))
    assert start[0] == pytest.approx(T0, abs=1e-6)  # clock time: the first window's start
    paused = slice(30, 60)
    assert (probs[paused] != probs[paused]).all() and (dims[paused] != dims[paused]).all()  # NaN: not drawn
    assert (probs[:30] == probs[:30]).all()


def test_an_unwritable_output_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(_session(5)) + "\n")
    out = subprocess.run([*STREAMEMO, "report", str(path), "-o", str(tmp_path / "taken")], capture_output=True,
                         text=True, timeout=170)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert re.fullmatch(r"streamemo report: error: cannot write the report into \S+: File exists; .*\n", out.stderr)
