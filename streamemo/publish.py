"""ZeroMQ publishing, and `connect_checked`, which readers (`streamemo.client.Client`, the proxy) use.

The publisher never blocks the pipeline: a PUB socket drops messages for a subscriber
whose queue (high-water mark) is full, sends are non-blocking, and linger is 0 so closing
never waits for a dead peer. A slow or vanished subscriber costs the daemon nothing.

Nor can a hostile one make it hold much. An XPUB socket queues every distinct
subscription, and any other message a peer sends upstream, for the program to read; the
daemon never read them, and 60,000 random 512-byte subscriptions held 1.4 GiB, kept after
the peer left (benchmarks/subscription_flood.py). So the publisher reads them itself
before each send (manual mode) and passes on only those that can match one of its topics
(`emotion`, `status`). ZeroMQ still keeps each subscription of a connected peer until it
leaves (about 2.6 KB for the longest allowed), so a peer sending a frame longer than a
subscription needs is disconnected, and once a peer that sent others has gone, the memory
is given back to the system.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import stat
import time

import zmq

from streamemo import StreamemoError
from streamemo.protocol import TOPICS, Message, encode_message
from streamemo.security import ADDRESS_FIX, CurveServer, check_address, check_exposure

log = logging.getLogger(__name__)

# A peer sending a longer frame is disconnected: a subscription to one of our topics is at
# most 17 bytes (ZeroMQ 4.3's SUBSCRIBE command, 10 bytes, and "emotion"), the handshake
# under 64. A CURVE handshake sends frames of about 300 bytes; its peers hold allowed keys.
MAX_FRAME_BYTES = 64
MAX_FRAME_BYTES_CURVE = 512
SUBSCRIPTIONS_RCVHWM = 100  # frames a peer may have waiting upstream before ZeroMQ stops reading it
SUBSCRIPTIONS_PER_SEND = 1000  # read and judged per send, so a flood cannot hold the daemon's loop


class Publisher:
    """An XPUB socket bound to `bind`. With `curve`, connections are encrypted and only allowed
    client keys get in; without it, a bind reachable from other machines is refused unless
    `insecure` (security.check_exposure)."""

    def __init__(self, bind: str, hwm: int = 1000, context: zmq.Context | None = None,
                 curve: CurveServer | None = None, insecure: bool = False, topics=TOPICS):
        """`topics`: the topics this publisher sends; only subscriptions that can match them are kept."""
        check_exposure(bind, secured=curve is not None, insecure=insecure)
        self.topics = [t.encode() for t in topics]
        if bind.startswith("ipc://") and bind != "ipc://*" and not bind.startswith("ipc://@"):
            _check_ipc_path_free(bind, bind[len("ipc://"):])
        self.context = context or zmq.Context.instance()
        self.curve = curve
        # XPUB sends exactly like PUB, and also tells us when a subscriber arrives.
        self.socket = self.context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        # Subscriptions come to us (take_subscriptions) and only those we keep reach ZeroMQ's tree.
        self.socket.setsockopt(zmq.XPUB_MANUAL, 1)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES if curve is None else MAX_FRAME_BYTES_CURVE)
        self.socket.setsockopt(zmq.RCVHWM, SUBSCRIPTIONS_RCVHWM)
        self._departures = self.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._dropped = 0  # subscriptions dropped since memory was last given back
        self._departed = False  # a peer has left since then
        _allow_ipv6(self.socket, bind)
        if curve is not None:
            curve.start(self.context)
            curve.secure(self.socket)
        try:
            self.socket.bind(bind)
        except zmq.ZMQError as e:
            self.socket.close()
            if curve is not None:
                curve.stop()
            raise StreamemoError(_bind_problem(bind, e), 1) from None
        # What was actually bound: the port chosen for tcp://HOST:0 or :*, the address for *.
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        # The socket file this publisher made, to remove at close (ZeroMQ removes it from its
        # I/O thread, which a process exiting right after close() does not wait for).
        self.ipc_file = None
        if self.endpoint.startswith("ipc://") and not self.endpoint.startswith("ipc://@"):  # @: no file
            path = self.endpoint[len("ipc://"):]  # as bound: for ipc://* ZeroMQ makes a name up
            self.ipc_file = (path, os.stat(path).st_ino)
        self.sent = {"emotion": 0, "status": 0}

    def send(self, message: Message) -> None:
        """Sends `message` now, stamped with the time of sending (its `t_publish`)."""
        self.take_subscriptions()  # first, so a subscriber that has just arrived gets this message
        try:
            self.socket.send_multipart(encode_message(message, time.time()), flags=zmq.NOBLOCK)
            self.sent[message.TOPIC] += 1
        except zmq.Again:  # PUB drops for a slow subscriber itself; this is never worth blocking for
            pass

    def take_subscriptions(self) -> list[bytes]:
        """Reads what subscribers have sent and applies each subscription or unsubscription
        (b"\x01" or b"\x00" + prefix) that can match one of our topics; drops the rest.
        Returns the ones applied, for a proxy to pass upstream."""
        applied, drained = [], False
        for _ in range(SUBSCRIPTIONS_PER_SEND):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                drained = True
                break
            kind, prefix = frames[0][:1], frames[0][1:]
            if len(frames) == 1 and kind in (b"\x00", b"\x01") and any(t.startswith(prefix) for t in self.topics):
                # In manual mode a (un)subscription applies to the peer whose frame was read last.
                self.socket.setsockopt(zmq.SUBSCRIBE if kind == b"\x01" else zmq.UNSUBSCRIBE, prefix)
                applied.append(frames[0])
            else:
                self._dropped += 1
        while self._departures.poll(0):
            self._departures.recv_multipart()
            self._departed = True
        if self._departed and self._dropped and drained:
            # ZeroMQ has freed a departed peer's subscriptions, and we the copies it queued
            # for us, into glibc's heap, which keeps small blocks for reuse: give them back.
            _malloc_trim()
            self._departed, self._dropped = False, 0
        return applied

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        """Blocks until some subscriber subscribes to one of our topics, or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(1000 * left)) and any(f[:1] == b"\x01" for f in self.take_subscriptions()):
                return True
        return False

    def close(self, drain_s: float = 0.5) -> None:
        # Linger is 0 while running; at shutdown allow a bounded moment for queued messages
        # (the last of a file, the final status) to reach live subscribers. A dead peer
        # cannot hold the exit longer than this.
        self.socket.disable_monitor()
        self._departures.close(linger=0)
        self.socket.close(linger=int(drain_s * 1000))
        if self.curve is not None:
            self.curve.stop()
        if self.ipc_file is not None:
            path, inode = self.ipc_file
            try:
                if os.stat(path).st_ino == inode:  # ours still, not a newer daemon's
                    os.unlink(path)
            except FileNotFoundError:
                pass


def _malloc_trim() -> None:
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _check_ipc_path_free(bind: str, path: str) -> None:
    """ZeroMQ binding an ipc path replaces whatever file is there: a second daemon would
    silently take the first one's address (and an ipc path naming a regular file would delete
    it). So: a socket that answers belongs to a live process and is refused; one that refuses
    connections was left by a process that died, and ZeroMQ may replace it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise StreamemoError(f"cannot bind {bind}: {path}: {e.strerror}", 1) from None
    if not stat.S_ISSOCK(mode):
        raise StreamemoError(f"cannot bind {bind}: {path} exists and is not a socket; choose another path", 1)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        log.info("replacing %s, a socket file left by a process that has ended", path)
        return
    except OSError:  # not ours to judge (permissions, a datagram socket): let bind say
        return
    finally:
        probe.close()
    raise StreamemoError(f"cannot bind {bind}: another process (a running streamemo daemon?) is serving it; "
                         "stop that one or choose another path with --bind", 1)


def _bind_problem(bind: str, e: zmq.ZMQError) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"cannot bind {bind}: the address is already in use (another streamemo daemon?); choose another with --bind"
    if e.errno in (errno.EINVAL, zmq.EPROTONOSUPPORT) or "Invalid argument" in str(e):
        return f"cannot bind {bind}: not a valid ZeroMQ endpoint; {ADDRESS_FIX}"
    if e.errno == errno.EACCES:
        return f"cannot bind {bind}: permission denied; use a port above 1023 or a writable ipc path"
    return f"cannot bind {bind}: {e.strerror}"


def _allow_ipv6(sock: zmq.Socket, endpoint: str) -> None:
    """ZeroMQ sockets are IPv4-only unless told otherwise: an IPv6 address (tcp://[::1]:5556)
    then fails to bind ("No such device") and never connects. Enabled only for such an
    address, so a host name keeps resolving to the IPv4 address it always did."""
    if endpoint.startswith("tcp://["):
        sock.setsockopt(zmq.IPV6, 1)


def connect_checked(sock: zmq.Socket, endpoint: str) -> None:
    """`sock.connect(endpoint)`, with a bad address a one-line StreamemoError (exit 2)."""
    check_address(endpoint, bind=False)
    _allow_ipv6(sock, endpoint)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        raise StreamemoError(f"cannot connect to {endpoint}: {e.strerror}; {ADDRESS_FIX}", 2) from None
