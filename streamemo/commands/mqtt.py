"""streamemo mqtt: the daemon's emotion, arousal, valence and speech on an MQTT broker, with
Home Assistant discovery (streamemo/mqtt_bridge.py).

    streamemo mqtt --broker localhost
    streamemo mqtt --config /etc/streamemo/streamemo.toml      # the [mqtt] section; what the service runs

Every flag is also a key of the config file's [mqtt] section (flags win). The password never
needs to be on the command line, where `ps` shows it: a file (--password-file,
mqtt.password_file) or $STREAMEMO_MQTT_PASSWORD.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

from streamemo import StreamemoError
from streamemo.commands._options import FLAGS as RUN_FLAGS, config_from_args
from streamemo.config import Config, MqttConfig
from streamemo.security import CLIENT_FLAGS

PASSWORD_ENV = "STREAMEMO_MQTT_PASSWORD"

# flag -> (config key, argparse keyword arguments); each help ends with the default, the config's own.
Q = MqttConfig
FLAGS = {
    "--broker": ("mqtt.broker", dict(metavar="HOST[:PORT]", help="the MQTT broker; the port is 1883, or 8883 with "
                                     f"TLS (default: {Q.broker})")),
    "--connect": ("mqtt.connect", dict(metavar="ENDPOINT", help="the daemon's ZeroMQ endpoint (default: where "
                                       "publish.bind publishes, tcp://127.0.0.1:5556 unless the config says else)")),
    "--username": ("mqtt.username", dict(metavar="NAME", help="log in to the broker as NAME")),
    "--password-file": ("mqtt.password_file", dict(metavar="FILE", help="a file holding the password (its first "
                                                   f"line); or set ${PASSWORD_ENV}")),
    "--tls": ("mqtt.tls", dict(action=argparse.BooleanOptionalAction, help="TLS to the broker, checked against the "
                               "system's trusted certificates (default: --no-tls; --ca-file or --client-cert imply it)")),
    "--ca-file": ("mqtt.ca_file", dict(metavar="FILE", help="the CA certificate (PEM) that signed the broker's")),
    "--client-cert": ("mqtt.client_cert", dict(metavar="FILE", help="a client certificate (PEM), for brokers that "
                                               "ask for one")),
    "--client-key": ("mqtt.client_key", dict(metavar="FILE", help="its private key, unless the certificate file "
                                             "holds it")),
    "--topic-prefix": ("mqtt.topic_prefix", dict(metavar="TOPIC", help="state and availability go under "
                                                 f"TOPIC/NODE/ (default: {Q.topic_prefix})")),
    "--node-id": ("mqtt.node_id", dict(metavar="NODE", help="this bridge's name: the Home Assistant device and its "
                                       f"entity ids, e.g. sensor.NODE_emotion (default: {Q.node_id})")),
    "--discovery-prefix": ("mqtt.discovery_prefix", dict(metavar="TOPIC", help="Home Assistant's discovery prefix "
                                                         f"(default: {Q.discovery_prefix})")),
    "--interval": ("mqtt.interval_s", dict(type=float, metavar="S", help="publish the state at most once per S "
                                           f"seconds, and only when it changed; 0: every change (default: {Q.interval_s:g})")),
    "--stale-after": ("mqtt.stale_after_s", dict(type=float, metavar="S", help="say offline after S seconds without "
                                                 f"a message from the daemon (default: {Q.stale_after_s:g})")),
    # The client-side key flags and the log level, as every other command defines them.
    "--curve-server": ("mqtt.curve_server", CLIENT_FLAGS["--curve-server"]),
    "--curve-secret": ("mqtt.curve_secret", CLIENT_FLAGS["--curve-secret"]),
    "--log-level": RUN_FLAGS["--log-level"],
}


def configure(parser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file: its [mqtt] section (and publish.bind, "
                                                         "log.level); flags override it")
    parser.add_argument("--print-config", action="store_true", help="print the resulting config and exit")
    for flag, (key, kwargs) in FLAGS.items():
        parser.add_argument(flag, dest=key, default=None, **kwargs)
    parser.add_argument("--password", metavar="SECRET", help=f"the password; visible to every user in `ps`: prefer "
                                                             f"--password-file or ${PASSWORD_ENV}")


def main(args) -> int:
    from streamemo.cli import setup_logging

    config = config_from_args(args, FLAGS)
    if args.print_config:
        print(config.to_toml(), end="")
        return 0
    setup_logging(config.log.level)
    stop = threading.Event()  # SIGTERM (systemctl stop) and Ctrl-C end the loop, which says offline
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return bridge_daemon(config, password(args.password, config.mqtt.password_file), stop)


def password(flag: str | None, file: str | None) -> str | None:
    """--password, else $STREAMEMO_MQTT_PASSWORD, else the first line of the password file."""
    if flag is not None:
        return flag
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if file is None:
        return None
    try:
        with open(file, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise StreamemoError(f"--password-file {file}: cannot read it ({getattr(e, 'strerror', None) or e}); give a "
                             "readable file whose first line is the password", 2) from None


def daemon_endpoint(config: Config) -> str:
    """mqtt.connect, else the daemon's own publish.bind, a wildcard host read as this machine."""
    from streamemo.client import local_endpoint

    return config.mqtt.connect or local_endpoint(config.publish.bind)


def bridge_daemon(config: Config, secret: str | None, stop: threading.Event) -> int:
    from streamemo.client import Client
    from streamemo.mqtt_bridge import Bridge, log, run
    from streamemo.service import Notifier

    endpoint = daemon_endpoint(config)
    bridge = Bridge(config.mqtt, secret)  # every option checked before the network is touched
    with Client(endpoint, ["emotion"], config.mqtt.curve_server, config.mqtt.curve_secret) as client:
        bridge.connect()
        notifier = Notifier()
        where = f"MQTT broker {bridge.where}"
        log.info("connected to the %s; Home Assistant discovery under %s/, state on %s; reading the daemon at %s",
                 where, config.mqtt.discovery_prefix, bridge.state_topic, endpoint)
        notifier.ready(f"connected to the {where}; waiting for the daemon at {endpoint}")
        try:
            run(bridge, client, stop, on_change=lambda text: notifier.status(f"{text} ({where})"))
        finally:
            notifier.stopping()
            bridge.close()
    return 0
