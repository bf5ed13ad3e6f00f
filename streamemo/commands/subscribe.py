"""streamemo subscribe: the daemon's messages as JSON lines on stdout (pipe-friendly), or
recorded to a file for `streamemo report`.

    streamemo subscribe --topic emotion | jq .top
    streamemo subscribe --record session.jsonl        # Ctrl-C or SIGTERM ends it cleanly

A recording is never left with half a line: each message is one write() of one whole
line to a file opened for appending (a regular file's write is not cut by a signal), and
rotation renames whole files (session.jsonl -> session.jsonl.1 -> …) once one passes
--rotate-mb, keeping --keep of them.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from streamemo import StreamemoError
from streamemo.protocol import TOPICS, to_json
from streamemo.security import add_client_arguments


def configure(parser) -> None:
    parser.add_argument("--connect", action="append", metavar="ENDPOINT",
                        help="publisher to read from (default tcp://127.0.0.1:5556); repeat for several")
    parser.add_argument("--topic", action="append", choices=TOPICS, help="topic to print (default: all); repeatable")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    parser.add_argument("--timeout", type=float, metavar="S", help="exit with status 1 if nothing arrives for S seconds")
    parser.add_argument("--record", type=Path, metavar="FILE",
                        help="append the messages to FILE (JSON lines, as `streamemo report` reads) instead of stdout")
    parser.add_argument("--rotate-mb", type=float, default=100.0, metavar="MB",
                        help="with --record: start a new file once this one passes MB (default 100)")
    parser.add_argument("--keep", type=int, default=5, metavar="N",
                        help="with --record: rotated files kept (FILE.1 … FILE.N; default 5)")
    add_client_arguments(parser)


class Recorder:
    """Whole JSON lines appended to a file, rotated by size."""

    def __init__(self, path: Path, rotate_bytes: int, keep: int):
        self.path, self.rotate_bytes, self.keep = path, rotate_bytes, keep
        self.fd = self._open()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise StreamemoError(f"--record {self.path}: cannot write it ({e.strerror}); give a file in a "
                                 "folder you can write to", 2) from None

    def write(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())  # one call: the line lands whole or not at all
        if os.fstat(self.fd).st_size >= self.rotate_bytes:
            self.rotate()

    def rotate(self) -> None:
        os.close(self.fd)
        for i in range(self.keep - 1, 0, -1):  # FILE.1 -> FILE.2 … (the oldest falls off the end)
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.keep > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self.fd = self._open()

    def close(self) -> None:
        os.close(self.fd)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(args) -> int:
    from streamemo.client import DEFAULT_ENDPOINT, Client

    if args.rotate_mb <= 0 or args.keep < 0:
        raise StreamemoError("--rotate-mb must be more than 0 and --keep 0 or more", 2)
    client = Client(args.connect or [DEFAULT_ENDPOINT], args.topic or TOPICS, args.curve_server, args.curve_secret)
    recorder = Recorder(args.record, int(args.rotate_mb * 1e6), args.keep) if args.record else None
    if recorder is not None:  # SIGTERM (systemd, kill) ends a recording like Ctrl-C: between two lines
        signal.signal(signal.SIGTERM, _interrupt)
    received = 0
    try:
        while args.count is None or received < args.count:
            message = client.receive(args.timeout)
            if message is None:
                print(f"streamemo subscribe: nothing received for {args.timeout} s", file=sys.stderr)
                return 1
            line = to_json({"topic": message.TOPIC, **message.to_body()})
            if recorder is not None:
                recorder.write(line)
            else:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            received += 1
    except BrokenPipeError:  # `streamemo subscribe | head` closing the pipe is a normal end
        sys.stderr.close()
    except KeyboardInterrupt:
        if recorder is None:
            raise
    finally:
        client.close()
        if recorder is not None:
            recorder.close()
            print(f"recorded {received} messages to {args.record}", file=sys.stderr)
    return 0
