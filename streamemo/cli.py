"""The one `streamemo` command. Each subcommand lives in `streamemo/commands/<name>.py`
with `configure(parser)` and `main(args) -> int`; only the chosen one is imported, so
`streamemo --help` and `streamemo subscribe` start without loading torch. What `--help`
says of each command (a line, and examples) is here, in one place."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from streamemo import StreamemoError, __version__

COMMANDS = {
    "run": "run the daemon: audio source -> emotion probabilities -> ZeroMQ",
    "subscribe": "print the daemon's messages as JSON lines",
    "classify": "score audio files offline: a per-window timeline and a whole-file label",
    "devices": "list audio input devices",
    "dash": "terminal dashboard of one or more daemons",
    "record": "record labelled clips of your own voice, to fine-tune a model on (train --init)",
    "train": "train a model on emotional-speech corpora",
    "evaluate": "evaluate a recipe on speaker-independent folds",
    "card": "put an evaluation's figures into a model's card",
    "spectrogram": "draw the log-mel image a model sees for an audio file",
    "proxy": "ZeroMQ forwarder: many daemons to many subscribers",
    "keys": "create CURVE key pairs for encrypted, authenticated publishing",
    "report": "a recorded session (subscribe --record) -> timeline PNG and summary",
    "mqtt": "publish the daemon's emotion to an MQTT broker, with Home Assistant discovery",
    "watch": "run a command when the voice has sounded a certain way for a while",
}


DESCRIPTION = """\
streamemo: how a voice sounds, several times a second (neutral, calm, happy, sad, angry,
fearful, disgust, surprised), from a microphone or a file, published over ZeroMQ."""
EPILOG = """\
getting started:
  streamemo dash --start-daemon     listen to the default microphone and watch (what `make run` does)
  streamemo run                     the daemon alone; `streamemo subscribe` prints what it publishes
  streamemo classify talk.wav       score a recording offline

`streamemo COMMAND --help` gives a command's options and examples."""

# Shown under each command's options.
EXAMPLES = {
    "run": ["streamemo run                                   the default microphone",
            "streamemo run --source USB                      a device or sound-server source whose name holds 'USB'",
            "streamemo run --source talk.flac --no-realtime  a file, as fast as it can be read",
            "arecord -f S16_LE -r 16000 -c 1 | streamemo run --source -",
            "streamemo run --config my.toml --print-config   what a config file and flags add up to"],
    "subscribe": ["streamemo subscribe --topic emotion            the emotion messages as JSON lines",
                  "streamemo subscribe --record session.jsonl     record them for `streamemo report`",
                  "streamemo subscribe --connect tcp://10.0.0.5:5556 --count 10"],
    "classify": ["streamemo classify talk.wav                        per-window table and whole-file label",
                 "streamemo classify clips/ --format csv > out.csv   a folder (recursively), one row per file",
                 "streamemo classify a.wav b.wav --same-speaker      one person's session, in order",
                 "streamemo classify --list files.csv --json         path,speaker rows: one session per speaker"],
    "devices": ["streamemo devices                   then: streamemo run --source NAME-OR-INDEX"],
    "dash": ["streamemo dash                                   watch the local daemon",
             "streamemo dash --connect tcp://10.0.0.5:5556 --connect tcp://10.0.0.6:5556",
             "streamemo dash --start-daemon -- --model small   what `make run ARGS=...` does",
             "streamemo dash --web                             in a browser: http://127.0.0.1:8556"],
    "record": ["streamemo record --label angry voice          clips into voice/angry/$USER, one per utterance",
               "streamemo record --label happy voice --source USB --speaker alice"],
    "train": ["streamemo train --data ravdess:PATH --data emodb:PATH -o models/mine",
              "streamemo train --init models/default --data folder:voice -o models/mine   tuned to your voice"],
    "evaluate": ["streamemo evaluate --data ravdess:PATH --folds ravdess --jobs 2",
                 "streamemo evaluate --model models/mine --test emovo:PATH",
                 "streamemo evaluate --model models/default --model models/mine --test folder:voice-test"],
    "card": ["streamemo card models/mine --evaluation report/report.json --card-md models/MODEL_CARD.md"],
    "spectrogram": ["streamemo spectrogram talk.wav -o talk.png --model small"],
    "proxy": ["streamemo proxy --frontend tcp://127.0.0.1:5556 --backend tcp://0.0.0.0:5560 "
              "--curve-secret server.key_secret"],
    "keys": ["streamemo keys server --dir keys      a daemon's or proxy's pair",
             "streamemo keys alice                  a subscriber's pair: give the publisher alice.key"],
    "report": ["streamemo report session.jsonl -o session-report"],
    "mqtt": ["streamemo mqtt --broker localhost                 Home Assistant finds the sensors by itself",
             "STREAMEMO_MQTT_PASSWORD=... streamemo mqtt --broker hub:8883 --tls --username streamemo",
             "streamemo mqtt --config /etc/streamemo/streamemo.toml  its [mqtt] section (the service)"],
    "watch": ["streamemo watch 'angry >= 0.8 for 3s' --exec notify-send 'You sound angry'",
              "streamemo watch 'sad > 0.5 and valence < -0.3 for 10s' --cooldown 5min --exec curl -s -X POST "
              "http://hass.local:8123/api/webhook/sad",
              "streamemo watch 'speech >= 0.5' --shell --exec 'echo \"$STREAMEMO_EMOTION\" >> heard.log'",
              "streamemo watch --config /etc/streamemo/streamemo.toml   its [[trigger]] tables (the service)"],
}


# Installed by the [train] extra only (pyproject.toml): the daemon runs without them.
TRAINING_LIBRARIES = {"tqdm", "matplotlib", "audiomentations", "pyroomacoustics", "pedalboard"}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamemo", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"streamemo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = {}  # name -> subparser, for errors in that command's own usage
    for name, help_text in COMMANDS.items():
        examples = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
        p = parser.commands[name] = sub.add_parser(name, help=help_text, description=help_text, epilog=examples,
                                                   formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == command:
            _command_module(name).configure(p)
    return parser


def _command_module(name: str):
    return importlib.import_module(f"streamemo.commands.{name}")


def keep_freed_memory() -> None:
    """Lets glibc's malloc keep what scoring frees, for the next window to reuse.

    By default it returns blocks of a few hundred kilobytes and more (a batch of frames,
    a conv layer's output) to the system on each free, and every next window faults them
    in again, page by page: half the page faults of `classify` on a folder, and 8 % of its
    time. Held to 16 MB blocks and 64 MB at the top of the heap, resident memory stays
    where it was (benchmarks/RESULTS-daemon-cost.md). Elsewhere than glibc: nothing."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 16 << 20)  # M_MMAP_THRESHOLD: blocks below this come from the heap
    mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD: free memory kept at the heap's top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    keep_freed_memory()
    # A file name that is not valid UTF-8 reaches Python as lone surrogates; printed back (classify's
    # table and CSV), they are its original bytes again, not a UnicodeEncodeError under a strict locale.
    # Standard error already escapes them (backslashreplace), which keeps logs valid UTF-8.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    command = next((a for a in argv if not a.startswith("-")), None)
    args = None  # a StreamemoError may come from parsing itself (an option's type, e.g. --fold)
    try:
        parser = build_parser(command if command in COMMANDS else None)
        args, extra = parser.parse_known_args(argv)
        if extra:  # what parse_args would say, plus the likely fix for a file given to `run`
            hint = f"; to read an audio file, give it as --source {extra[0]}" if (
                args.command == "run" and not extra[0].startswith("-")) else ""
            (parser.commands.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        if args.command is None:
            parser.print_help()
            return 2
        return int(_command_module(args.command).main(args) or 0)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TRAINING_LIBRARIES:
            raise
        print(f"streamemo {command}: error: needs the training libraries ({e.name} is not installed): "
              "pip install 'streamemo[train]'", file=sys.stderr)
        return 2
    except StreamemoError as e:
        print(f"streamemo {command if args is None else args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read the output stopped reading (`streamemo classify … | head -1`): end quietly,
        # as Unix tools do, with the status of one that SIGPIPE ended. Python would complain
        # again at exit, flushing what is left into the closed pipe: that goes to /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def setup_logging(level: str) -> None:
    """Levels and no timestamps under journald (it stamps lines itself), timestamps otherwise."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    numeric = getattr(logging, level.upper(), None)
    if not isinstance(numeric, int):
        raise StreamemoError(f"unknown log level {level!r}; use debug, info, warning or error", 2)
    logging.basicConfig(level=numeric, format=fmt, stream=sys.stderr, force=True)
