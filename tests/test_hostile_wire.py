"""Hostile input on the wire, round two (issue 31): values out of range or inconsistent,
timeouts and sizes, a full disk under `subscribe --record`, IPv6 addresses, floods of
subscriptions and megabyte topics.

Everything runs the real thing: messages over real ZeroMQ sockets into `streamemo.Client`,
the dashboard's `EndpointState` and `streamemo subscribe` in a subprocess; the publisher
and the proxy's forwarder on real sockets; the recorder on a real file whose size the
kernel limits (RLIMIT_FSIZE: a write past it is cut short, then refused, as on a full disk).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import resource
import select
import signal
import socket
import subprocess
import threading
import time

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zmq.utils.monitor import recv_monitor_message

from conftest import STREAMEMO
from feedgen import emotion_body, one_hot, status_body
from streamemo import Client
from streamemo.dashboard.state import EndpointState
from streamemo.forward import Forwarder
from streamemo.protocol import EmotionMessage, ProtocolError, decode, decode_message, encode
from streamemo.publish import Publisher

pytestmark = pytest.mark.timeout(120)

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MANY = settings(max_examples=300, deadline=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _published_to(endpoint: str, start):
    """A PUB socket bound at `endpoint` and the subscriber `start()` launches against it; on
    the way out the subscriber is killed if it still runs and the socket is closed."""
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint)
    proc = start()
    try:
        yield pub, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        pub.close()


def _subscribe(endpoint: str, *args: str) -> subprocess.Popen:
    """`streamemo subscribe --connect endpoint ARGS`, its output piped; SIGINT as a terminal's
    Ctrl-C gives it, whatever this runner inherited (a background job ignores it)."""
    return subprocess.Popen([*STREAMEMO, "subscribe", "--connect", endpoint, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _frames(topic: str, body: dict) -> list[bytes]:
    return [topic.encode(), json.dumps({"v": 2, **body}).encode()]


def _emotion(**changes) -> dict:
    return {**emotion_body(4, one_hot("sad"), t_capture=1_700_000_000.0), **changes}


def _status(**changes) -> dict:
    return {**status_body(4, t_publish=1_700_000_000.0), **changes}


def _one_line(text: str, *needles: str) -> None:
    assert "Traceback" not in text, text
    assert len(text.strip().splitlines()) == 1, text
    for needle in needles:
        assert needle in text, text


# --- 3. one validation for every reader -------------------------------------------------------

# What the issue found every reader accepting, and what the error must name.
BAD = [
    ("emotion", _emotion(arousal=50), "'arousal' must be from -1 to 1"),
    ("emotion", _emotion(valence=-50), "'valence' must be from -1 to 1"),
    ("emotion", _emotion(level_db=1e308), "'level_db' must be from -200 to 40"),
    ("emotion", _emotion(probs=[1.0] * 8), "'probs' must sum to 1, got 8"),
    ("emotion", _emotion(raw=[0.01] * 8), "'raw' must sum to 1"),
    ("emotion", _emotion(t_audio=-1.0), "'t_audio' must be from 0"),
    ("emotion", _emotion(seq=-3), "'seq' must be from 0"),
    ("emotion", _emotion(top="HACKED"), "'top' is 'HACKED', which is not one of the labels"),
    ("emotion", _emotion(t_capture=-5e17), "'t_capture' must be from 0"),  # a "latency" of 5e20 ms
    ("emotion", _emotion(labels=["sad"] * 8), "'labels' names a label twice"),
    ("emotion", _emotion(source="\ud800"), "'source' is not valid Unicode"),
    ("status", _status(sample_rate=-5), "'sample_rate' must be from 0"),
    ("status", _status(speech_share=5), "'speech_share' must be from 0 to 1"),
    ("status", _status(proc_ms_p99=5e20), "'proc_ms_p99' must be from 0"),
    ("status", _status(uptime_s=-1.0), "'uptime_s' must be from 0"),
]


@pytest.mark.parametrize("topic, body, needle", BAD, ids=[n.split("'")[1] for _, _, n in BAD])
def test_each_bad_value_is_one_protocol_error_naming_it(topic, body, needle):
    frames = _frames(topic, body)
    with pytest.raises(ProtocolError, match=None) as caught:
        decode(frames)
    assert needle in str(caught.value)
    state = EndpointState("tcp://x:1")  # the dashboard reads through the same decoding
    assert state.receive(frames, 2e9) is False and state.malformed == 1
    assert needle in state.view(2e9).last_error


def test_client_subscribe_and_dashboard_skip_every_bad_value(free_endpoint):
    """One publisher sends each bad message, then a valid one, over a real socket: the client
    counts them all and returns only the valid one; `streamemo subscribe` prints only it."""
    valid = encode("emotion", _emotion(seq=99))
    with _published_to(free_endpoint, lambda: _subscribe(free_endpoint, "--count", "1")) as (pub, proc):
        with Client(free_endpoint) as client:
            deadline, got = time.monotonic() + 30, None
            while got is None:
                assert time.monotonic() < deadline
                for topic, body, _ in BAD:
                    pub.send_multipart(_frames(topic, body))
                pub.send_multipart(valid)
                got = client.receive(timeout=0.2)
            assert isinstance(got, EmotionMessage) and got.seq == 99
            assert client.malformed % len(BAD) == 0 and client.malformed >= len(BAD)
            while proc.poll() is None and time.monotonic() < deadline:
                for topic, body, _ in BAD:
                    pub.send_multipart(_frames(topic, body))
                pub.send_multipart(valid)
                time.sleep(0.1)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert json.loads(out)["seq"] == 99 and "Traceback" not in err


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 0.5, 5, 50, -50, 1e20, -1e20, 2**33, 1e308]),
)
EMOTION_NUMBERS = ["seq", "t_capture", "t_publish", "t_audio", "confidence", "arousal", "valence", "speech", "level_db"]
STATUS_NUMBERS = ["seq", "t_publish", "sample_rate", "model_rate", "uptime_s", "overflows", "dropped_samples",
                  "repaired_samples", "messages_sent", "hop_s", "proc_ms_p50", "proc_ms_p99", "speech_share", "adapted_s"]
# What a reader may rely on, in words a reader would use: not the protocol's own table.
SENSIBLE = {"arousal": (-1, 1), "valence": (-1, 1), "confidence": (0, 1), "speech": (0, 1), "speech_share": (0, 1),
            "level_db": (-200, 100), "hop_s": (1e-6, 1e4), "proc_ms_p50": (0, 1e8), "proc_ms_p99": (0, 1e8),
            "sample_rate": (0, 1e8), "model_rate": (1, 1e8)}


@MANY
@given(topic=st.sampled_from(["emotion", "status"]), data=st.data())
def test_whatever_decodes_is_sensible(topic, data):
    """Any numbers in any numeric fields, any probabilities and any top label: what decodes
    is in range (times and counts not negative, shares within 0 to 1, probabilities summing
    to 1, the top among the labels); the rest is a ProtocolError."""
    names = EMOTION_NUMBERS if topic == "emotion" else STATUS_NUMBERS
    body = _emotion() if topic == "emotion" else _status()
    for name in data.draw(st.lists(st.sampled_from(names), max_size=4)):
        body[name] = data.draw(NUMBERS)
    if topic == "emotion":
        if data.draw(st.booleans()):
            body["probs"] = data.draw(st.lists(st.floats(0, 1), min_size=8, max_size=8))
        if data.draw(st.booleans()):
            body["top"] = data.draw(st.sampled_from([*body["labels"], "HACKED", ""]))
    try:
        message = decode_message([topic.encode(), json.dumps({"v": 2, **body}, allow_nan=True).encode()])
    except ProtocolError:
        return
    for name in names:
        value = getattr(message, name)
        if value is None:
            continue
        low, high = SENSIBLE.get(name, (0, 2**63))
        assert math.isfinite(value) and low <= value <= high, (name, value)
    if topic == "emotion":
        assert abs(sum(message.probs) - 1) < 0.02 and (message.top is None or message.top in message.labels)


def test_a_daemon_publishing_a_file_name_that_is_not_utf8_sends_valid_text():
    """A source name with a lone surrogate (a file name that is not UTF-8, as Python holds it)
    is sent as U+FFFD, so the message decodes for every reader."""
    topic, body = decode(encode("emotion", _emotion(source="talk-\udcff.wav")))
    assert body["source"] == "talk-\ufffd.wav"


# --- 8. bounded logs: a 10 MiB topic, a flood of bad messages --------------------------------------


def test_megabyte_topics_and_floods_are_logged_in_a_few_short_lines(free_endpoint):
    """Three messages with 10 MiB topic frames once wrote 31 MB to standard error, and 2,000
    bad messages were a line each. Now each error is short and a flood is summed up."""
    with _published_to(free_endpoint, lambda: _subscribe(free_endpoint, "--topic", "emotion")) as (pub, proc):
        deadline = time.monotonic() + 60
        while not select.select([proc.stdout], [], [], 0.1)[0]:  # connected: a first message printed
            assert time.monotonic() < deadline and proc.poll() is None
            pub.send_multipart(encode("emotion", _emotion(seq=0)))
        huge = b"emotion" + b"x" * (10 << 20)
        for _ in range(3):
            pub.send_multipart([huge, b"{}"])
        for seq in range(2000):
            pub.send_multipart(_frames("emotion", _emotion(seq=seq, arousal=50)))
        pub.send_multipart(encode("emotion", _emotion(seq=5000)))
        while json.loads(proc.stdout.readline())["seq"] != 5000:
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err and "malformed message: topic frame of 10485767 bytes" in err, err[:2000]
    assert len(err) < 4000 and err.count("malformed message") <= 3, err[:4000]


# --- 4. timeouts and sizes --------------------------------------------------------------------------

TIMEOUTS = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**80), 10**400),
    st.sampled_from([math.inf, 1e20, 0, 0.0, -0.0, 1e-9, "30", b"30", True, [1]]),
)


@pytest.fixture(scope="module")
def feed():
    """A publisher with one client subscribed to it."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    publisher = Publisher(endpoint)
    client = Client(endpoint)
    assert publisher.wait_for_subscriber(10)
    yield publisher, client
    client.close()
    publisher.close(drain_s=0)


@FEW
@given(timeout=TIMEOUTS)
def test_any_timeout_is_a_wait_or_an_error_at_once(feed, timeout):
    """`Client(timeout=...)` and `receive(timeout=...)`: None, infinity and numbers of seconds
    wait (a message already waiting comes back at once, however long the timeout); NaN, a
    negative number or a string is a TypeError or ValueError before any wait, naming it."""
    publisher, client = feed
    try:
        Client("tcp://127.0.0.1:1", timeout=timeout).close()
        valid = True
    except (TypeError, ValueError) as e:
        assert "timeout" in str(e) and repr(timeout)[:10] in str(e)
        valid = False
    publisher.send(EmotionMessage.from_body({"v": 2, **_emotion(seq=7)}))
    assert client.socket.poll(5000)  # it has arrived
    if valid:
        message = client.receive(timeout=timeout)
        assert message is not None and message.seq == 7
    else:
        with pytest.raises((TypeError, ValueError), match="timeout"):
            client.receive(timeout=timeout)
        assert client.receive(timeout=1).seq == 7


@pytest.mark.parametrize("args, needle", [
    (["--timeout", "nan"], "--timeout must be"),
    (["--timeout", "-1"], "--timeout must be"),
    (["--timeout", "0"], "--timeout must be"),
    (["--rotate-mb", "nan", "--record", "x.jsonl"], "--rotate-mb must be"),
    (["--rotate-mb", "inf", "--record", "x.jsonl"], "--rotate-mb must be"),
    (["--rotate-mb", "1e-9", "--record", "x.jsonl"], "--rotate-mb must be a number from 0.004"),
    (["--rotate-mb", "5"], "--rotate-mb applies to a recording; give --record FILE"),
    (["--keep", "2"], "--keep applies to a recording"),
    (["--keep", "-1", "--record", "x.jsonl"], "--keep must be"),
    (["--count", "-1"], "--count must be a whole number from 1"),
    (["--count", "0"], "--count must be"),
])
def test_subscribe_flags_out_of_range_are_one_line_and_exit_2(tmp_path, args, needle):
    out = subprocess.run([*STREAMEMO, "subscribe", "--connect", "tcp://127.0.0.1:1", *args], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2
    _one_line(out.stderr, needle)
    assert not (tmp_path / "x.jsonl").exists()


def test_subscribe_timeout_inf_waits_and_says_where_it_listens(free_endpoint):
    """`--timeout inf` (an OverflowError before) waits for ever; standard error says where it
    listens, that nothing has come yet, then that messages arrive; standard output holds
    only the JSON line."""
    with _published_to(free_endpoint,
                       lambda: _subscribe(free_endpoint, "--timeout", "inf", "--count", "1")) as (pub, proc):
        time.sleep(7)  # past the notice that nothing has come
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            pub.send_multipart(encode("emotion", _emotion(seq=1)))
            time.sleep(0.1)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert json.loads(out)["seq"] == 1
    lines = err.strip().splitlines()
    assert lines[0] == f"streamemo subscribe: listening to {free_endpoint} for emotion and status messages"
    assert "nothing yet from" in lines[1] and "is the daemon running" in lines[1]
    assert lines[2] == "streamemo subscribe: messages arriving from feedgen" and len(lines) == 3


def _record(endpoint: str, path, *args, limit_bytes: int | None = None) -> subprocess.Popen:
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen([*STREAMEMO, "subscribe", "--connect", endpoint, "--record", str(path), *args],
                            stderr=subprocess.PIPE, text=True, preexec_fn=limit if limit_bytes else None)


def _publish_until(pub, proc, seconds: float, start: int = 0) -> int:
    """Sends valid messages to `pub` until `proc` exits or `seconds` pass; returns how many."""
    seq, deadline = start, time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        pub.send_multipart(encode("emotion", _emotion(seq=seq, t_audio=seq * 0.24)))
        seq += 1
        time.sleep(0.002)
    return seq - start


def _whole_lines(path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "a half-written last line"
    return [json.loads(line) for line in text.splitlines()]


def test_a_full_disk_ends_a_recording_in_one_line_with_every_line_whole(free_endpoint, tmp_path):
    """The kernel lets the recorder's file grow to 20,000 bytes: the write that crosses it is
    cut short, the next refused. Exit 1, one line naming the file and the cause, and the file
    holds only whole lines, as many as the line says."""
    record = tmp_path / "session.jsonl"
    with _published_to(free_endpoint, lambda: _record(free_endpoint, record, limit_bytes=20_000)) as (pub, proc):
        _publish_until(pub, proc, 60)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 1, err
    error = err.strip().splitlines()[-1]
    _one_line(error, f"--record {record}: File too large after", "each line of them whole")
    lines = _whole_lines(record)
    assert f"after {len(lines)} messages" in error and record.stat().st_size <= 20_000
    assert [m["seq"] for m in lines] == list(range(lines[0]["seq"], lines[0]["seq"] + len(lines)))


def test_rotation_says_what_it_removed(free_endpoint, tmp_path):
    """Rotating every 10 kB and keeping one old file: the summary counts the messages that
    went with the removed files, and those kept are whole."""
    record = tmp_path / "session.jsonl"
    with _published_to(free_endpoint,
                       lambda: _record(free_endpoint, record, "--rotate-mb", "0.01", "--keep", "1")) as (pub, proc):
        _publish_until(pub, proc, 3)
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    kept = _whole_lines(record.with_name("session.jsonl.1")) + _whole_lines(record)
    summary = err.strip().splitlines()[-1]
    found = re.fullmatch(r"streamemo subscribe: recorded (\d+) messages to \S+; (\d+) of them were in older files "
                         r"that rotation removed \(--keep 1 keeps (\d+)\)", summary)
    assert found, summary
    total, removed, kept_count = map(int, found.groups())
    assert kept_count == len(kept)
    assert removed > 0 and total == removed + len(kept), summary
    assert not record.with_name("session.jsonl.2").exists()


# --- 7. IPv6 addresses -------------------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_addresses_bind_and_connect():
    """`--bind tcp://[::1]:PORT` failed with "No such device" and the client never connected:
    the sockets never had IPv6 enabled. A publisher, the client and `streamemo subscribe`."""
    endpoint = f"tcp://[::1]:{_free_port()}"
    publisher = Publisher(endpoint)
    try:
        with Client(endpoint, topics=["emotion"]) as client:
            assert publisher.wait_for_subscriber(10)
            publisher.send(EmotionMessage.from_body({"v": 2, **_emotion(seq=3)}))
            assert client.receive(timeout=10).seq == 3
        proc = subprocess.Popen([*STREAMEMO, "subscribe", "--connect", endpoint, "--count", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            publisher.send(EmotionMessage.from_body({"v": 2, **_emotion(seq=4)}))
            time.sleep(0.1)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and json.loads(out)["seq"] == 4, err
    finally:
        publisher.close(drain_s=0)


# --- 8. what subscribers can make a publisher hold -----------------------------------------------------


def test_only_subscriptions_to_streamemo_topics_travel_through_the_proxy():
    """A peer floods the proxy with 5,000 random subscriptions: none reaches the daemon
    upstream (here a bare XPUB socket that counts them), and a real one still does."""
    ctx = zmq.Context.instance()
    upstream = ctx.socket(zmq.XPUB)
    upstream.setsockopt(zmq.XPUB_VERBOSE, 1)  # count every subscription that arrives, repeats too
    port = upstream.bind_to_random_port("tcp://127.0.0.1")
    backend = f"tcp://127.0.0.1:{_free_port()}"
    forwarder = Forwarder([f"tcp://127.0.0.1:{port}"], backend)
    stop = threading.Event()
    relay = threading.Thread(target=forwarder.run, args=(stop,))
    relay.start()
    attacker = ctx.socket(zmq.XSUB)
    attacker.setsockopt(zmq.LINGER, 0)
    attacker.connect(backend)
    rng = random.Random(0)
    try:
        time.sleep(0.3)
        for _ in range(5000):
            attacker.send(b"\x01" + bytes(rng.randrange(256) for _ in range(40)))
        attacker.send(b"\x01emotion")
        arrived, deadline = [], time.monotonic() + 20
        while b"\x01emotion" not in arrived and time.monotonic() < deadline:
            if upstream.poll(100):
                arrived.append(upstream.recv())
        assert arrived == [b"\x01emotion"], (len(arrived), arrived[:3])
    finally:
        stop.set()
        relay.join()
        forwarder.close()
        attacker.close()
        upstream.close(linger=0)


def test_a_peer_sending_frames_longer_than_a_subscription_is_disconnected():
    """512-byte subscriptions (the issue's 60,000 of them held 485 MiB in the daemon): the
    first one ends the peer's connection; a subscriber of ordinary size is served."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    publisher = Publisher(endpoint)
    ctx = zmq.Context.instance()
    attacker = ctx.socket(zmq.XSUB)
    attacker.setsockopt(zmq.LINGER, 0)
    monitor = attacker.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    attacker.connect(endpoint)
    try:
        events, deadline = [], time.monotonic() + 20
        while zmq.EVENT_HANDSHAKE_SUCCEEDED not in events:
            assert time.monotonic() < deadline
            if monitor.poll(100):
                events.append(recv_monitor_message(monitor)["event"])
        attacker.send(b"\x01" + os.urandom(512))
        while zmq.EVENT_DISCONNECTED not in events:
            assert time.monotonic() < deadline, "the peer is still connected"
            publisher.send(EmotionMessage.from_body({"v": 2, **_emotion()}))
            if monitor.poll(100):
                events.append(recv_monitor_message(monitor)["event"])
        with Client(endpoint, topics=["emotion"]) as client:
            assert publisher.wait_for_subscriber(10)
            publisher.send(EmotionMessage.from_body({"v": 2, **_emotion(seq=11)}))
            assert client.receive(timeout=10).seq == 11
    finally:
        attacker.disable_monitor()
        monitor.close(linger=0)
        attacker.close()
        publisher.close(drain_s=0)
