"""A chosen set of emotions (`--emotions`, `pipeline.emotions`): the daemon over real ZeroMQ,
a hot model swap, `classify` with and without the set, the dashboard under its pilot, and
the one-line refusals. The cheap bundled `small` model except where the model is the point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf
import soxr

from streamemo import cli
from streamemo.commands.classify import _print_table
from streamemo.config import Config
from streamemo.dashboard.app import DashboardApp
from streamemo.dashboard.receiver import Receiver
from streamemo.dimensions import arousal_valence
from streamemo.emotion_set import restrict
from streamemo.protocol import ProtocolError

from conftest import STREAMEMO, _collect, _daemon, _stop, _subscriber
from test_dashboard import asynctest, shown, until

pytestmark = pytest.mark.timeout(120)

CHOSEN = "angry,happy,neutral,sad"
IN_FORCE = ["neutral", "happy", "sad", "angry"]  # the set in the bundled models' label order
TOLERANCE = 1e-4  # probabilities go on the wire rounded to 5 digits


def emotion_bodies(messages) -> list[dict]:
    return [body for topic, body in messages if topic == "emotion"]


def assert_over_the_set(body: dict, in_force: list[str]) -> None:
    """One emotion message decides among `in_force` only and says so."""
    assert body["labels"] == in_force and body["emotions"] == in_force
    for name in ("probs", "raw"):
        if body[name] is not None:
            assert len(body[name]) == len(in_force) and abs(sum(body[name]) - 1) < TOLERANCE
    if body["top"] is not None:
        assert body["top"] in in_force
        # Arousal and valence come from the same renormalised probabilities.
        arousal, valence = arousal_valence(in_force, body["probs"])
        assert abs(arousal - body["arousal"]) < 1e-3 and abs(valence - body["valence"]) < 1e-3


def test_the_daemon_publishes_the_chosen_set_only(speech_and_silence_wav, free_endpoint):
    proc = _daemon("--source", str(speech_and_silence_wav), "--no-realtime", "--model", "small", "--emotions", CHOSEN,
                   "--bind", free_endpoint, "--wait-subscriber", "20")
    messages = _collect(_subscriber(free_endpoint), lambda m: False, 60, proc)
    code, err = _stop(proc)
    assert code == 0, err
    bodies = emotion_bodies(messages)
    assert bodies and any(b["voiced"] for b in bodies) and not all(b["voiced"] for b in bodies)
    for body in bodies:
        assert_over_the_set(body, IN_FORCE)
    assert f"deciding among {', '.join(IN_FORCE)} only" in err  # the start-up log says it too


def _model_like_small(tmp_path, name: str, labels) -> str:
    """An untrained network with small's frontend and window and the given labels."""
    import torch

    from streamemo.model import Model, load_model, save_model

    torch.manual_seed(1)
    small = load_model("small")
    model = Model.create(name, labels, small.window_s, small.frontend, "cnn_lstm", {"time_padding": "valid"})
    save_model(model, tmp_path / name)
    return str(tmp_path / name)


def test_a_swap_to_a_model_without_one_of_the_set_is_refused_and_the_daemon_goes_on(speech_and_silence_wav, tmp_path,
                                                                                    free_endpoint):
    lacking = _model_like_small(tmp_path, "lacking", ["neutral", "happy", "angry", "fearful"])  # no sad
    reordered = _model_like_small(tmp_path, "reordered", ["sad", "calm", "angry", "happy", "neutral"])
    config = tmp_path / "streamemo.toml"
    config.write_text('[model]\npath = "small"\n')
    audio, rate = sf.read(speech_and_silence_wav, dtype="int16")
    pcm = audio.astype("<i2").tobytes()
    third = len(pcm) // 3 // 2 * 2
    # Raw PCM on stdin: the test decides when audio arrives, so each reload lands between hops it knows.
    read_end, stdin = os.pipe()
    proc = _daemon("--config", str(config), "--emotions", CHOSEN, "--source", "-", "--stdin-rate", str(rate),
                   "--bind", free_endpoint, "--wait-subscriber", "20", stdin=read_end)
    os.close(read_end)
    sock = _subscriber(free_endpoint)
    try:
        def feed(part: bytes, until_seq: int) -> list:
            while part:
                part = part[os.write(stdin, part):]
            return _collect(sock, lambda m: any(b["seq"] >= until_seq for b in emotion_bodies(m)), 60, proc)

        def reload(path: str, said: str) -> list:
            config.write_text(f'[model]\npath = "{path}"\n')
            proc.send_signal(signal.SIGHUP)
            return _collect(sock, lambda m: any(t == "status" and said in b["message"] for t, b in m), 30, proc)

        windows = (len(pcm) // 3 // 2 - rate * 2) // round(rate * 0.24)  # the last in the first third (2 s windows)
        before = feed(pcm[:third], windows - 1)
        refused = reload(lacking, "reload failed")
        during = feed(pcm[third:2 * third], 2 * windows)
        swapped = reload(reordered, "reloaded")
        after = feed(pcm[2 * third:], 3 * windows)
        os.close(stdin)  # the end of the stream: the daemon finishes and exits
        stdin = None
        after += _collect(sock, lambda m: False, 30, proc)
    finally:
        if stdin is not None:
            os.close(stdin)
        code, err = _stop(proc)
    assert code == 0, err
    old = emotion_bodies(before)[0]["model"]
    assert old.startswith("small@")
    for body in emotion_bodies(before + refused + during):
        assert body["model"] == old
        assert_over_the_set(body, IN_FORCE)
    line = next(b["message"] for t, b in refused if t == "status" and "reload failed" in b["message"])
    assert f"still running model {old}" in line and "'sad' is not a label of model lacking" in line
    assert "reload failed" in err and "Traceback" not in err
    # A model with every emotion of the set takes over, in its own label order.
    new = [b for b in emotion_bodies(swapped + after) if b["model"].startswith("reordered@")]
    assert new
    for body in new:
        assert_over_the_set(body, ["sad", "angry", "happy", "neutral"])


def _classify(capsys, *args: str) -> tuple[int, str, str]:
    """`streamemo classify ARGS` through the real command line, in this process (torch and
    the model are then loaded once, not per run)."""
    code = cli.main(["classify", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("model", ["small", "default"])
def test_classify_with_the_set_is_classify_without_it_renormalised(model, speech_wav, capsys):
    code, out, err = _classify(capsys, str(speech_wav), "--model", model, "--json")
    assert code == 0, err
    every = json.loads(out)
    code, out, err = _classify(capsys, str(speech_wav), "--model", model, "--emotions", CHOSEN, "--json")
    assert code == 0, err
    chosen = json.loads(out)
    keep = [every["labels"].index(label) for label in IN_FORCE]
    assert chosen["labels"] == chosen["emotions"] == IN_FORCE and every["emotions"] is None
    assert [every["labels"][i] for i in keep] == IN_FORCE  # the kept classes in the order they had
    assert len(chosen["windows"]) == len(every["windows"]) and chosen["voiced_windows"] == every["voiced_windows"] > 0
    restricted = []
    for alone, among_all in zip(chosen["windows"], every["windows"]):
        assert alone["voiced"] == among_all["voiced"] and alone["emotions"] == IN_FORCE
        if among_all["raw"] is not None:
            restricted.append(restrict(among_all["raw"], keep))
            assert np.allclose(alone["raw"], restricted[-1], atol=TOLERANCE)
    # The whole file is the mean of its windows' renormalised probabilities, its label the most probable of them.
    assert np.allclose(chosen["probs"], np.mean(restricted, axis=0), atol=TOLERANCE)
    assert chosen["label"] == IN_FORCE[int(np.argmax(chosen["probs"]))]
    _print_table(chosen)
    table = capsys.readouterr().out.splitlines()
    assert table[1] == f"  deciding among {', '.join(IN_FORCE)} only (--emotions)"


@asynctest
async def test_the_dashboard_shows_only_the_set_and_says_so(speech_wav, free_endpoint):
    proc = _daemon("--source", str(speech_wav), "--no-realtime", "--model", "small", "--emotions", CHOSEN,
                   "--bind", free_endpoint, "--wait-subscriber", "20")
    try:
        app = DashboardApp(Receiver([free_endpoint]))
        async with app.run_test(size=(120, 30)) as pilot:
            # The daemon sends the whole file at once and ends: its last message stays on screen.
            await until(pilot, lambda: proc.poll() is not None and app.views and app.views[0].emotions is not None,
                        timeout=60, what="the daemon's messages")
            await pilot.pause(0.3)
            bars = app.query_one("#bars")
            assert bars.border_title == f"chosen emotions: {', '.join(IN_FORCE)}  ┃ raw"
            shown_labels = [line.split()[0] for line in shown(app, "#bars").splitlines()]
            assert shown_labels == IN_FORCE
            # Each label is on the bottom row of its own (a taller timeline gives each several).
            timeline_labels = [line[:10].strip() for line in shown(app, "#timeline").splitlines() if line[:10].strip()]
            assert timeline_labels == IN_FORCE
            await pilot.resize_terminal(80, 24)  # too narrow to name them: the frame still says a set is chosen
            await pilot.pause(0.3)
            assert bars.border_title == "4 chosen emotions  ┃ raw"
    finally:
        code, err = _stop(proc)
    assert code == 0, err


LABELS_LINE = "model small's labels are neutral, calm, happy, sad, angry, fearful, disgust, surprised"


@pytest.mark.parametrize("emotions, problem", [
    ("angry,happy,grumpy", "'grumpy' is not a label of model small"),
    ("", "must name at least two emotions to decide between, got none"),
    ("sad", "must name at least two emotions to decide between, got sad"),
])
def test_a_bad_set_is_one_line_naming_the_models_labels(emotions, problem, speech_wav, capsys):
    code, out, err = _classify(capsys, str(speech_wav), "--model", "small", "--emotions", emotions)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("streamemo classify: error: --emotions") and problem in err
    assert LABELS_LINE in err


def test_the_daemon_refuses_a_bad_set_in_its_config_in_one_line(tmp_path, speech_wav, free_endpoint):
    config = tmp_path / "streamemo.toml"
    config.write_text('[model]\npath = "small"\n[pipeline]\nemotions = ["angry", "happy", "grumpy"]\n')
    run = subprocess.run([*STREAMEMO, "run", "--config", str(config), "--source", str(speech_wav), "--bind",
                          free_endpoint, "--log-level", "error"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "'grumpy' is not a label of model small" in run.stderr, run.stderr
    assert LABELS_LINE in run.stderr
    # `--print-config` gives the line back as it was written.
    assert 'emotions = ["angry", "happy", "grumpy"]' in Config.load(config).to_toml().splitlines()


def test_the_wire_says_which_set_is_in_force_and_older_daemons_read_as_none():
    from streamemo.protocol import decode_message, encode

    body = dict(seq=1, t_capture=1.0, t_publish=1.0, t_audio=2.0, labels=["sad", "happy"], probs=[0.3, 0.7],
                raw=[0.2, 0.8], top="happy", confidence=0.7, arousal=0.1, valence=0.2, voiced=True, speech=0.9,
                level_db=-20.0, source="x", model="m@0")
    assert decode_message(encode("emotion", body)).emotions is None  # a version 2 daemon older than the field
    sent = decode_message(encode("emotion", {**body, "emotions": ["sad", "happy"]}))
    assert sent.emotions == ("sad", "happy") and sent.to_body()["emotions"] == ["sad", "happy"]
    with pytest.raises(ProtocolError, match="'emotions' must be null or the labels in force"):
        encode("emotion", {**body, "emotions": ["sad"]})
