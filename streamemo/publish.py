"""ZeroMQ publishing, and `connect_checked`, which readers (`streamemo.client.Client`, the proxy) use.

The publisher never blocks the pipeline: a PUB socket drops messages for a subscriber
whose queue (high-water mark) is full, sends are non-blocking, and linger is 0 so closing
never waits for a dead peer. A slow or vanished subscriber costs the daemon nothing.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import time

import zmq

from streamemo import StreamemoError
from streamemo.protocol import Message, encode_message
from streamemo.security import ADDRESS_FIX, CurveServer, check_address, check_exposure

log = logging.getLogger(__name__)


class Publisher:
    """An XPUB socket bound to `bind`. With `curve`, connections are encrypted and only allowed
    client keys get in; without it, a bind reachable from other machines is refused unless
    `insecure` (security.check_exposure)."""

    def __init__(self, bind: str, hwm: int = 1000, context: zmq.Context | None = None,
                 curve: CurveServer | None = None, insecure: bool = False):
        check_exposure(bind, secured=curve is not None, insecure=insecure)
        if bind.startswith("ipc://") and bind != "ipc://*" and not bind.startswith("ipc://@"):
            _check_ipc_path_free(bind, bind[len("ipc://"):])
        self.context = context or zmq.Context.instance()
        self.curve = curve
        # XPUB sends exactly like PUB, and also tells us when a subscriber arrives.
        self.socket = self.context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
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
        try:
            self.socket.send_multipart(encode_message(message, time.time()), flags=zmq.NOBLOCK)
            self.sent[message.TOPIC] += 1
        except zmq.Again:  # PUB drops for a slow subscriber itself; this is never worth blocking for
            pass

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        """Blocks until some subscriber subscribes, or `timeout_s` passes."""
        if self.socket.poll(int(timeout_s * 1000)):
            self.socket.recv()  # the subscription message itself: b"\x01" + topic
            return True
        return False

    def close(self, drain_s: float = 0.5) -> None:
        # Linger is 0 while running; at shutdown allow a bounded moment for queued messages
        # (the last of a file, the final status) to reach live subscribers. A dead peer
        # cannot hold the exit longer than this.
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


def connect_checked(sock: zmq.Socket, endpoint: str) -> None:
    """`sock.connect(endpoint)`, with a bad address a one-line StreamemoError (exit 2)."""
    check_address(endpoint, bind=False)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        raise StreamemoError(f"cannot connect to {endpoint}: {e.strerror}; {ADDRESS_FIX}", 2) from None
