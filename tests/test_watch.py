"""`streamemo watch`: triggers read from a config, fired by a real daemon scoring a real file
(3 s of silence, espeak-ng speech, 3 s of silence) over a real socket, running real commands
that write down what they were told; the grammar's one-line errors; the state machine on
message sequences a file cannot stage (gaps, restarts, two daemons)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import STREAMEMO, _daemon
from streamemo import StreamemoError
from streamemo.config import Config
from streamemo.protocol import EmotionMessage
from streamemo.reload import plan_reload
from streamemo.triggers import Trigger, parse
from test_service_units import UNITS, _analyze, _copy_for_this_machine, needs_analyze

# Writes its standard input and its STREAMEMO_* environment as one JSON line to argv[1].
RECORDER = """\
import json, os, sys
line = {"stdin": sys.stdin.read(), "env": {k: v for k, v in os.environ.items() if k.startswith("STREAMEMO_")}}
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(line) + "\\n")
"""
SUMMARY = re.compile(r"'(?P<when>[^']+)': fired (?P<fired>once|\d+ times); the command ran (?P<ran>once|\d+ times), "
                     r"failed (?P<failed>once|\d+ times), and was still running (?P<busy>once|\d+ times)")


def _count(text: str) -> int:
    return 1 if text == "once" else int(text.split()[0])


def _toml_list(items) -> str:
    return json.dumps([str(i) for i in items])  # a JSON list of strings is a TOML array


def test_triggers_fire_on_a_real_daemon(speech_and_silence_wav, free_endpoint, tmp_path):
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    record = [sys.executable, recorder]
    fired, never, quiet = tmp_path / "fired.jsonl", tmp_path / "never.jsonl", tmp_path / "quiet.jsonl"
    config = tmp_path / "watch.toml"
    config.write_text(f"""
# About 3.8 s of the file is voiced, from 3.2 s of its audio to 7.0 s.
[[trigger]]
when = "neutral >= 0 for 3s"  # a probability is never below 0: true on every voiced message
run = {_toml_list([*record, fired])}

[[trigger]]
# Voiced for under 5 s: this must not fire. The held probabilities on the silent messages
# after the speech would make it hold for 6.5 s, were silence not false.
when = "neutral >= 0 for 5s"
run = {_toml_list([*record, never])}

[[trigger]]
when = "speech < 0.1 for 0.9s"  # read in silence too: fires in the 3 s before the speech
run = "cat >> '{quiet}'"
shell = true
cooldown_s = 0

# One condition, three cool-downs; the one resting 2 s runs a command that fails.
[[trigger]]
when = "neutral >= 0 for 0.5s"
run = ["true"]
cooldown_s = 0
[[trigger]]
when = "neutral >= 0.0 for 0.5s"
run = ["sh", "-c", "exit 3"]
cooldown_s = 2
[[trigger]]
when = "neutral >= 0.00 for 0.5s"
run = ["true"]

[[trigger]]
when = "speech >= 0 for 0.5s"  # every message: fires each 0.5 s, while its first command still sleeps
run = ["sleep", "60"]
cooldown_s = 0

[[trigger]]
when = "calm >= 0"  # the daemon decides among four emotions, calm not one of them
run = ["true"]
""")
    watcher = subprocess.Popen([*STREAMEMO, "watch", "--config", str(config), "--connect", free_endpoint],
                               stderr=subprocess.PIPE, text=True)
    try:
        daemon = _daemon("--source", str(speech_and_silence_wav), "--no-realtime", "--model", "small", "--bind",
                         free_endpoint, "--wait-subscriber", "30",  # starts once the watcher has subscribed
                         "--emotions", "angry,happy,neutral,sad")
        _, err = daemon.communicate(timeout=60)  # the file ends, and so does the daemon
        assert daemon.returncode == 0, err
        deadline = time.monotonic() + 10
        while not fired.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # the last messages and commands
        watcher.send_signal(signal.SIGTERM)
        _, log = watcher.communicate(timeout=15)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, log
    heard = re.search(r"heard (\d+) emotion messages, the last from \S+ at ([\d.]+) s of its audio", log)
    assert heard and float(heard[2]) > 9.4, log  # the whole 9.9 s file reached the watcher
    counts = {m["when"]: {k: _count(v) for k, v in m.groupdict().items() if k != "when"} for m in SUMMARY.finditer(log)}
    assert len(counts) == 8, log

    # Fired once (its cool-down is 30 s), told what happened on stdin and in the environment.
    assert counts["neutral >= 0 for 3s"] == {"fired": 1, "ran": 1, "failed": 0, "busy": 0}
    [line] = fired.read_text().splitlines()
    told = json.loads(line)
    event, env = json.loads(told["stdin"]), told["env"]
    assert event["trigger"] == env["STREAMEMO_TRIGGER"] == "neutral >= 0 for 3s"
    assert 3.0 <= event["held_s"] < 3.5 and event["voiced"] and 6.0 < event["t_audio"] < 7.2
    assert event["emotion"] == env["STREAMEMO_EMOTION"] and event["emotion"] in event["probs"]
    assert float(env["STREAMEMO_PROBABILITY"]) == event["probability"] == event["probs"][event["emotion"]]
    assert float(env["STREAMEMO_AROUSAL"]) == event["arousal"] and float(env["STREAMEMO_SPEECH"]) == event["speech"]
    assert float(env["STREAMEMO_TIME"]) == event["time"] and float(env["STREAMEMO_HELD_S"]) == event["held_s"]
    assert env["STREAMEMO_SOURCE"] == event["source"] == str(speech_and_silence_wav)
    assert json.loads(env["STREAMEMO_EVENT"]) == event and told["stdin"].endswith("\n")
    assert "'neutral >= 0 for 3s' fired (held 3." in log

    assert counts["neutral >= 0 for 5s"]["fired"] == 0 and not never.exists()

    quiet_firings = [json.loads(line) for line in quiet.read_text().splitlines()]
    assert counts["speech < 0.1 for 0.9s"]["fired"] >= 2  # the silence before the speech, and after it
    assert quiet_firings[0]["t_audio"] < 3.2 and not quiet_firings[0]["voiced"] and quiet_firings[0]["emotion"] is None
    assert all(f["speech"] < 0.1 for f in quiet_firings)

    # The cool-down: the longer the rest, the fewer the firings over the same 3.8 s of voice.
    no_rest, rest_2s, rest_30s = (counts[w] for w in ("neutral >= 0 for 0.5s", "neutral >= 0.0 for 0.5s",
                                                     "neutral >= 0.00 for 0.5s"))
    assert no_rest["fired"] > rest_2s["fired"] == 2 and rest_30s["fired"] == 1
    # A command that fails is logged, and the watcher goes on (it fired again after it).
    assert rest_2s["failed"] == rest_2s["ran"] >= 1
    assert "'neutral >= 0.0 for 0.5s': sh -c 'exit 3' exited with status 3" in log

    # Never two copies at once: the first sleep ran throughout, every later firing was skipped,
    # said once, and the sleep was stopped with the watcher.
    slow = counts["speech >= 0 for 0.5s"]
    assert slow["ran"] == 1 and slow["busy"] == slow["fired"] - 1 >= 5
    assert log.count("'speech >= 0 for 0.5s' fired, but its command") == 1
    assert "'speech >= 0 for 0.5s': stopping sleep 60" in log

    # An emotion the daemon does not decide among: said once, and never fired.
    assert counts["calm >= 0"]["fired"] == 0
    assert log.count("'calm >= 0': the model at") == 1
    assert "has no 'calm' (its labels: neutral, happy, sad, angry)" in log


@pytest.mark.parametrize("args, error", [
    (["angr >= x", "--exec", "true"], "cannot read trigger 'angr >= x': unknown emotion 'angr'; did you mean 'angry'? "
                                      "(known: neutral, calm, happy, sad, angry, fearful, disgust, surprised, "
                                      "arousal, valence, speech)"),
    (["angry >= 0.8 for 3", "--exec", "true"], "'for 3' needs a unit: 3s, 3ms or 3min"),
    (["angry >= 0.8", "--exec", "no-such-program-here", "x"],
     "trigger 'angry >= 0.8': the program 'no-such-program-here' is not on PATH; install it or give its full path"),
    (["angry >= 0.8"], "'angry >= 0.8' needs a command to run: --exec CMD [ARGS...], given last"),
    (["--exec", "true"], "--exec needs a trigger before it"),
    (["angry >= 0.8", "--cooldown", "soon", "--exec", "true"], "--cooldown 'soon': expected a duration such as 30s"),
    (["angry >= 0.8", "--shell", "--exec", "echo", "hi"], "--shell runs one string: quote the whole command"),
    ([], "nothing to watch: give a trigger and a command"),
])
def test_watch_says_what_is_wrong_in_one_line(args, error):
    out = subprocess.run([*STREAMEMO, "watch", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("streamemo watch: error: ") and error in out.stderr, out.stderr


def test_a_bad_trigger_in_the_config_is_one_line_naming_it(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[[trigger]]\nwhen = "angry >= 0.8"\nrun = ["true"]\n\n'
                      '[[trigger]]\nwhen = "angry >= 1.5 for 3s"\nrun = ["true"]\n')
    out = subprocess.run([*STREAMEMO, "watch", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr == (
        f"streamemo watch: error: config file {config}: [[trigger]] number 2: cannot read trigger "
        "'angry >= 1.5 for 3s': a probability is from 0 to 1, so 'angry >= 1.5' never holds\n")
    # The daemon reads the same file: it refuses it too, rather than start with it half-read.
    out = subprocess.run([*STREAMEMO, "run", "--config", str(config), "--print-config"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "[[trigger]] number 2" in out.stderr


@pytest.mark.parametrize("text, error", [
    ("", "it is empty; e.g. 'angry >= 0.8 for 3s'"),
    ("angry", "expected a comparison (>=, >, <= or <) after 'angry', but it ends there"),
    ("angry = 0.8", "'=' after 'angry' is not a comparison; use >=, >, <= or <"),
    ("angry >= high", "expected a number after 'angry >=', got 'high'"),
    ("arousal > 2", "arousal is from -1 to 1, so 'arousal > 2' never holds"),
    ("angry >= 0.8 or sad > 0.5", "expected 'and' or 'for' after '0.8', got 'or'"),
    ("angry >= 0.8 for 3 sec", "'for 3 sec': the unit is ms, s or min, as in 3s"),
    ("angry >= 0.8 for 3s and sad > 0.5", "'for 3s' ends the trigger, but 'and sad > 0.5' follows it"),
    ("angry >= 0.8 for 2 days", "the unit is ms, s or min"),
    ("angry >= 0.8 for 100000s", "'for 100000s' must be from 0 to a day"),
])
def test_the_grammar_names_what_is_wrong(text, error):
    with pytest.raises(StreamemoError) as raised:
        parse(text)
    assert str(raised.value) == f"cannot read trigger '{text}': {error}" or error in str(raised.value)
    assert raised.value.exit_code == 2 and "\n" not in str(raised.value)


def test_the_grammar_reads_what_the_readme_shows():
    c = parse("Sad > 0.5 and valence < -0.3 for 10 s")
    assert [(k.subject, k.comparison, k.threshold) for k in c.clauses] == [("sad", ">", 0.5), ("valence", "<", -0.3)]
    assert c.hold_s == 10.0
    assert parse("speech<.1 for 5min").hold_s == 300 and parse("angry >= 0.8 for 500ms").hold_s == 0.5
    assert parse("angry >= 0.8").hold_s == 0


def _message(seq: int, t_audio: float, angry: float | None, source: str = "mic", speech: float = 0.9):
    """An emotion message as the daemon sends it: angry's probability, the rest on neutral;
    None: a window the voice gate did not pass (the probabilities held from before)."""
    voiced = angry is not None
    p = 0.5 if angry is None else angry
    probs = (1 - p, p)
    return EmotionMessage(seq=seq, t_capture=1e9 + t_audio, t_audio=t_audio, labels=("neutral", "angry"), probs=probs,
                          raw=probs if voiced else None, top=("angry" if p > 0.5 else "neutral") if voiced else None,
                          confidence=max(probs) if voiced else None, voiced=voiced, level_db=-20.0, source=source,
                          model="m@0", arousal=0.5 if voiced else None, valence=-0.5 if voiced else None, speech=speech)


def _fires(trigger: Trigger, messages) -> list[int]:
    return [m.seq for m in messages if trigger.feed(m) is not None]


def test_a_trigger_holds_over_the_messages_own_clock():
    hop = 0.25
    run = [_message(i, 2 + i * hop, 0.9) for i in range(20)]  # 5 s of anger, messages 0.25 s apart
    assert _fires(Trigger(parse("angry >= 0.8 for 1s"), cooldown_s=30), run) == [4]  # 1 s after the first
    assert _fires(Trigger(parse("angry >= 0.8 for 1s"), cooldown_s=0), run) == [4, 9, 14, 19]
    assert _fires(Trigger(parse("angry >= 0.8 for 1s"), cooldown_s=1.5), run) == [4, 14]  # rest, then 1 s again
    assert _fires(Trigger(parse("angry >= 0.8"), cooldown_s=1), run) == [0, 4, 8, 12, 16]
    assert _fires(Trigger(parse("angry > 0.9 for 1s"), cooldown_s=0), run) == []
    # A silent window breaks the run: its held probabilities do not count.
    gap = [_message(i, 2 + i * hop, None if i == 3 else 0.9) for i in range(9)]
    assert _fires(Trigger(parse("angry >= 0.8 for 1s"), cooldown_s=30), gap) == [8]
    assert _fires(Trigger(parse("speech > 0.5 for 1s"), cooldown_s=30), gap) == [4]  # speech goes on in silence
    # A message missed (seq 5 never came) or a new stream (the audio clock back at 2 s) starts again.
    missed = [m for m in run if m.seq != 5]
    assert _fires(Trigger(parse("angry >= 0.8 for 1s"), cooldown_s=0), missed) == [4, 10, 15]
    restarted = run[:3] + [_message(3 + i, 2 + i * hop, 0.9) for i in range(6)]
    assert _fires(Trigger(parse("angry >= 0.8 for 1s"), cooldown_s=0), restarted) == [7]
    # Two daemons behind one proxy, interleaved: each followed on its own.
    other = [_message(i, 50 + i * hop, 0.1, source="other") for i in range(5)]
    both = [m for pair in zip(run[:5], other) for m in pair]
    assert _fires(Trigger(parse("angry >= 0.8 for 1s"), cooldown_s=30), both) == [4]
    # The cool-down is the audio clock's too, and goes on across a restart of the same source.
    rest = Trigger(parse("angry >= 0.8"), cooldown_s=2)
    assert _fires(rest, run[:4]) == [0] and _fires(rest, [_message(0, 2.0, 0.9), _message(1, 2.25, 0.9)]) == []
    # 2 s of audio after it fired: 0.75 s before the restart, 1.25 s after.
    assert _fires(rest, [_message(i, 2 + i * hop, 0.9) for i in range(2, 8)]) == [5]


def test_triggers_in_the_config_print_and_reload(tmp_path):
    path = tmp_path / "streamemo.toml"
    path.write_text('[[trigger]]\nwhen = "angry >= 0.8 for 3s"\nrun = ["notify-send", "You sound angry"]\n\n'
                    '[[trigger]]\nwhen = "speech < 0.1 for 5min"\nrun = "echo quiet | wall"\nshell = true\n'
                    'cooldown_s = 600\n')
    config = Config.load(path)
    assert [t.when for t in config.trigger] == ["angry >= 0.8 for 3s", "speech < 0.1 for 5min"]
    assert config.trigger[0].run == ("notify-send", "You sound angry") and config.trigger[0].cooldown_s == 30
    printed = tmp_path / "printed.toml"
    printed.write_text(config.to_toml())
    assert Config.load(printed) == config
    # The daemon reads the file too, and a reload leaves the triggers to the watcher.
    assert plan_reload(config, Config.load(printed)) == (config, [])


@needs_analyze
def test_the_watch_unit_verifies_and_keeps_its_hardening(tmp_path):
    unit = _copy_for_this_machine("streamemo-watch.service", tmp_path)
    result = _analyze("verify", str(unit), tmp_path=tmp_path)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    assert "watch --config /etc/streamemo/streamemo.toml" in (UNITS / "streamemo-watch.service").read_text()
    result = _analyze("security", "--offline=true", str(unit), tmp_path=tmp_path)
    if "--offline" in result.stderr:
        pytest.skip("this systemd-analyze cannot score a unit file offline (needs systemd >= 252)")
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert score and float(score[1]) <= 1.1, result.stdout[-300:]  # the score systemd/README.md gives
