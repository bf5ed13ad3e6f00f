"""The daemon's emotion messages on an MQTT broker, in the shape Home Assistant discovers.

    <topic_prefix>/<node_id>/state           {"emotion": "angry", "probability": 0.61,
                                              "arousal": 0.52, "valence": -0.31, "speech": true}
    <topic_prefix>/<node_id>/availability    online | offline  (retained; offline is also the last will)
    <discovery_prefix>/sensor/<node_id>/<object>/config         retained, one per sensor
    <discovery_prefix>/binary_sensor/<node_id>/speech/config

Home Assistant reads the discovery configs (retained, so it finds them whenever it starts)
and creates a device named `node_id` with five entities. `emotion`, `probability`, `arousal`
and `valence` are null while nobody speaks, which Home Assistant shows as "unknown".

How often: the daemon says something every hop (4 times a second). Home Assistant records
every state change in its database, so the bridge publishes the state only when it changed
(values rounded to 2 decimals) and at most once per `interval_s` (default 1 s): silence costs
nothing, speech at most one message a second. The state is retained, so a Home Assistant
that restarts shows the last state at once.

Availability means "the numbers are current": online while the daemon's messages arrive,
offline after `stale_after_s` without one (a daemon stopped, or its microphone lost), and
offline as the broker's last will when the bridge itself dies (kill -9, power cut: the
broker notices the dropped connection, or at the latest after 1.5 keep-alives).

Reconnecting: ZeroMQ reconnects to the daemon by itself (streamemo/client.py); paho's network
thread reconnects to the broker with a backoff from 1 s to 60 s and, once back, the bridge
publishes the discovery configs, its availability and the last state again. A broker that
cannot be reached or refuses the login at start is an error (the service's Restart= tries
again): a mistyped host or password should say so, not retry silently for ever.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from streamemo import StreamemoError, __version__
from streamemo.config import MqttConfig
from streamemo.protocol import EmotionMessage

log = logging.getLogger(__name__)

KEEPALIVE_S = 30  # the broker gives up on a silent bridge after 1.5 of these and sends the will
CONNACK_TIMEOUT_S = 10.0  # at start: how long to wait for the broker to accept or refuse the login
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 60  # paho doubles the wait between tries up to the maximum
POLL_S = 0.25  # the loop looks at the clock (staleness) and the stop flag at least this often
ONLINE, OFFLINE = "online", "offline"


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity: its platform, object id, name and how it reads the state."""

    component: str  # sensor | binary_sensor
    object_id: str
    name: str
    value_template: str
    extra: tuple = ()  # further discovery keys, as (key, value) pairs


# A value that renders as None makes a Home Assistant MQTT sensor "unknown" (its PAYLOAD_NONE).
ENTITIES = (
    Entity("sensor", "emotion", "Emotion", "{{ value_json.emotion }}", (("icon", "mdi:emoticon-outline"),)),
    Entity("sensor", "probability", "Emotion probability",
           "{{ none if value_json.probability is none else (value_json.probability * 100) | round | int }}",
           (("unit_of_measurement", "%"), ("state_class", "measurement"), ("icon", "mdi:percent"))),
    Entity("sensor", "arousal", "Arousal", "{{ value_json.arousal }}",
           (("state_class", "measurement"), ("suggested_display_precision", 2), ("icon", "mdi:lightning-bolt"))),
    Entity("sensor", "valence", "Valence", "{{ value_json.valence }}",
           (("state_class", "measurement"), ("suggested_display_precision", 2), ("icon", "mdi:emoticon-happy-outline"))),
    Entity("binary_sensor", "speech", "Speech", "{{ 'ON' if value_json.speech else 'OFF' }}",
           (("device_class", "sound"),)),
)


def state_of(message: EmotionMessage) -> dict:
    """What the state topic carries for one emotion message: rounded, so that the jitter of
    smoothed probabilities in the third decimal is not a change worth recording."""
    return {"emotion": message.top, "probability": _rounded(message.confidence), "arousal": _rounded(message.arousal),
            "valence": _rounded(message.valence), "speech": message.voiced}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def parse_broker(text: str, tls: bool) -> tuple[str, int]:
    """(host, port) from HOST, HOST:PORT, an IPv6 address or [IPV6]:PORT; the port defaults
    to 1883, or 8883 with TLS. Anything else is one line naming the fix (exit 2)."""
    fix = "give HOST or HOST:PORT, e.g. localhost or 192.168.1.10:1883 ([::1]:1883 for IPv6)"
    if "://" in text:
        raise StreamemoError(f"--broker {text!r} is a URL; {fix}, and --tls for an encrypted connection", 2)
    if text.startswith("["):  # [IPV6] or [IPV6]:PORT
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest or None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:  # a name, an IPv4 address or a bare IPv6 address
        host, port = text, None
    if not host or any(c.isspace() or c in "/?#@[]" for c in host):
        raise StreamemoError(f"--broker {text!r} is not a broker address; {fix}", 2)
    if port is None:
        return host, 8883 if tls else 1883
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise StreamemoError(f"--broker {text!r}: {port!r} is not a port from 1 to 65535; {fix}", 2)
    return host, int(port)


def check_names(config: MqttConfig) -> None:
    """The node id goes into topics, unique ids and entity ids; the prefixes into topics."""
    node = config.node_id
    if not node or not all(c.isascii() and (c.isalnum() or c in "_-") for c in node):
        raise StreamemoError(f"--node-id {node!r} must be letters, digits, '_' or '-' (Home Assistant's rule for "
                             "a discovery node id), e.g. kitchen", 2)
    for flag, prefix in (("--topic-prefix", config.topic_prefix), ("--discovery-prefix", config.discovery_prefix)):
        if not prefix or prefix.startswith("/") or prefix.endswith("/") or any(c in prefix for c in "+#\0"):
            raise StreamemoError(f"{flag} {prefix!r} must be an MQTT topic without wildcards (+, #) or a leading "
                                 "or trailing '/', e.g. streamemo or home/streamemo", 2)


def discovery_configs(config: MqttConfig, state_topic: str, availability_topic: str) -> dict[str, dict]:
    """Topic -> Home Assistant discovery payload, for every entity."""
    node = config.node_id
    device = {"identifiers": [f"streamemo_{node}"], "name": node, "manufacturer": "streamemo",
              "model": "speech-emotion classifier", "sw_version": __version__}
    configs = {}
    for entity in ENTITIES:
        topic = f"{config.discovery_prefix}/{entity.component}/{node}/{entity.object_id}/config"
        configs[topic] = {"name": entity.name, "unique_id": f"streamemo_{node}_{entity.object_id}",
                          "state_topic": state_topic, "value_template": entity.value_template,
                          "availability_topic": availability_topic, "payload_available": ONLINE,
                          "payload_not_available": OFFLINE, **dict(entity.extra), "device": device,
                          "origin": {"name": "streamemo", "sw_version": __version__}}
    return configs


class Bridge:
    """One MQTT connection that publishes one daemon's state. `connect()` returns once the
    broker has accepted the login; `offer()` takes each emotion message; `close()` says
    offline and disconnects. paho's network thread runs the connection (and reconnects);
    the lock keeps it and the caller's thread from interleaving what they publish."""

    def __init__(self, config: MqttConfig, password: str | None = None):
        check_names(config)
        self.config = config
        self.host, self.port = parse_broker(config.broker, self.tls)
        base = f"{config.topic_prefix}/{config.node_id}"
        self.state_topic, self.availability_topic = f"{base}/state", f"{base}/availability"
        self.discovery = discovery_configs(config, self.state_topic, self.availability_topic)
        self.available = False  # whether the daemon's messages are current
        self.state: dict | None = None  # the last state published
        self._sent_at = -math.inf  # monotonic time of that publish
        self._lock = threading.Lock()
        self._answered = threading.Event()  # the first CONNACK (or a failure to get one) came
        self._refusal: str | None = None
        self._closing = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"streamemo-{config.node_id}")
        self.client.will_set(self.availability_topic, OFFLINE, qos=1, retain=True)
        if config.username is not None:
            self.client.username_pw_set(config.username, password)
        elif password is not None:
            raise StreamemoError("a password was given without --username (mqtt.username); MQTT sends a password "
                                 "only with a user name", 2)
        if self.tls:
            self._set_tls()
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    @property
    def tls(self) -> bool:
        c = self.config
        return c.tls or any(v is not None for v in (c.ca_file, c.client_cert, c.client_key))

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _set_tls(self) -> None:
        c = self.config
        if c.client_key is not None and c.client_cert is None:
            raise StreamemoError("--client-key needs --client-cert (mqtt.client_cert): the certificate it signs", 2)
        try:  # ca_file None: the system's trusted certificates
            self.client.tls_set(ca_certs=c.ca_file, certfile=c.client_cert, keyfile=c.client_key)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError: a file that is not PEM
            files = ", ".join(f"{flag} {path}" for flag, path in (("--ca-file", c.ca_file), ("--client-cert",
                              c.client_cert), ("--client-key", c.client_key)) if path)
            raise StreamemoError(f"TLS: cannot use {files or 'the system certificates'} "
                                 f"({getattr(e, 'strerror', None) or e}); give readable PEM files", 2) from None

    # --- the connection --------------------------------------------------------------------

    def connect(self) -> None:
        """Connects and waits for the broker's answer; a broker that cannot be reached or
        refuses is a one-line StreamemoError (exit 1)."""
        what = f"cannot connect to the MQTT broker at {self.where}"
        try:
            self.client.connect(self.host, self.port, keepalive=KEEPALIVE_S)
        except ssl.SSLCertVerificationError as e:
            raise StreamemoError(f"{what}: its TLS certificate is not trusted ({e.verify_message}); give the CA "
                                 "that signed it with --ca-file", 1) from None
        except ssl.SSLError as e:
            raise StreamemoError(f"{what}: TLS failed ({e.reason or e}); is that port TLS (8883 usually)?", 1) from None
        except ConnectionRefusedError:
            raise StreamemoError(f"{what}: connection refused, nothing listens there; is the broker (e.g. "
                                 "mosquitto) running, and is the port right?", 1) from None
        except socket.gaierror as e:
            raise StreamemoError(f"{what}: unknown host ({e.strerror}); check --broker", 1) from None
        except TimeoutError:
            raise StreamemoError(f"{what}: no answer; check --broker and any firewall in between", 1) from None
        except OSError as e:
            raise StreamemoError(f"{what}: {e.strerror or e}", 1) from None
        self.client.loop_start()
        if not self._answered.wait(CONNACK_TIMEOUT_S) or self._refusal:
            self.client.loop_stop()
            self.client.disconnect()
            what = self._refusal or f"did not answer the login within {CONNACK_TIMEOUT_S:g} s"
            hint = ("check --username and the password" if "authori" in what.lower() or "password" in what.lower()
                    else "is that port an MQTT broker, with TLS only if --tls is given?")
            raise StreamemoError(f"the MQTT broker at {self.where} {what}; {hint}", 1)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if not self._answered.is_set():
                self._refusal = f"refused the connection: {reason_code}"
                self._answered.set()
            else:
                log.warning("the MQTT broker at %s refused to reconnect: %s; trying again", self.where, reason_code)
            return
        if self._answered.is_set():
            log.info("reconnected to the MQTT broker at %s", self.where)
        with self._lock:  # the broker may have lost its retained messages: say everything again
            for topic, payload in self.discovery.items():
                client.publish(topic, json.dumps(payload), qos=1, retain=True)
            client.publish(self.availability_topic, ONLINE if self.available else OFFLINE, qos=1, retain=True)
            if self.state is not None:
                client.publish(self.state_topic, json.dumps(self.state), retain=True)
        self._answered.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self._answered.is_set():  # closed before any answer: plain MQTT to a TLS port, say
            self._refusal = "closed the connection without answering the login"
            self._answered.set()
        elif not self._closing and not self._refusal:
            log.warning("lost the MQTT broker at %s (%s); reconnecting, %d to %d s between tries", self.where,
                        reason_code, RECONNECT_MIN_S, RECONNECT_MAX_S)

    # --- what is published -----------------------------------------------------------------

    def offer(self, message: EmotionMessage, now: float) -> bool:
        """Publishes the message's state if it differs from the last one published and
        `interval_s` has passed since; True if it did."""
        state = state_of(message)
        with self._lock:
            if state == self.state or now - self._sent_at < self.config.interval_s:
                return False
            self.client.publish(self.state_topic, json.dumps(state), retain=True)
            self.state, self._sent_at = state, now
            return True

    def set_available(self, available: bool) -> None:
        with self._lock:
            if available != self.available:
                self.available = available
                self.client.publish(self.availability_topic, ONLINE if available else OFFLINE, qos=1, retain=True)

    def close(self) -> None:
        """Offline (a clean disconnect sends no last will, so it is said here), then disconnect."""
        with self._lock:
            self._closing = True
            info = self.client.publish(self.availability_topic, OFFLINE, qos=1, retain=True)
        try:
            info.wait_for_publish(timeout=2.0)
        except (ValueError, RuntimeError):  # not connected now: the last will says it instead
            pass
        self.client.disconnect()
        self.client.loop_stop()


def run(bridge: Bridge, client, stop: threading.Event, on_change=lambda text: None) -> None:
    """Feeds the daemon's emotion messages (from a streamemo.Client) to the bridge until
    `stop` is set, and says online or offline as they come and go. `on_change` gets a line
    for each change (systemd's STATUS)."""
    stale_after = bridge.config.stale_after_s
    heard_at = None
    while not stop.is_set():
        message = client.receive(timeout=POLL_S)
        now = time.monotonic()
        if (notice := client.nothing_yet()) is not None:  # a mistyped endpoint or a stopped daemon shows
            log.warning("%s", notice)
        if isinstance(message, EmotionMessage):
            if not bridge.available:
                text = f"online: messages from {message.source} arriving"
                log.info(text)
                on_change(text)
                bridge.set_available(True)
            heard_at = now
            bridge.offer(message, now)
        elif bridge.available and now - heard_at >= stale_after:
            text = f"offline: no message from the daemon for {stale_after:g} s"
            log.warning(text)
            on_change(text)
            bridge.set_available(False)
