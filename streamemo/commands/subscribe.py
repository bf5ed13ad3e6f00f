"""streamemo subscribe: the daemon's messages as JSON lines on stdout (pipe-friendly)."""

from __future__ import annotations

import sys

from streamemo.protocol import TOPICS, to_json
from streamemo.security import add_client_arguments


def configure(parser) -> None:
    parser.add_argument("--connect", action="append", metavar="ENDPOINT",
                        help="publisher to read from (default tcp://127.0.0.1:5556); repeat for several")
    parser.add_argument("--topic", action="append", choices=TOPICS, help="topic to print (default: all); repeatable")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    parser.add_argument("--timeout", type=float, metavar="S", help="exit with status 1 if nothing arrives for S seconds")
    add_client_arguments(parser)


def main(args) -> int:
    from streamemo.publish import Subscriber
    from streamemo.security import curve_client

    curve = curve_client(args.curve_server, args.curve_secret)
    subscriber = Subscriber(args.connect or ["tcp://127.0.0.1:5556"], args.topic or TOPICS, curve=curve)
    received = 0
    timeout_ms = None if args.timeout is None else int(args.timeout * 1000)
    try:
        while args.count is None or received < args.count:
            message = subscriber.receive(timeout_ms)
            if message is None:
                print(f"streamemo subscribe: nothing received for {args.timeout} s", file=sys.stderr)
                return 1
            topic, body = message
            sys.stdout.write(to_json({"topic": topic, **body}) + "\n")
            sys.stdout.flush()
            received += 1
    except BrokenPipeError:  # `streamemo subscribe | head` closing the pipe is a normal end
        sys.stderr.close()
    finally:
        subscriber.close()
    return 0
