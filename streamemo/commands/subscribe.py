"""streamemo subscribe: the daemon's messages as JSON lines on stdout (pipe-friendly), or
recorded to a file for `streamemo report`.

    streamemo subscribe --topic emotion | jq .top
    streamemo subscribe --record session.jsonl        # Ctrl-C or SIGTERM ends it cleanly

Standard error says where it listens, whether messages arrive, and (recording) how many
were kept; standard output carries only the JSON lines.

A recording is never left with half a line: each message is written whole to a file opened
for appending, and a write that fails part-way (a full disk) is cut back to the last whole
line before the one-line error. Rotation renames whole files (session.jsonl ->
session.jsonl.1 -> …) once one passes --rotate-mb, keeping --keep of them; the closing
summary counts the messages that went with the files rotated out.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path

from streamemo import StreamemoError
from streamemo.config import Range
from streamemo.protocol import TOPICS, to_json
from streamemo.security import add_client_arguments

ROTATE_MB = 100.0
KEEP = 5
# A file of at least 4 kB (several messages): below that a recording rotates on every
# message and the --keep files hold almost nothing of it.
LIMITS = {
    "--count": Range(1, 1e12, "the number of messages to print before exiting, e.g. 10", integer=True),
    "--timeout": Range(0, 1e9, "seconds, e.g. 30, or inf to wait for ever", above=True, also=(math.inf,)),
    "--rotate-mb": Range(0.004, 1e6, f"megabytes per file, e.g. {ROTATE_MB:g}"),
    "--keep": Range(0, 10_000, f"the number of rotated files to keep, e.g. {KEEP}", integer=True),
}


def configure(parser) -> None:
    parser.add_argument("--connect", action="append", metavar="ENDPOINT",
                        help="publisher to read from (default tcp://127.0.0.1:5556); repeat for several")
    parser.add_argument("--topic", action="append", choices=TOPICS, help="topic to print (default: all); repeatable")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    parser.add_argument("--timeout", type=float, metavar="S", help="exit with status 1 if nothing arrives for S seconds")
    parser.add_argument("--record", type=Path, metavar="FILE",
                        help="append the messages to FILE (JSON lines, as `streamemo report` reads) instead of stdout")
    parser.add_argument("--rotate-mb", type=float, metavar="MB",
                        help=f"with --record: start a new file once this one passes MB (default {ROTATE_MB:g})")
    parser.add_argument("--keep", type=int, metavar="N",
                        help=f"with --record: rotated files kept (FILE.1 … FILE.N; default {KEEP})")
    add_client_arguments(parser)


def check_arguments(args) -> None:
    """Every number in range, and the recording options only with --record: one line, exit 2."""
    for flag, limit in LIMITS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            limit.check(flag, value)
    if args.record is None:
        given = [flag for flag in ("--rotate-mb", "--keep") if getattr(args, flag[2:].replace("-", "_")) is not None]
        if given:
            raise StreamemoError(f"{given[0]} applies to a recording; give --record FILE too, or leave it out", 2)


class Recorder:
    """Whole JSON lines appended to a file, rotated by size."""

    def __init__(self, path: Path, rotate_bytes: int, keep: int):
        self.path, self.rotate_bytes, self.keep = path, rotate_bytes, keep
        self.fd = self._open()
        self.counts = [0]  # messages written to FILE, FILE.1, … by this recorder
        self.rotated_out = 0  # messages in files that rotation removed (past --keep)

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise StreamemoError(f"--record {self.path}: cannot write it ({e.strerror}); give a file in a "
                                 "folder you can write to", 2) from None

    def write(self, line: str) -> None:
        data = (line + "\n").encode()
        whole = os.fstat(self.fd).st_size  # where the last whole line ends
        try:
            done = 0
            while done < len(data):  # a full disk can take part of a write, then refuse the rest
                done += os.write(self.fd, data[done:]) or _full()
        except OSError as e:
            self._cut(whole)
            raise self._failed(e) from None
        self.counts[0] += 1
        if whole + len(data) >= self.rotate_bytes:
            self.rotate()

    def _cut(self, size: int) -> None:
        """Drops the part of a line that a failed write left, so the file ends with a whole line."""
        try:
            os.ftruncate(self.fd, size)
        except OSError:
            pass

    def _failed(self, e: OSError) -> StreamemoError:
        kept = sum(self.counts)
        return StreamemoError(f"--record {self.path}: {e.strerror or e} after {kept} messages, each line of them "
                              "whole; free some space or record elsewhere", 1)

    def rotate(self) -> None:
        os.close(self.fd)
        try:
            for i in range(self.keep - 1, 0, -1):  # FILE.1 -> FILE.2 … (the oldest falls off the end)
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            if self.keep > 0:
                self.path.replace(self.path.with_name(f"{self.path.name}.1"))
            else:
                self.path.unlink()
        except OSError as e:
            self.fd = os.open(os.devnull, os.O_WRONLY)  # something for close() to close
            raise self._failed(e) from None
        self.counts.insert(0, 0)
        if len(self.counts) > self.keep + 1:
            self.rotated_out += self.counts.pop()
        self.fd = self._open()

    def summary(self) -> str:
        kept = sum(self.counts)
        line = f"recorded {kept + self.rotated_out} messages to {self.path}"
        if self.rotated_out:
            line += (f"; {self.rotated_out} of them were in older files that rotation removed "
                     f"(--keep {self.keep} keeps {kept})")
        return line

    def close(self) -> None:
        os.close(self.fd)


def _full() -> int:
    raise OSError(28, os.strerror(28))  # a write that took nothing: ENOSPC


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _say(text: str) -> None:
    print(f"streamemo subscribe: {text}", file=sys.stderr, flush=True)


def main(args) -> int:
    from streamemo.client import DEFAULT_ENDPOINT, Client

    check_arguments(args)
    endpoints = args.connect or [DEFAULT_ENDPOINT]
    topics = args.topic or TOPICS
    timeout = None if args.timeout in (None, math.inf) else args.timeout
    client = Client(endpoints, topics, args.curve_server, args.curve_secret)
    recorder = None
    if args.record:
        rotate_mb = ROTATE_MB if args.rotate_mb is None else args.rotate_mb
        recorder = Recorder(args.record, int(rotate_mb * 1e6), KEEP if args.keep is None else args.keep)
        # SIGTERM (systemd, kill) ends a recording like Ctrl-C: between two lines.
        signal.signal(signal.SIGTERM, _interrupt)
    where = ", ".join(endpoints)
    _say(f"listening to {where} for {' and '.join(topics)} messages"
         + (f", recording them to {args.record}" if recorder else ""))
    received = 0
    try:
        while args.count is None or received < args.count:
            message = _next_message(client, timeout, received == 0)
            if message is None:
                _say(f"nothing received for {args.timeout:g} s")
                return 1
            if received == 0:
                _say(f"messages arriving from {message.source}")
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
    except OSError as e:  # standard output on a full disk, say
        raise StreamemoError(f"cannot write to standard output: {e.strerror or e}", 1) from None
    finally:
        client.close()
        if recorder is not None:
            recorder.close()
    if recorder is not None:
        _say(recorder.summary())
    return 0


def _next_message(client, timeout: float | None, first: bool):
    """The next message, or None after `timeout` seconds of nothing; while none has come yet,
    says so once after a few seconds, so a mistyped address or a stopped daemon shows."""
    from streamemo.client import QUIET_NOTICE_S

    if first and (timeout is None or timeout > QUIET_NOTICE_S):
        message = client.receive(QUIET_NOTICE_S)
        if message is not None:
            return message
        if (notice := client.nothing_yet()) is not None:
            _say(notice)
        timeout = None if timeout is None else timeout - QUIET_NOTICE_S
    return client.receive(timeout)
