"""streamemo watch: run a command when the voice has sounded a certain way for a while.

    streamemo watch 'angry >= 0.8 for 3s' --exec notify-send 'You sound angry'
    streamemo watch --config /etc/streamemo/streamemo.toml    # its [[trigger]] tables: what the service runs

A subscriber beside the daemon, so the daemon's loop never waits on a command. What a
trigger says and when it fires: streamemo/triggers.py. Each command runs without a shell
(unless asked for), with the event as one JSON line on its standard input and in STREAMEMO_*
environment variables; at most one copy per trigger runs at a time (a trigger that fires
while its command still runs is logged and skipped, so a slow command cannot pile up); its
output goes where watch's goes; its failure is logged, never fatal.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time

from streamemo import StreamemoError
from streamemo.config import Config, TriggerConfig
from streamemo.protocol import EmotionMessage, to_json
from streamemo.security import add_client_arguments
from streamemo.triggers import Trigger, parse, parse_duration

log = logging.getLogger("streamemo.watch")

POLL_S = 0.25  # how often running commands are looked at while no message comes
STOP_GRACE_S = 2.0  # on stopping: how long commands still running get after SIGTERM, before SIGKILL
MAX_LABEL_SETS_WARNED = 100  # label sets told about; a publisher inventing more is not told about again

# The environment variables each command gets, and the event's field each holds ("" for null).
ENVIRONMENT = {"STREAMEMO_TRIGGER": "trigger", "STREAMEMO_EMOTION": "emotion", "STREAMEMO_PROBABILITY": "probability",
               "STREAMEMO_AROUSAL": "arousal", "STREAMEMO_VALENCE": "valence", "STREAMEMO_SPEECH": "speech",
               "STREAMEMO_TIME": "time", "STREAMEMO_HELD_S": "held_s", "STREAMEMO_SOURCE": "source"}

GRAMMAR = """\
run a command when the voice has sounded a certain way for a while

a trigger:   SUBJECT COMPARISON NUMBER [and SUBJECT COMPARISON NUMBER ...] [for DURATION]
  SUBJECT     an emotion (neutral, calm, happy, sad, angry, fearful, disgust, surprised): its
              probability, 0 to 1; arousal or valence, -1 to 1; speech, the voice gate's
              speech probability, 0 to 1
  COMPARISON  >=  >  <=  <
  DURATION    500ms, 3s, 2min: the condition held on every message over that long of the
              daemon's audio clock (not the wall clock); without it, one message is enough

  Silence, music and noise (messages with voiced: false) make every clause about an emotion,
  arousal or valence false; speech is read on every message ('speech < 0.1 for 5min': nobody
  has spoken for five minutes). After firing, a trigger rests for its cool-down, then the
  condition must hold a whole DURATION again.

the command gets the event as one JSON line on its standard input, and in the environment:
  STREAMEMO_TRIGGER, STREAMEMO_EMOTION (the daemon's top label), STREAMEMO_PROBABILITY (its
  probability), STREAMEMO_AROUSAL, STREAMEMO_VALENCE, STREAMEMO_SPEECH, STREAMEMO_TIME (unix
  seconds), STREAMEMO_HELD_S, STREAMEMO_SOURCE and STREAMEMO_EVENT (the JSON); "" for none.
  It runs without a shell (--shell: one string for /bin/sh), one copy at a time per trigger."""


def configure(parser) -> None:
    parser.description = GRAMMAR
    parser.add_argument("trigger", nargs="?", metavar="TRIGGER", help="when to run the command, e.g. "
                        "'angry >= 0.8 for 3s' (quote it: it has spaces and >)")
    parser.add_argument("--exec", nargs=argparse.REMAINDER, dest="exec_argv", metavar="CMD",
                        help="the command and its arguments: everything after --exec, so give it last")
    parser.add_argument("--shell", action="store_true", help="run CMD, one string, with /bin/sh -c "
                        "(pipes, &&, $STREAMEMO_* expanded by the shell)")
    parser.add_argument("--cooldown", metavar="DURATION", help="after firing, rest this long, e.g. 30s, 500ms, 2min "
                        f"(default: {TriggerConfig.cooldown_s:g}s)")
    parser.add_argument("--config", metavar="FILE", help="TOML config file: every [[trigger]] table in it (and "
                        "TRIGGER --exec CMD as one more), publish.bind and log.level")
    parser.add_argument("--connect", action="append", metavar="ENDPOINT", help="the daemon's endpoint; repeat for "
                        "several (default: where publish.bind publishes, tcp://127.0.0.1:5556 unless the config "
                        "says else)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="log verbosity (default: log.level, info)")
    add_client_arguments(parser)


def triggers_wanted(args, config: Config) -> list[TriggerConfig]:
    """The config's [[trigger]] tables and the one on the command line; one line (exit 2) for a mistake."""
    wanted = list(config.trigger)
    if args.trigger is None:
        if args.exec_argv is not None:
            raise StreamemoError("--exec needs a trigger before it, e.g. "
                                 "streamemo watch 'angry >= 0.8 for 3s' --exec notify-send angry", 2)
        for flag in ("--shell", "--cooldown"):
            if getattr(args, flag[2:]) not in (None, False):
                raise StreamemoError(f"{flag} goes with a TRIGGER and --exec on the command line; in a config file "
                                     f"give {'shell' if flag == '--shell' else 'cooldown_s'} in each [[trigger]]", 2)
        if not wanted:
            where = f"{args.config} has no [[trigger]] tables" if args.config else "nothing to watch"
            raise StreamemoError(f"{where}: give a trigger and a command, e.g. streamemo watch 'angry >= 0.8 for 3s' "
                                 "--exec notify-send angry, or --config FILE with [[trigger]] tables", 2)
        return wanted
    parse(args.trigger)  # its own one-line error before anything else is said
    if not args.exec_argv:
        raise StreamemoError(f"'{args.trigger}' needs a command to run: --exec CMD [ARGS...], given last", 2)
    if args.shell and len(args.exec_argv) != 1:
        raise StreamemoError("--shell runs one string: quote the whole command, e.g. "
                             "--shell --exec 'notify-send angry && paplay bell.oga'", 2)
    cooldown = TriggerConfig.cooldown_s if args.cooldown is None else parse_duration(args.cooldown, "--cooldown")
    run = args.exec_argv[0] if args.shell else tuple(args.exec_argv)
    return [*wanted, TriggerConfig(args.trigger, run, args.shell, cooldown)]


class Watch:
    """One trigger and its command: fires it, keeps at most one copy running, and counts."""

    def __init__(self, wanted: TriggerConfig):
        self.trigger = Trigger(parse(wanted.when), wanted.cooldown_s)
        self.when = self.trigger.condition.text
        self.argv = ["/bin/sh", "-c", wanted.run] if wanted.shell else list(wanted.run)
        self.shown = wanted.run if wanted.shell else shlex.join(wanted.run)
        self.running: subprocess.Popen | None = None
        self.fired = self.started = self.failed = self.busy = 0
        self._labels: tuple[str, ...] = ()  # the last label set checked against the trigger's emotions
        self._warned: set[tuple[str, ...]] = set()
        self._told_busy = False  # said that the running command held up a firing

    def check_program(self) -> None:
        """The program exists and may be run: a missing one is one line at start, not a log line per firing."""
        program = self.argv[0]
        found = shutil.which(program)
        if found is None:
            where = "is not an executable file" if os.sep in program else "is not on PATH"
            raise StreamemoError(f"trigger '{self.when}': the program '{program}' {where}; install it or give its "
                                 "full path", 2)

    def feed(self, message: EmotionMessage) -> bool:
        """Whether the trigger fired on `message` (its command started, or was still running)."""
        if message.labels != self._labels:
            self._check_labels(message)
        held = self.trigger.feed(message)
        if held is None:
            return False
        self.fired += 1
        self.reap()
        if self.running is not None:
            self.busy += 1
            if not self._told_busy:  # once per run of the command: a zero cool-down fires every hop
                log.warning("'%s' fired, but its command (pid %d) still runs: not started again while it does",
                            self.when, self.running.pid)
                self._told_busy = True
            return True
        event = make_event(self.when, message, held)
        line = to_json(event)
        environment = os.environ | {name: _text(event[key]) for name, key in ENVIRONMENT.items()}
        environment["STREAMEMO_EVENT"] = _text(line)
        log.info("'%s' fired (held %.2f s; %s): running %s", self.when, held, self._values(message), self.shown)
        try:
            self.running = subprocess.Popen(self.argv, stdin=subprocess.PIPE, env=environment)
        except (OSError, ValueError) as e:  # removed since the start, or an environment too big for the system
            self.failed += 1
            log.error("'%s': cannot run %s: %s", self.when, self.shown, getattr(e, "strerror", None) or e)
            return True
        self.started += 1
        self._told_busy = False
        # Without blocking: a pipe takes 64 KiB at once and an event is under 2 kB, so only an
        # absurd message or a command that already exited leaves any of it unwritten.
        fd = self.running.stdin.fileno()
        os.set_blocking(fd, False)
        try:
            os.write(fd, (line + "\n").encode())
        except OSError:
            pass
        self.running.stdin.close()
        return True

    def reap(self) -> None:
        """Notes a finished command: its failure is logged, never fatal."""
        if self.running is None or self.running.poll() is None:
            return
        code, pid = self.running.returncode, self.running.pid
        self.running = None
        if code == 0:
            log.debug("'%s': %s (pid %d) finished", self.when, self.shown, pid)
            return
        self.failed += 1
        how = f"exited with status {code}" if code > 0 else f"was ended by signal {-code} ({signal.strsignal(-code)})"
        log.warning("'%s': %s %s", self.when, self.shown, how)

    def stop(self, deadline: float) -> None:
        """Ends a command still running when watch stops: SIGTERM, then SIGKILL after the deadline."""
        self.reap()
        if self.running is None:
            return
        log.info("'%s': stopping %s (pid %d), still running", self.when, self.shown, self.running.pid)
        self.running.terminate()
        try:
            self.running.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.running.kill()
            self.running.wait()
        self.running = None

    def summary(self) -> str:
        return (f"'{self.when}': fired {_times(self.fired)}; the command ran {_times(self.started)}, failed "
                f"{_times(self.failed)}, and was still running {_times(self.busy)}")

    def _check_labels(self, message: EmotionMessage) -> None:
        self._labels = message.labels
        missing = [e for e in self.trigger.condition.emotions() if e not in message.labels]
        if missing and message.labels not in self._warned and len(self._warned) < MAX_LABEL_SETS_WARNED:
            self._warned.add(message.labels)
            log.warning("'%s': the model at %s has no %s (its labels: %s), so this trigger cannot fire on its "
                        "messages", self.when, message.source, " or ".join(repr(e) for e in missing),
                        ", ".join(message.labels))

    def _values(self, message: EmotionMessage) -> str:
        """What the trigger's subjects read on `message`, for the log: 'angry 0.86, arousal 0.41'."""
        values: dict[str, float] = {}
        for clause in self.trigger.condition.clauses:
            value = clause.value(message)
            if value is not None:
                values.setdefault(clause.subject, value)
        return ", ".join(f"{subject} {value:.2f}" for subject, value in values.items())


def make_event(when: str, message: EmotionMessage, held: float) -> dict:
    """What a command is told: the trigger, and the message it fired on."""
    return {"trigger": when, "held_s": round(held, 3), "source": message.source, "time": message.t_capture,
            "t_audio": message.t_audio, "seq": message.seq, "emotion": message.top,
            "probability": message.confidence, "arousal": message.arousal, "valence": message.valence,
            "speech": message.speech, "voiced": message.voiced,
            "probs": None if message.probs is None else dict(zip(message.labels, message.probs)),
            "model": message.model}


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _text(value) -> str:
    """An environment variable's value: "" for null; no NUL, and text the system can encode."""
    text = "" if value is None else str(value)
    return text.replace("\0", "").encode("utf-8", "replace").decode("utf-8")


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(args) -> int:
    from streamemo.cli import setup_logging
    from streamemo.client import Client, local_endpoint
    from streamemo.service import Notifier

    config = Config.load(args.config)
    watches = [Watch(wanted) for wanted in triggers_wanted(args, config)]
    for watch in watches:
        watch.check_program()
    setup_logging(args.log_level or config.log.level)
    endpoints = args.connect or [local_endpoint(config.publish.bind)]
    where = ", ".join(endpoints)
    client = Client(endpoints, ["emotion"], args.curve_server, args.curve_secret)
    signal.signal(signal.SIGTERM, _interrupt)  # systemctl stop ends it as Ctrl-C does
    notifier = Notifier()  # before any command starts: they must not talk to systemd for us
    log.info("watching %s for %s", where, "; ".join(
        f"'{w.when}' to run {w.shown} (cool-down {w.trigger.cooldown_s:g} s)" for w in watches))
    notifier.ready(f"watching {where} for {_count(len(watches), 'trigger')}")
    heard, last = 0, None
    try:
        while True:
            message = client.receive(POLL_S)
            if message is not None:
                if heard == 0:
                    log.info("messages arriving from %s", message.source)
                heard, last = heard + 1, message
                for watch in watches:
                    if watch.feed(message):
                        notifier.status(f"'{watch.when}' fired at {time.strftime('%H:%M:%S')} "
                                        f"({_count(sum(w.fired for w in watches), 'firing')} since the start)")
            elif (notice := client.nothing_yet()) is not None:
                log.info("%s", notice)
            for watch in watches:
                watch.reap()
    except KeyboardInterrupt:
        pass
    finally:
        notifier.stopping()
        client.close()
        deadline = time.monotonic() + STOP_GRACE_S
        for watch in watches:
            watch.stop(deadline)
    log.info("heard %d emotion messages%s", heard, "" if last is None else
             f", the last from {last.source} at {last.t_audio:.2f} s of its audio")
    for watch in watches:
        log.info("%s", watch.summary())
    return 0
