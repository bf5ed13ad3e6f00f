"""`streamemo mqtt` against a real mosquitto broker (Debian's), started here on a free loopback
port with its own config, and a real daemon reading a file: what Home Assistant would see
(retained discovery configs whose templates render the state, availability, the state
itself), the last will of a bridge killed with SIGKILL, offline when the daemon stops, a
broker that refuses a login, and TLS."""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import jinja2
import paho.mqtt.client as mqtt
import pytest

from conftest import ROOT, STREAMEMO, _daemon, _stop
from test_service_units import _analyze, _copy_for_this_machine, needs_analyze

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (Debian: mosquitto); "
                                                               "`make test` installs it")
ENTITIES = {"sensor/kitchen/emotion", "sensor/kitchen/probability", "sensor/kitchen/arousal",
            "sensor/kitchen/valence", "binary_sensor/kitchen/speech"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:PORT with the given extra config lines, in its own folder."""

    def __init__(self, folder: Path, *lines: str, port: int | None = None):
        self.port = port or _free_port()
        conf = folder / "mosquitto.conf"
        # Started as root, mosquitto becomes the user `mosquitto`, who cannot read this test's
        # folder: it stays whoever started it.
        conf.write_text("\n".join([f"listener {self.port} 127.0.0.1", "persistence false",
                                   f"user {getpass.getuser()}", *lines]) + "\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read()
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start listening")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (Debian: mosquitto); `make test` installs it")
    server = Broker(tmp_path, "allow_anonymous true")
    yield server
    server.stop()


class Watcher:
    """A paho subscriber, as Home Assistant is one: every message with its retain flag."""

    def __init__(self, broker: Broker, topic: str = "#", tls: dict | None = None, **login):
        self.messages: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if login:
            self.client.username_pw_set(login["username"], login["password"])
        if tls:
            self.client.tls_set(**tls)
        self.client.on_message = lambda c, u, m: self._add(m)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "the test's subscriber could not subscribe"

    def _add(self, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def seen(self) -> list[tuple[str, str, bool]]:
        with self.lock:
            return list(self.messages)

    def wait(self, predicate, timeout: float, what: str) -> list[tuple[str, str, bool]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.seen()):
                return self.seen()
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout} s; got {self.seen()}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _bridge(broker: Broker, *args: str, env=None) -> subprocess.Popen:
    return subprocess.Popen([*STREAMEMO, "mqtt", "--broker", broker.address, "--node-id", "kitchen", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _availability(messages) -> list[str]:
    return [payload for topic, payload, _ in messages if topic == "streamemo/kitchen/availability"]


def _states(messages) -> list[dict]:
    return [json.loads(payload) for topic, payload, _ in messages if topic == "streamemo/kitchen/state"]


def _render(template: str, state: dict) -> str:
    """A value template rendered as Home Assistant renders it: Jinja, value_json the payload."""
    return jinja2.Environment().from_string(template).render(value_json=state)


@needs_mosquitto
def test_home_assistant_discovers_the_sensors_and_sees_a_killed_bridge_offline(
        broker, random_model, speech_and_silence_wav, free_endpoint, tmp_path):
    watcher = Watcher(broker, "streamemo/#")
    # The daemon waits for its first subscriber (the bridge), then reads 3 s of silence, 4 s of
    # speech and 3 s of silence in real time, and exits.
    daemon = _daemon("--source", str(speech_and_silence_wav), "--model", str(random_model), "--bind", free_endpoint,
                     "--wait-subscriber", "60")
    bridging = ("--connect", free_endpoint, "--interval", "0.5", "--stale-after", "1.5")
    first = _bridge(broker, *bridging)
    try:
        started = time.monotonic()
        seen = watcher.wait(lambda m: any(s["speech"] and s["emotion"] for s in _states(m)), 60, "voiced state")
        elapsed = time.monotonic() - started
        states = _states(seen)
        voiced = next(s for s in states if s["speech"])
        assert states[0] == {"emotion": None, "probability": None, "arousal": None, "valence": None, "speech": False}
        assert voiced["emotion"] in json.loads(Path(f"{random_model}.json").read_text())["labels"]
        assert 0 <= voiced["probability"] <= 1 and -1 <= voiced["arousal"] <= 1 and -1 <= voiced["valence"] <= 1
        assert _availability(seen)[-1] == "online"
        # On change only, and at most one per --interval: the daemon sent four a second.
        assert all(a != b for a, b in zip(states, states[1:])), states
        assert len(states) <= elapsed / 0.5 + 2

        # Home Assistant, (re)starting, subscribes and gets what was retained.
        late = Watcher(broker)
        retained = late.wait(lambda m: len([t for t, _, r in m if r and t.endswith("/config")]) == len(ENTITIES)
                             and _availability(m) and _states(m), 10, "retained discovery, availability and state")
        late.close()
        assert all(r for _, _, r in retained)
        configs = {t.removeprefix("homeassistant/").removesuffix("/config"): json.loads(p)
                   for t, p, _ in retained if t.endswith("/config")}
        assert set(configs) == ENTITIES
        for name, config in configs.items():
            assert config["unique_id"] == f"streamemo_kitchen_{name.rpartition('/')[2]}"
            assert config["state_topic"] == "streamemo/kitchen/state"
            assert config["availability_topic"] == "streamemo/kitchen/availability"
            assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
            assert config["device"]["identifiers"] == ["streamemo_kitchen"] and config["device"]["name"] == "kitchen"
            assert config["name"] and config["value_template"]
        assert ("streamemo/kitchen/availability", "online", True) in retained
        # The templates turn the state into what each entity shows; null is Home Assistant's unknown.
        template = {name.rpartition("/")[2]: config["value_template"] for name, config in configs.items()}
        assert _render(template["emotion"], voiced) == voiced["emotion"]
        assert _render(template["probability"], voiced) == str(round(voiced["probability"] * 100))
        assert float(_render(template["arousal"], voiced)) == voiced["arousal"]
        assert float(_render(template["valence"], voiced)) == voiced["valence"]
        assert _render(template["speech"], voiced) == "ON" and _render(template["speech"], states[0]) == "OFF"
        assert {_render(template[k], states[0]) for k in ("emotion", "probability", "arousal", "valence")} == {"None"}

        # Killed outright, the bridge cannot say goodbye: the broker sends its last will.
        first.kill()
        first.wait()
        watcher.wait(lambda m: _availability(m)[-1] == "offline", 10, "last will")

        # A new bridge says online again; when the daemon stops (its file ends), the bridge,
        # still running, says offline after --stale-after.
        before = len(watcher.seen())
        second = _bridge(broker, *bridging)
        try:
            watcher.wait(lambda m: "online" in _availability(m[before:]), 30, "online again")
            _, err = daemon.communicate(timeout=60)  # the file ends: the daemon exits by itself
            assert daemon.returncode == 0, err
            watcher.wait(lambda m: _availability(m[before:])[-1:] == ["offline"], 10, "offline after the daemon")
            assert second.poll() is None, second.stderr.read()
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=10)
            assert second.returncode == 0, err
            assert "offline: no message from the daemon for 1.5 s" in err and "Traceback" not in err
        finally:
            if second.poll() is None:
                second.kill()
    finally:
        watcher.close()
        if first.poll() is None:
            first.kill()
        _stop(daemon)


@needs_mosquitto
def test_a_broker_that_refuses_is_one_line_and_one_that_restarts_is_reconnected_to(tmp_path):
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "streamemo", "right horse"], check=True,
                   capture_output=True)
    passwords.chmod(0o600)
    lines = ("allow_anonymous false", f"password_file {passwords}")
    broker = Broker(tmp_path, *lines)
    secret = tmp_path / "mqtt-password"
    secret.write_text("right horse\n")
    try:
        # Nothing listening, a wrong password, no login: one line each, exit 1, at once.
        for args, env, expected in (
                (("--broker", f"127.0.0.1:{_free_port()}"), {}, "connection refused, nothing listens there"),
                (("--username", "streamemo"), {"STREAMEMO_MQTT_PASSWORD": "wrong"}, "check --username and the password"),
                ((), {}, "refused the connection: Not authorized")):
            env = {**_environ(), **env}
            result = subprocess.run([*STREAMEMO, "mqtt", "--broker", broker.address, *args], capture_output=True,
                                    text=True, env=env, timeout=30)
            assert result.returncode == 1 and expected in result.stderr, result.stderr
            assert result.stderr.count("\n") == 1 and result.stderr.startswith("streamemo mqtt: error: ")
        # A password file that is not there is a usage mistake.
        result = subprocess.run([*STREAMEMO, "mqtt", "--username", "streamemo", "--password-file",
                                 str(tmp_path / "nope")], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and "--password-file" in result.stderr and result.stderr.count("\n") == 1

        # The right password from a file: discovery arrives.
        login = dict(username="streamemo", password="right horse")
        watcher = Watcher(broker, **login)
        bridge = _bridge(broker, "--username", "streamemo", "--password-file", str(secret))
        try:
            watcher.wait(lambda m: len([t for t, _, _ in m if t.endswith("/config")]) == len(ENTITIES), 20,
                         "discovery configs")
            assert _availability(watcher.seen()) == ["offline"]  # no daemon heard from yet
            watcher.close()
            # The broker restarts, having forgotten everything: the bridge reconnects by itself
            # and says it all again. SIGTERM ends it cleanly.
            broker.stop()
            broker = Broker(tmp_path, *lines, port=broker.port)
            watcher = Watcher(broker, **login)
            watcher.wait(lambda m: len([t for t, _, _ in m if t.endswith("/config")]) == len(ENTITIES), 20,
                         "discovery configs again")
            bridge.send_signal(signal.SIGTERM)
            _, err = bridge.communicate(timeout=10)
            assert bridge.returncode == 0 and "Traceback" not in err, err
            assert "lost the MQTT broker" in err and "reconnected to the MQTT broker" in err, err
        finally:
            watcher.close()
            if bridge.poll() is None:
                bridge.kill()
    finally:
        broker.stop()


def _environ() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "STREAMEMO_MQTT_PASSWORD"}


@needs_mosquitto
def test_tls_with_the_brokers_ca(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (Debian: openssl); `make test` installs it")
    ca, server = tmp_path / "ca", tmp_path / "server"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
            ["req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "1", "-subj", "/CN=test CA"],
            ["req", *ec, "-keyout", f"{server}.key", "-out", f"{server}.csr", "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", f"{server}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{server}.pem", "-days", "1", "-extfile", str(_write(tmp_path / "san", "subjectAltName=IP:127.0.0.1"))]):
        subprocess.run(["openssl", *command], check=True, capture_output=True)
    broker = Broker(tmp_path, "allow_anonymous true", f"cafile {ca}.pem", f"certfile {server}.pem",
                    f"keyfile {server}.key")
    try:
        # Not trusted without its CA; plain MQTT to a TLS port: one line each.
        for args, expected in ((("--tls",), "its TLS certificate is not trusted"),
                               ((), "closed the connection without answering")):
            result = subprocess.run([*STREAMEMO, "mqtt", "--broker", broker.address, *args], capture_output=True,
                                    text=True, timeout=30)
            assert result.returncode == 1 and expected in result.stderr and result.stderr.count("\n") == 1, result.stderr
        watcher = Watcher(broker, tls={"ca_certs": f"{ca}.pem"})
        bridge = _bridge(broker, "--ca-file", f"{ca}.pem")
        try:
            watcher.wait(lambda m: len([t for t, _, _ in m if t.endswith("/config")]) == len(ENTITIES), 20,
                         "discovery configs over TLS")
        finally:
            watcher.close()
            bridge.send_signal(signal.SIGTERM)
            _, err = bridge.communicate(timeout=10)
        assert bridge.returncode == 0, err
    finally:
        broker.stop()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_mqtt_section_of_the_config(tmp_path):
    config = tmp_path / "streamemo.toml"
    config.write_text('[publish]\nbind = "tcp://0.0.0.0:5570"\n[mqtt]\nbroker = "hub:8883"\ntls = true\n'
                      'node_id = "hall"\ninterval_s = 2\n')
    result = subprocess.run([*STREAMEMO, "mqtt", "--config", str(config), "--interval", "0.5", "--print-config"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert '[mqtt]\nbroker = "hub:8883"' in result.stdout and 'node_id = "hall"' in result.stdout
    assert "interval_s = 0.5" in result.stdout  # the flag wins
    # The example config the service reads is valid, for the daemon and for the bridge.
    example = ROOT / "systemd" / "streamemo.toml"
    for command in ("run", "mqtt"):
        result = subprocess.run([*STREAMEMO, command, "--config", str(example), "--print-config"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "[mqtt]" in result.stdout, result.stderr
    # Mistakes: one line naming the key or flag, exit 2, before any connection is tried.
    for args, expected in ((("--stale-after", "0"), "--stale-after: mqtt.stale_after_s must be positive"),
                           (("--node-id", "my kitchen"), "--node-id 'my kitchen' must be letters"),
                           (("--topic-prefix", "home/#"), "--topic-prefix 'home/#' must be an MQTT topic"),
                           (("--connect", "localhost:5556"), "cannot connect to localhost:5556: not an address"),
                           (("--client-key", "k.pem"), "--client-key needs --client-cert"),
                           (("--broker", "mqtt://hub"), "--broker 'mqtt://hub' is a URL"),
                           (("--broker", "hub:99999"), "'99999' is not a port from 1 to 65535")):
        result = subprocess.run([*STREAMEMO, "mqtt", *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and expected in result.stderr and result.stderr.count("\n") == 1, result.stderr


@needs_analyze
def test_the_mqtt_unit_verifies(tmp_path):
    unit = _copy_for_this_machine("streamemo-mqtt.service", tmp_path)
    text = unit.read_text()
    assert "mqtt --config /etc/streamemo/streamemo.toml" in text and "DynamicUser=yes" in text
    result = _analyze("verify", str(unit), tmp_path=tmp_path)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
