"""The systemd service protocol and reload, against the real daemon.

systemd is not needed: it is only the other end of a unix datagram socket. The tests bind
one, hand its path to the daemon in $NOTIFY_SOCKET (with $WATCHDOG_USEC, as systemd does),
and read what arrives, while a real SUB socket reads the published messages.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streamemo.config import PipelineConfig
import soundfile as sf

from conftest import _collect, _daemon, _stop, _subscriber
from streamemo.config import Config
from streamemo.model import model_paths
from streamemo.reload import plan_reload
from streamemo.service import Notifier, watchdog_period

WATCHDOG_USEC = 1_000_000  # the daemon pings every 0.5 s


class NotifySocket:
    """The systemd end: records every datagram with its arrival time, on a thread."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.received: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.received.append((time.monotonic(), fields))

    def env(self, **extra) -> dict:
        return {**os.environ, "NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": str(WATCHDOG_USEC), **extra}

    def wait(self, key: str, after: float = 0.0, timeout: float = 60.0, proc=None) -> tuple[float, dict]:
        """The first notification carrying `key` that arrived after `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, fields in list(self.received):
                if t > after and key in fields:
                    return t, fields
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {key} notification; got {[f for _, f in self.received]}"
                             + (f"\n{proc.stderr.read()}" if proc is not None and proc.poll() is not None else ""))

    def times(self, key: str, start: float = 0.0, end: float = float("inf")) -> list[float]:
        return [t for t, fields in list(self.received) if key in fields and start < t <= end]

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    listener = NotifySocket(tmp_path / "notify")
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory, speech_and_silence_wav):
    """About a minute of the speech-and-silence clip: a file source that outlives the test."""
    audio, rate = sf.read(speech_and_silence_wav, dtype="float32")
    path = tmp_path_factory.mktemp("audio") / "long.wav"
    sf.write(path, np.tile(audio, 7), rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    """A second model with other weights: its name@hash tells its messages apart."""
    import torch

    from streamemo import EMOTIONS
    from streamemo.features import FrontendSpec
    from streamemo.model import Model, save_model

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("models") / "other"
    save_model(Model.create("other", EMOTIONS, 2.0, FrontendSpec(), "cnn_lstm"), path)
    return path


def _install_model(source, target) -> None:
    for src, dst in zip(model_paths(source), model_paths(target)):
        shutil.copyfile(src, dst)


def _model_id(path) -> str:
    import json

    card = json.loads(model_paths(path)[1].read_text())
    return f"{card['name']}@{card['weights_sha256'][:12]}"


# --- the protocol on its own ---------------------------------------------------------------


def test_notifier_speaks_to_an_abstract_socket_and_survives_a_vanished_one(tmp_path):
    name = f"streamemo-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
    notifier.ready("up")
    assert server.recv(100) == b"READY=1\nSTATUS=up"
    notifier.reloading()
    fields = dict(line.split("=", 1) for line in server.recv(200).decode().split("\n"))
    assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0
    server.close()
    notifier.watchdog()  # nobody listening any more: logged, never raised
    Notifier({}).ready("no systemd: nothing happens")


def test_watchdog_period_follows_systemd_environment():
    assert watchdog_period({"WATCHDOG_USEC": "4000000"}) == 4.0
    assert watchdog_period({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}) == 4.0
    assert watchdog_period({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None  # meant for another process
    assert watchdog_period({}) is None and watchdog_period({"WATCHDOG_USEC": "0"}) is None


def test_reload_plan_applies_model_and_pipeline_but_not_the_socket():
    running = Config()
    new = Config.load(None, {"model.path": "/m/new", "pipeline.hop_s": 0.5, "publish.bind": "tcp://127.0.0.1:1",
                             "audio.source": "hw:1", "log.level": "debug"})
    effective, waiting = plan_reload(running, new)
    assert effective.model.path == "/m/new" and effective.pipeline.hop_s == 0.5 and effective.log.level == "debug"
    assert effective.publish.bind == running.publish.bind and effective.audio == running.audio
    assert sorted(waiting) == ["audio.source", "publish.bind"]


# --- acceptance 1 and 3: the real daemon ------------------------------------------------------


def _hup(proc, notify) -> dict:
    """SIGHUP; checks RELOADING (with its timestamp) then READY; returns the READY fields."""
    t_hup = time.monotonic()
    proc.send_signal(signal.SIGHUP)
    t_reloading, reloading = notify.wait("RELOADING", after=t_hup, proc=proc)
    assert int(reloading["MONOTONIC_USEC"]) > 0
    return notify.wait("READY", after=t_reloading, proc=proc)[1]


def _failed_reload_status(sub, proc, needle: str) -> dict:
    messages = _collect(sub, lambda m: any(t == "status" and needle in b["message"] for t, b in m), 20, proc)
    failed = [b for t, b in messages if t == "status" and needle in b["message"]]
    assert failed, [b["message"] for t, b in messages if t == "status"]
    return failed[0], messages


def test_ready_status_watchdog_reload_and_stopping(notify, random_model, other_model, long_wav, free_endpoint,
                                                   tmp_path):
    """READY after the model and first audio; STATUS lines; WATCHDOG every half period; SIGHUP
    with a broken config, then a corrupt model -> RELOADING, READY, old model kept and said in
    status; SIGHUP with a valid config naming a new model -> used from the next hop, no message
    lost; SIGTERM -> STOPPING, exit 0 fast."""
    model = tmp_path / "current"
    _install_model(random_model, model)
    config = tmp_path / "streamemo.toml"
    config.write_text(f'[model]\npath = "{model}"\n')
    old_id, new_id = _model_id(random_model), _model_id(other_model)
    proc = _daemon("--config", str(config), "--source", str(long_wav), "--bind", free_endpoint, env=notify.env())
    sub = _subscriber(free_endpoint)
    try:
        t_ready, ready = notify.wait("READY", proc=proc)
        assert ready["READY"] == "1" and "listening to file:long.wav" in ready["STATUS"], ready
        assert any("loading model" in f.get("STATUS", "") for t, f in notify.received if t < t_ready)

        # Watchdog: from the loop at half of WATCHDOG_USEC.
        time.sleep(3.0)
        pings = notify.times("WATCHDOG", start=t_ready)
        gaps = np.diff(pings)
        assert len(pings) >= 4, pings
        assert 0.3 < float(np.median(gaps)) < 0.8 and gaps.max() < WATCHDOG_USEC / 1e6, gaps

        # A config file that is not TOML: nothing changes, and status says why.
        config.write_text("[model\n")
        ready_again = _hup(proc, notify)
        assert "reload failed" in ready_again["STATUS"] and old_id in ready_again["STATUS"]
        failed, messages = _failed_reload_status(sub, proc, "not valid TOML")
        assert failed["model"] == old_id

        # A valid config, but the model file is corrupt: the old model keeps running.
        config.write_text(f'[model]\npath = "{model}"\n')
        weights, _ = model_paths(model)
        weights.write_bytes(weights.read_bytes()[:1000])
        ready_again = _hup(proc, notify)
        assert "reload failed" in ready_again["STATUS"] and old_id in ready_again["STATUS"]
        failed, more = _failed_reload_status(sub, proc, "SHA-256 differs")
        messages += more
        assert failed["model"] == old_id

        # The config names a valid new model: used from the next hop on.
        config.write_text(f'[model]\npath = "{other_model}"\n')
        ready_again = _hup(proc, notify)
        assert new_id in ready_again["STATUS"], ready_again
        messages += _collect(sub, lambda m: sum(t == "emotion" and b["model"] == new_id for t, b in m) >= 3, 20, proc)
    finally:
        t_term = time.monotonic()
        code, err = _stop(proc)
    assert code == 0, err  # _stop kills after 5 s, so a hang fails here too
    _, stopping = notify.wait("STOPPING", after=t_term, timeout=2)
    assert stopping["STOPPING"] == "1"
    assert err.count("reload failed") == 2

    emotion = [b for t, b in messages if t == "emotion"]
    seqs = [b["seq"] for b in emotion]
    assert len(seqs) > 6 and seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no message may be lost across reloads"
    models = [b["model"] for b in emotion]
    switch = models.index(new_id)
    assert switch > 0 and set(models[:switch]) == {old_id} and set(models[switch:]) == {new_id}, models
    # From the next hop: the new model's first window ends one hop after the old model's last.
    assert emotion[switch]["t_audio"] - emotion[switch - 1]["t_audio"] == pytest.approx(PipelineConfig().hop_s, abs=1e-6)


def test_stalled_pipeline_stops_the_watchdog(notify, random_model, long_wav, free_endpoint):
    """An input whose read() hangs (tests/stalling_daemon.py) hangs the processing loop itself;
    the process lives on, but the WATCHDOG pings stop, which is what makes systemd restart a
    hung daemon."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("stalling_daemon.py")), "2",
                             "--source", str(long_wav), "--model", str(random_model), "--bind", free_endpoint],
                            env=notify.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    quiet = 3 * WATCHDOG_USEC / 1e6  # six missed pings
    try:
        t_ready, _ = notify.wait("READY", proc=proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pings = notify.times("WATCHDOG")
            if pings and time.monotonic() - pings[-1] > quiet:
                break
            time.sleep(0.2)
        assert len(notify.times("WATCHDOG", start=t_ready)) >= 2, "pings must flow before the stall"
        last = notify.times("WATCHDOG")[-1]
        assert time.monotonic() - last > quiet, "the pings never stopped"
        time.sleep(1.0)
        assert notify.times("WATCHDOG")[-1] == last, "and they stay stopped"
        assert proc.poll() is None, "the process is alive; only its loop is stuck"
    finally:
        proc.kill()  # a hung loop does not answer SIGTERM: systemd escalates the same way
        _, err = proc.communicate(timeout=10)
    assert "stalling the processing loop on purpose" in err
