"""Acceptance 4: who may read the results. CURVE keys from `streamemo keys`; a subscriber with
an allowed key receives, one with an unknown key or none receives nothing; a bind reachable
from other machines without keys is refused.

The daemon binds 0.0.0.0 (every interface) but the subscribers connect over loopback: the
non-loopback bind is real, and no traffic leaves the machine."""

import socket
import stat
import subprocess

import pytest
import zmq

from conftest import STREAMEMO, _collect, _daemon, _stop
from streamemo.security import CurveClient, is_local_endpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keys(directory, *names) -> None:
    for name in names:
        result = subprocess.run([*STREAMEMO, "keys", name, "--dir", str(directory)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr


def _sub(endpoint: str, curve: CurveClient | None = None) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.secure(sock)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


@pytest.mark.parametrize("endpoint, local", [
    ("tcp://127.0.0.1:5556", True), ("tcp://127.5.6.7:1", True), ("tcp://localhost:5556", True),
    ("tcp://[::1]:5556", True), ("ipc:///run/streamemo.ipc", True), ("inproc://x", True),
    ("tcp://0.0.0.0:5556", False), ("tcp://*:5556", False), ("tcp://192.168.1.10:5556", False),
    ("tcp://eth0:5556", False), ("tcp://example.org:5556", False), ("ws://127.0.0.1:5556", False),
])
def test_what_counts_as_this_machine_only(endpoint, local):
    assert is_local_endpoint(endpoint) is local


def test_keys_command_writes_a_private_secret(tmp_path):
    _keys(tmp_path, "server")
    public, secret = tmp_path / "server.key", tmp_path / "server.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "secret-key" not in public.read_text() and "secret-key" in secret.read_text()
    again = subprocess.run([*STREAMEMO, "keys", "server", "--dir", str(tmp_path)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 1 and "already exists" in again.stderr


@pytest.mark.parametrize("command", [["run", "--bind"], ["proxy", "--frontend", "tcp://127.0.0.1:1", "--backend"]])
def test_non_loopback_bind_without_keys_is_refused(command):
    """Refused before anything is loaded or bound: the message says why and the three ways out."""
    result = subprocess.run([*STREAMEMO, *command, f"tcp://0.0.0.0:{_free_port()}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "refusing to bind tcp://0.0.0.0" in result.stderr and "without CURVE" in result.stderr
    assert "streamemo keys" in result.stderr and "--insecure" in result.stderr
    assert "Traceback" not in result.stderr


def test_half_a_key_setup_is_refused(tmp_path):
    _keys(tmp_path, "server")
    result = subprocess.run([*STREAMEMO, "run", "--bind", f"tcp://0.0.0.0:{_free_port()}",
                             "--curve-secret", str(tmp_path / "server.key")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--curve-clients" in result.stderr, result.stderr


def test_only_allowed_keys_receive(tmp_path, random_model, speech_and_silence_wav):
    keys, clients = tmp_path / "keys", tmp_path / "clients"
    _keys(keys, "server", "alice", "mallory")
    clients.mkdir()
    (clients / "alice.key").write_bytes((keys / "alice.key").read_bytes())
    port = _free_port()
    proc = _daemon("--source", str(speech_and_silence_wav), "--model", str(random_model), "--bind", f"tcp://0.0.0.0:{port}",
                   "--curve-secret", str(keys / "server.key_secret"), "--curve-clients", str(clients))
    endpoint = f"tcp://127.0.0.1:{port}"
    alice = _sub(endpoint, CurveClient(keys / "server.key", keys / "alice.key_secret"))
    mallory = _sub(endpoint, CurveClient(keys / "server.key", keys / "mallory.key_secret"))
    plain = _sub(endpoint)
    # The same through the command line: `streamemo subscribe` with her keys, and with the wrong ones.
    def subscribe(secret: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*STREAMEMO, "subscribe", "--connect", endpoint, "--curve-server", str(keys / "server.key"),
                                 "--curve-secret", str(keys / secret), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    cli_alice = subscribe("alice.key_secret", "--topic", "emotion", "--count", "2", "--timeout", "30")
    cli_mallory = subscribe("mallory.key_secret", "--timeout", "8")
    try:
        received = _collect(alice, lambda m: sum(t == "emotion" for t, _ in m) >= 3, 60, proc)
        assert sum(t == "emotion" for t, _ in received) >= 3, "the allowed key must receive"
        poller = zmq.Poller()
        for refused in (mallory, plain):
            poller.register(refused, zmq.POLLIN)
        assert poller.poll(1500) == [], "an unknown key, or none, must receive nothing"
        assert proc.poll() is None, "still publishing while they waited"
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    # Two clients knocked with mallory's key, again and again: the operator reads it once.
    assert err.count("refused a subscriber whose key") == 1
    out, _ = cli_alice.communicate(timeout=30)
    assert cli_alice.returncode == 0 and out.count('"topic":"emotion"') == 2, out
    _, cli_err = cli_mallory.communicate(timeout=30)
    assert cli_mallory.returncode == 1 and "nothing received" in cli_err
