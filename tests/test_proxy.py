"""`streamemo proxy`: many daemons to many subscribers, the proxy being the one socket that
faces the network (0.0.0.0 with CURVE here; subscribers connect over loopback)."""

import socket
import subprocess

import zmq

from conftest import STREAMEMO, _collect, _daemon, _stop
from streamemo.security import CurveClient


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _keys(directory, *names) -> None:
    for name in names:
        subprocess.run([*STREAMEMO, "keys", name, "--dir", str(directory)], check=True, capture_output=True, timeout=60)


def _curve_sub(endpoint: str, curve: CurveClient) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    curve.secure(sock)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def test_two_daemons_through_one_proxy(tmp_path, random_model, speech_wav, speech_and_silence_wav):
    """Every message of both daemons arrives, each stream whole and in order; an unknown key
    gets nothing; SIGTERM stops the proxy at once with exit 0."""
    keys, clients = tmp_path / "keys", tmp_path / "clients"
    _keys(keys, "proxy", "alice", "mallory")
    clients.mkdir()
    (clients / "alice.key").write_bytes((keys / "alice.key").read_bytes())
    upstream = {str(speech_wav): _free_endpoint(), str(speech_and_silence_wav): _free_endpoint()}
    # As fast as possible, once someone subscribes: the subscription travels through the proxy.
    daemons = [_daemon("--source", wav, "--no-realtime", "--wait-subscriber", "60", "--model", str(random_model),
                       "--bind", endpoint) for wav, endpoint in upstream.items()]
    backend = _free_endpoint().replace("127.0.0.1", "0.0.0.0")
    proxy = subprocess.Popen([*STREAMEMO, "proxy", *[a for e in upstream.values() for a in ("--frontend", e)],
                              "--backend", backend, "--curve-secret", str(keys / "proxy.key_secret"),
                              "--curve-clients", str(clients)], stderr=subprocess.PIPE, text=True)
    endpoint = backend.replace("0.0.0.0", "127.0.0.1")
    alice = _curve_sub(endpoint, CurveClient(keys / "proxy.key", keys / "alice.key_secret"))
    mallory = _curve_sub(endpoint, CurveClient(keys / "proxy.key", keys / "mallory.key_secret"))
    try:
        messages = _collect(alice, lambda m: all(d.poll() is not None for d in daemons), 90)
        messages += _collect(alice, lambda m: False, 1.0)  # the last ones in flight
        assert not mallory.poll(200), "an unknown key gets nothing through the proxy"
        assert proxy.poll() is None
    finally:
        for daemon in daemons:
            assert _stop(daemon)[0] == 0
        code, err = _stop(proxy)
    assert code == 0, err  # _stop kills after 5 s, so a hang fails here too
    assert "forwarding" in err and "(CURVE)" in err
    for wav in upstream:
        seqs = [b["seq"] for t, b in messages if t == "emotion" and b["source"] == wav]
        assert len(seqs) >= 5 and seqs == list(range(len(seqs))), (wav, seqs)
        final = [b for t, b in messages if t == "status" and b["source"] == wav][-1]
        assert final["input_state"] == "ended" and final["messages_sent"] == len(seqs)
