"""Shared fixtures: a small random model, generated speech, free ports, the virtual microphone."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zmq

sys.path.insert(0, str(Path(__file__).parent))  # for tests/pulse.py

from pulse import PulseServer, pulse_available  # noqa: E402

from streamemo.protocol import decode  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
STREAMEMO = [sys.executable, "-m", "streamemo"]


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    """A small untrained CNN-LSTM saved like a real one: tests of the plumbing need a model,
    not a good one. Never shipped in models/. Like the shipped model, it was "trained" on
    speaker-normalised features, so every path it runs through adapts to the voice, and
    streams (stream/columns.py) at the default hop."""
    import numpy as np
    import torch

    from streamemo import EMOTIONS
    from streamemo.features import FrontendSpec
    from streamemo.model import Model, save_model
    from streamemo.features import BandStats

    torch.manual_seed(0)
    model = Model.create("random", EMOTIONS, 2.0, FrontendSpec(), "cnn_lstm", {"time_padding": "valid"})
    model.speaker_norm = BandStats(np.full(64, -7.0), np.full(64, 2.5))
    path = tmp_path_factory.mktemp("models") / "random"
    save_model(model, path)
    return path


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    """About 4 s of English speech from espeak-ng at its native 22050 Hz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian: espeak-ng); `make test` installs it")
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "I cannot believe you did that. This is the best day of my whole life."],
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def speech_and_silence_wav(tmp_path_factory, speech_wav) -> Path:
    """3 s of silence, the espeak-ng speech, 3 s of silence: one 16 kHz file with windows the
    voice gate lets through and windows it does not."""
    import soxr

    speech, rate = sf.read(speech_wav, dtype="float32")
    speech = soxr.resample(speech, rate, 16000).astype(np.float32)
    silence = np.zeros(3 * 16000, np.float32)
    path = tmp_path_factory.mktemp("audio") / "speech_and_silence.wav"
    sf.write(path, np.concatenate([silence, speech, silence]), 16000, subtype="PCM_16")
    return path


@pytest.fixture
def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def pulse():
    """A private PulseAudio server whose default source is a null sink's monitor."""
    reason = pulse_available()
    if reason:
        pytest.skip(f"virtual microphone unavailable: {reason}")
    server = PulseServer().start()
    yield server
    server.stop()


@pytest.fixture
def no_audio_env(tmp_path) -> dict:
    """An environment in which PortAudio finds no audio system: no sound server to reach
    (and, on CI machines, no sound card)."""
    env = dict(os.environ)
    env["PULSE_SERVER"] = f"unix:{tmp_path}/no-such-socket"
    env["PULSE_RUNTIME_PATH"] = str(tmp_path)
    listed = subprocess.run([*STREAMEMO, "devices"], env=env, capture_output=True, text=True, timeout=60)
    if "no audio input device" not in listed.stderr:
        pytest.skip("this machine has sound hardware, so 'no audio system' cannot be staged")
    return env


# --- driving the real daemon: a subprocess and a real SUB socket ------------------------------


def _daemon(*args, env=None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*STREAMEMO, "run", *args], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, **kwargs)


def _subscriber(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def _collect(sock, until, timeout_s: float, proc=None) -> list[tuple[str, dict]]:
    """Messages until `until(messages)` is true, the daemon exits, or the timeout."""
    messages, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline and not until(messages):
        if sock.poll(100):
            messages.append(decode(sock.recv_multipart()))
        elif proc is not None and proc.poll() is not None:
            while sock.poll(300):
                messages.append(decode(sock.recv_multipart()))
            break
    return messages


def _stop(proc: subprocess.Popen) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def corpus(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (the corpora live in ../shared/data beside the project)")
    return path


@pytest.fixture(scope="session")
def encoder_model(tmp_path_factory) -> Path:
    """An untrained head on the shipped Whisper encoder, saved like the default model (which
    is one): its frontend, blocks, card checks and speaker adaptation are real; its
    judgement is not."""
    import numpy as np
    import torch

    from streamemo import EMOTIONS
    from streamemo.features import BandStats
    from streamemo.model import Model, save_model
    from streamemo.train.recipe import whisper_frontend

    torch.manual_seed(0)
    spec = whisper_frontend()
    model = Model.create("random-encoder", EMOTIONS, 1.92, spec, "encoder_head")
    model.speaker_norm = BandStats(np.full(spec.n_features, 0.5), np.full(spec.n_features, 0.4))
    path = tmp_path_factory.mktemp("models") / "random-encoder"
    save_model(model, path)
    return path
