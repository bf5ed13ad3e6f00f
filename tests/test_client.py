"""The Python client (`from streamemo import Client`) against the real daemon over real
sockets: typed messages, a daemon restart survived, CURVE keys honoured; and `subscribe
--record`, which is built on it, rotating whole files."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from conftest import STREAMEMO, _daemon, _stop
from streamemo import Client
from streamemo.protocol import EmotionMessage, StatusMessage
from test_curve import _free_port, _keys


def _emotions(client: Client, n: int, timeout: float = 60.0) -> list[EmotionMessage]:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        message = client.receive(timeout=1.0)
        if isinstance(message, EmotionMessage):
            got.append(message)
    return got


def test_the_client_reads_typed_messages_and_survives_a_restart(random_model, speech_and_silence_wav, free_endpoint):
    run = ("--source", str(speech_and_silence_wav), "--no-realtime", "--model", str(random_model), "--bind",
           free_endpoint, "--wait-subscriber", "20")
    with Client(free_endpoint) as client:
        first = _daemon(*run)
        messages = _emotions(client, 10)
        code, err = _stop(first)
        assert code == 0, err
        while client.receive(timeout=0.5) is not None:  # what the first daemon sent before it stopped
            pass
        assert len(messages) == 10 and all(isinstance(m.probs, (tuple, type(None))) for m in messages)
        assert [m.seq for m in messages] == list(range(10)) and messages[0].labels[0] == "neutral"
        assert any(m.voiced and m.arousal is not None for m in messages) or not any(m.voiced for m in messages)
        # The daemon goes and comes back on the same endpoint: the same client hears it again.
        second = _daemon(*run)
        again = _emotions(client, 3)
        _, err = second.communicate(timeout=60)  # a file: it ends by itself
        assert second.returncode == 0, err
        assert len(again) == 3 and again[0].seq == 0 and client.restarts >= 1
        time.sleep(0.5)
        waiting = client.take()  # what the second daemon sent after those three, without blocking
        assert isinstance(waiting, (EmotionMessage, StatusMessage))
        while client.take() is not None:
            pass
        assert client.take() is None  # nothing left: None at once
    with Client(free_endpoint, timeout=0.5) as client, pytest.raises(TimeoutError, match="no message from"):
        next(iter(client))  # nobody publishes: iterating fails instead of hanging


def test_the_client_honours_curve_keys(tmp_path, random_model, speech_and_silence_wav):
    keys, clients = tmp_path / "keys", tmp_path / "clients"
    _keys(keys, "server", "alice", "mallory")
    clients.mkdir()
    (clients / "alice.key").write_bytes((keys / "alice.key").read_bytes())
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    proc = _daemon("--source", str(speech_and_silence_wav), "--model", str(random_model), "--bind",
                   f"tcp://0.0.0.0:{port}", "--curve-secret", str(keys / "server.key_secret"), "--curve-clients",
                   str(clients))
    try:
        with Client(endpoint, curve_server=str(keys / "server.key"), curve_secret=str(keys / "alice.key_secret")) as alice, \
             Client(endpoint, curve_server=str(keys / "server.key"),
                    curve_secret=str(keys / "mallory.key_secret")) as mallory:
            heard = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(isinstance(m, StatusMessage) for m in heard):
                message = alice.receive(timeout=1.0)
                if message is not None:
                    heard.append(message)
            assert any(isinstance(m, StatusMessage) for m in heard)
            assert mallory.receive(timeout=2.0) is None  # her key is not in the allowed folder
    finally:
        _stop(proc)


def test_subscribe_records_whole_lines_and_rotates(random_model, speech_and_silence_wav, free_endpoint, tmp_path):
    record = tmp_path / "session.jsonl"
    recorder = subprocess.Popen([*STREAMEMO, "subscribe", "--connect", free_endpoint, "--record", str(record),
                                 "--rotate-mb", "0.004", "--keep", "2"], stderr=subprocess.PIPE, text=True)
    daemon = _daemon("--source", str(speech_and_silence_wav), "--no-realtime", "--model", str(random_model),
                     "--bind", free_endpoint, "--wait-subscriber", "20")
    _, err = daemon.communicate(timeout=60)  # runs to the end of the file, then stops
    assert daemon.returncode == 0, err
    time.sleep(0.5)  # the last messages reach the recorder
    recorder.send_signal(signal.SIGTERM)
    _, err = recorder.communicate(timeout=10)
    assert recorder.returncode == 0, err
    files = sorted(tmp_path.glob("session.jsonl*"))
    assert [f.name for f in files] == ["session.jsonl", "session.jsonl.1", "session.jsonl.2"]  # kept 2 rotated
    for f in files:
        assert f.read_text().endswith("\n")
        lines = [json.loads(line) for line in f.read_text().splitlines()]  # every line whole
        assert lines and all(line["topic"] in ("emotion", "status") for line in lines)
    assert "recorded" in err
