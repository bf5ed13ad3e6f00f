"""Who may read the daemon's results: CURVE keys, the allowed-clients folder, and the rule
that nothing is published beyond this machine in the clear.

ZeroMQ CURVE encrypts each connection and authenticates both ends. A server (the daemon's
publisher, the proxy's backend) holds a key pair; each client holds its own key pair and the
server's public key. The server admits a client only when the client's public key is a
`*.key` file in its allowed-clients folder (checked by a ZAP handler thread, re-read on
SIGHUP). Key files use the ZeroMQ certificate format (`zmq.auth`), so any ZeroMQ client in
any language can use them.

The exposure rule: loopback TCP and ipc:// stay on this machine; any other bind address
(0.0.0.0, a LAN address, a host name, an interface) needs CURVE unless `--insecure` is given.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from streamemo import StreamemoError

log = logging.getLogger(__name__)

LOCAL_TRANSPORTS = ("ipc://", "inproc://")
LOOPBACK_NAMES = {"localhost", "lo", "ip6-localhost"}


# --- addresses and the exposure rule ------------------------------------------------------

ADDRESS_FIX = "use tcp://HOST:PORT (e.g. tcp://127.0.0.1:5556) or ipc:///PATH"


def check_address(endpoint: str, bind: bool) -> None:
    """Raises StreamemoError (exit 2) unless `endpoint` is tcp://HOST:PORT with a port from 1
    to 65535 (to bind, also 0 or * for any free port) or ipc://PATH. ZeroMQ's own parser is
    laxer: it binds port 99999 as 99999 mod 65536, and `foo` or `udp://` would reach the
    exposure rule and be called "reachable from other machines"."""
    what = f"cannot {'bind' if bind else 'connect to'} {endpoint}"
    transport, sep, address = endpoint.partition("://")
    if not sep or transport not in ("tcp", "ipc") or not address:
        raise StreamemoError(f"{what}: not an address; {ADDRESS_FIX}", 2)
    if transport == "ipc":
        return
    host, colon, port = address.rpartition(":")
    if not colon or not host.strip("[]") or (host == "*" and not bind):
        raise StreamemoError(f"{what}: not an address, it lacks a host{'' if colon else ' and port'}; {ADDRESS_FIX}", 2)
    if bind and port in ("*", "0"):
        return
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        free = " (or, to bind, * for any free port)" if bind else ""
        raise StreamemoError(f"{what}: {port!r} is not a port; use 1 to 65535{free}", 2)



def is_local_endpoint(endpoint: str) -> bool:
    """True for endpoints that only processes on this machine can reach."""
    if endpoint.startswith(LOCAL_TRANSPORTS):
        return True
    if not endpoint.startswith("tcp://"):
        return False  # udp, pgm, ws...: assume the network
    return is_loopback_host(endpoint[len("tcp://"):].rpartition(":")[0])


def is_loopback_host(host: str | None) -> bool:
    """True for a host name or address (IPv6 bracketed or not) only this machine reaches."""
    if host is None:
        return False
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name, a host name: may be reachable from outside


def check_exposure(endpoint: str, secured: bool, insecure: bool) -> None:
    """Refuses a bind address that is not one (check_address), or that would put results on
    the network unencrypted and unauthenticated."""
    check_address(endpoint, bind=True)
    if secured or insecure or is_local_endpoint(endpoint):
        if insecure and not secured and not is_local_endpoint(endpoint):
            log.warning("publishing on %s WITHOUT encryption or authentication (--insecure): "
                        "anyone who can reach this port can read the results", endpoint)
        return
    raise StreamemoError(
        f"refusing to bind {endpoint} without CURVE encryption: it is reachable from other machines. "
        "Give the server's secret key and a folder of allowed client keys (--curve-secret FILE "
        "--curve-clients DIR; create them with `streamemo keys`), or bind tcp://127.0.0.1:PORT "
        "or ipc:///PATH, or pass --insecure to publish in the clear",
        2,
    )


# --- key files ------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def create_key_pair(directory: str | Path, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Writes DIR/NAME.key (public: hand it out) and DIR/NAME.key_secret (mode 0600: keep it)."""
    if not _NAME.match(name):
        raise StreamemoError(f"key name {name!r} must be letters, digits, '.', '_' or '-'", 2)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public_path, secret_path = directory / f"{name}.key", directory / f"{name}.key_secret"
    for path in (public_path, secret_path):
        if path.exists() and not overwrite:
            raise StreamemoError(f"{path} already exists; choose another name or pass --force to replace it", 1)
    public, secret = zmq.curve_keypair()
    header = "#   ZeroMQ CURVE {kind} key, made by `streamemo keys`\n"
    public_text = header.format(kind="public") + f'metadata\ncurve\n    public-key = "{public.decode()}"\n'
    secret_text = (header.format(kind="SECRET") + "#   Keep this file private: whoever has it can act as its owner.\n"
                   + f'metadata\ncurve\n    public-key = "{public.decode()}"\n    secret-key = "{secret.decode()}"\n')
    _write(public_path, public_text, 0o644)
    _write(secret_path, secret_text, 0o600)
    return public_path, secret_path


def _write(path: Path, text: str, mode: int) -> None:
    # Created with its final mode: a secret key is never readable by others, even briefly.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def load_key_pair(path: str | Path, role: str) -> tuple[bytes, bytes]:
    """(public, secret) from a NAME.key_secret file; `role` names it in errors."""
    public, secret = _load(path, role)
    if secret is None:
        raise StreamemoError(f"{role} {path} holds only a public key; give the .key_secret file", 2)
    return public, secret


def load_public_key(path: str | Path, role: str) -> bytes:
    return _load(path, role)[0]


def _load(path: str | Path, role: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except OSError:
        raise StreamemoError(f"{role} {path} does not exist or cannot be read; `streamemo keys` creates key files", 2) from None
    except ValueError:
        raise StreamemoError(f"{role} {path} is not a ZeroMQ key file (no public-key line)", 2) from None
    for key in (public, secret):
        if key is not None and len(key) != 40:
            raise StreamemoError(f"{role} {path} has a malformed key (expected 40 Z85 characters)", 2)
    return public, secret


# --- server side ----------------------------------------------------------------------------


class AllowedClients:
    """The allowed-clients folder as the ZAP handler sees it: every `*.key` file is a client.

    Used as a pyzmq credentials provider (`callback`), which lets us log a refused key once
    instead of at every reconnect attempt (every 100 ms by default)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.keys: frozenset[bytes] = frozenset()
        self._refused: set[bytes] = set()
        self.reload()

    def reload(self) -> int:
        if not self.directory.is_dir():
            raise StreamemoError(f"allowed-clients folder {self.directory} does not exist; put clients' "
                                 "NAME.key files (from `streamemo keys`) in it", 2)
        keys = set()
        for path in sorted(self.directory.glob("*.key")):
            keys.add(load_public_key(path, "client key"))
        if not keys:
            log.warning("no client keys in %s: no subscriber can connect until one is added (then SIGHUP)",
                        self.directory)
        self.keys = frozenset(keys)  # one assignment: the ZAP thread sees the old set or the new
        self._refused.clear()
        return len(keys)

    def callback(self, domain: str, z85_key: bytes) -> bool:
        if z85_key in self.keys:
            return True
        if z85_key not in self._refused and len(self._refused) < 1000:
            self._refused.add(z85_key)
            log.warning("refused a subscriber whose key %s is not in %s", z85_key.decode(), self.directory)
        return False


class CurveServer:
    """A key pair plus the allowed-clients check, applied to the sockets that bind."""

    def __init__(self, secret_file: str | Path, clients_dir: str | Path):
        self.public, self.secret = load_key_pair(secret_file, "server secret key")
        self.clients = AllowedClients(clients_dir)
        self.authenticator: ThreadAuthenticator | None = None

    def start(self, context: zmq.Context) -> None:
        # ZAP handlers are per context: the authenticator must share the publisher's context.
        self.authenticator = ThreadAuthenticator(context, log=logging.getLogger("streamemo.zap"))
        self.authenticator.start()
        self.authenticator.configure_curve_callback("*", credentials_provider=self.clients)

    def secure(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True

    def reload(self) -> int:
        return self.clients.reload()

    def stop(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


def curve_server(secret_file: str | None, clients_dir: str | None) -> CurveServer | None:
    """The server's CURVE settings from its two options, or None when neither is given."""
    if not secret_file and not clients_dir:
        return None
    if not secret_file or not clients_dir:
        missing = "--curve-secret (security.curve_secret)" if not secret_file else "--curve-clients (security.curve_clients)"
        raise StreamemoError(f"CURVE needs both the server's secret key and the allowed-clients folder; {missing} is missing", 2)
    return CurveServer(secret_file, clients_dir)


# --- client side ----------------------------------------------------------------------------


class CurveClient:
    def __init__(self, server_public_file: str | Path, secret_file: str | Path):
        self.server_public = load_public_key(server_public_file, "server public key")
        self.public, self.secret = load_key_pair(secret_file, "client secret key")

    def secure(self, socket: zmq.Socket) -> None:
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret


def curve_client(server_public_file: str | None, secret_file: str | None) -> CurveClient | None:
    if not server_public_file and not secret_file:
        return None
    if not server_public_file or not secret_file:
        missing = "--curve-server (the server's NAME.key)" if not server_public_file else "--curve-secret (your NAME.key_secret)"
        raise StreamemoError(f"a CURVE subscriber needs the server's public key and its own secret key; {missing} is missing", 2)
    return CurveClient(server_public_file, secret_file)


# --- command-line flags: defined once, for every command that takes keys ------------------

# A publisher's (daemon's or proxy's) access options: flag -> argparse keyword arguments.
SERVER_FLAGS = {
    "--curve-secret": dict(metavar="FILE", help="this publisher's secret key (NAME.key_secret from `streamemo keys`): "
                                                "publish with CURVE encryption"),
    "--curve-clients": dict(metavar="DIR", help="folder of allowed subscribers' public keys (NAME.key); "
                                                "re-read on SIGHUP"),
    "--insecure": dict(action="store_true", help="allow a bind reachable from other machines without CURVE "
                                                 "(results in the clear)"),
}

# A subscriber's key options (`subscribe`, `dash`; the proxy towards CURVE daemons).
CLIENT_FLAGS = {
    "--curve-server": dict(metavar="FILE", help="the publisher's public key (its NAME.key) for an encrypted connection"),
    "--curve-secret": dict(metavar="FILE", help="this client's secret key (NAME.key_secret, from `streamemo keys`); "
                                                "its NAME.key must be in the publisher's allowed-clients folder"),
}


def add_server_arguments(parser, dests: dict[str, str] | None = None) -> None:
    """The publisher-side key options; `dests` maps a flag to the attribute it fills (the
    daemon's are config keys, so a TOML file can give them too)."""
    for flag, kwargs in SERVER_FLAGS.items():
        extra = {"dest": dests[flag], "default": None} if dests else {}
        parser.add_argument(flag, **kwargs, **extra)


def add_client_arguments(parser) -> None:
    """The client-side key options, shared by `subscribe` and `dash`."""
    for flag, kwargs in CLIENT_FLAGS.items():
        parser.add_argument(flag, **kwargs)
