"""`streamemo record`: clips of your own voice, labelled, for fine-tuning a model to it.

Listens to `--source` (as `run` does), cuts what it hears into utterances at pauses
(`audio/utterances.py`, the voice gate's network) and writes each as
DIR/LABEL/SPEAKER/LABEL-NNNN.flac, the layout `streamemo train --data folder:DIR` reads.
The audio callback only copies (`audio/sources.py`); cutting and writing happen in the
reading loop below, between reads. Ctrl-C (or SIGTERM) ends it between reads, with a summary.
"""

from __future__ import annotations

import getpass
import math
import re
import signal
import sys
import threading
from pathlib import Path

from streamemo import EMOTIONS, StreamemoError
from streamemo.commands._options import FLAGS

READ_S = 0.1  # a read's worth of audio: the live line and Ctrl-C are answered this often
SPEAKER_NAME = re.compile(r"\w[\w.@+-]*")  # a folder name that needs no quoting
LENGTHS = ("--min-length", 0.5, "utterances with less speech than this are not kept"), \
          ("--max-length", 10.0, "a clip is cut at this length, even mid-speech")


def configure(parser) -> None:
    parser.add_argument("dir", metavar="DIR", help="the folder of clips (`streamemo train --data folder:DIR`)")
    parser.add_argument("--label", required=True,
                        help=f"the emotion the clips are spoken with: one of {', '.join(EMOTIONS)}")
    parser.add_argument("--speaker", metavar="NAME",
                        help="whose voice: clips go to DIR/LABEL/NAME, one speaker for the trainer "
                             "(default: your login name)")
    for flag, default, what in LENGTHS:
        parser.add_argument(flag, type=float, default=default, metavar="S", help=f"{what} (default: {default:g} s)")
    parser.add_argument("--config", metavar="FILE", help="TOML config file: its [audio] source and "
                                                         "[pipeline] speech_threshold; flags override it")
    for flag in ("--source", "--capture-rate", "--realtime", "--speech-threshold"):
        key, kwargs = FLAGS[flag]
        parser.add_argument(flag, dest=key, default=None, **kwargs)


def checked_label(name: str) -> str:
    from streamemo.train.datasets import canonical_label

    label = canonical_label(name)
    if label not in EMOTIONS:
        raise StreamemoError(f"--label {name!r} is not an emotion the models know; use one of {', '.join(EMOTIONS)}", 2)
    return label


def checked_speaker(name: str | None) -> str:
    if name is None:
        try:
            name = getpass.getuser()
        except (OSError, KeyError):  # no login name (a container without a passwd entry)
            raise StreamemoError("no login name to name the speaker by: give --speaker NAME", 2) from None
    if not SPEAKER_NAME.fullmatch(name):
        raise StreamemoError(f"--speaker {name!r}: a speaker is a folder name of letters, digits and . _ - @ + "
                             "(e.g. --speaker alice)", 2)
    return name


def check_lengths(min_s: float, max_s: float) -> None:
    for (flag, _, _), value in zip(LENGTHS, (min_s, max_s)):
        if not (math.isfinite(value) and 0.1 <= value <= 60):
            raise StreamemoError(f"{flag} {value:g}: give seconds from 0.1 to 60", 2)
    if min_s >= max_s:
        raise StreamemoError(f"--min-length {min_s:g} is not below --max-length {max_s:g}: no utterance could be "
                             "kept; e.g. --min-length 0.5 --max-length 10", 2)


def main(args) -> int:
    from streamemo.commands._options import config_from_args

    label = checked_label(args.label)
    speaker = checked_speaker(args.speaker)
    check_lengths(args.min_length, args.max_length)
    config = config_from_args(args)

    from streamemo.audio.utterances import ClipFolder

    clips = ClipFolder(Path(args.dir), label, speaker)  # one line if DIR cannot be written
    stop = threading.Event()  # Ctrl-C, SIGTERM, a closed terminal: acted on between reads, never mid-write
    before = {signum: signal.signal(signum, lambda *_: stop.set())
              for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        session = Session(config, clips, args.min_length, args.max_length)
        try:
            session.run(stop)
        finally:
            session.close()
    finally:
        for signum, handler in before.items():  # as they were (a caller in-process keeps its own)
            signal.signal(signum, handler)
    session.summary()
    return 0


class Session:
    """One recording session: the input, the cutter, the clips written, and the live line."""

    def __init__(self, config, clips, min_s: float, max_s: float):
        from streamemo.audio.input import Input
        from streamemo.audio.utterances import UtteranceCutter

        self.clips = clips
        self.input = Input(config.audio)
        self.input.open()  # an unknown source is one line, from the source itself
        self._new_resampler()
        self.cutter = UtteranceCutter(config.pipeline.speech_threshold, min_s, max_s)
        self.written: list[tuple[Path, float]] = []
        self.too_short = 0
        self.dropped = False  # Ctrl-C came mid-speech: that utterance was not kept
        self.before = clips.count()
        self.peak_db = -99.0
        self.live = sys.stderr.isatty()
        print(f"recording {clips.label} clips of {clips.folder.name} from {self.input.device} into {clips.folder} "
              f"({self.before} there already); speak, pause between takes, Ctrl-C to stop", flush=True)

    def run(self, stop: threading.Event) -> None:
        from streamemo.audio.sources import DeviceLost, EndOfStream

        while True:
            if stop.is_set():  # an utterance whose speech has ended is whole; one still spoken is not
                self.dropped = self.cutter.speaking
                if not self.dropped:
                    self._finish()
                return
            if self.input.source is None:  # lost: reopen with the daemon's backoff
                if self.input.retry(stop.wait):
                    self._new_resampler()
                self._show()
                continue
            try:
                chunk = self.input.read(READ_S, want=max(1, int(READ_S * self.input.source.rate)))
            except EndOfStream:  # a file or stdin: its last utterance is whole
                self._finish()
                return
            except DeviceLost:
                self.cutter.restart()  # what comes after the gap is another stream
                self._show()
                continue
            if chunk is None:
                continue
            self.input.arrived()
            self.peak_db = _peak_db(chunk.samples)
            for utterance in self.cutter.feed(self.resampler(chunk.samples)):
                self._done(utterance)
            self._show()

    def _new_resampler(self) -> None:
        """The opened source's rate to the voice detector's."""
        from streamemo.audio.resample import StreamResampler
        from streamemo.stream.speech import RATE

        self.resampler = StreamResampler(self.input.source.rate, RATE)

    def _finish(self) -> None:
        """The utterance in progress, kept if it is one."""
        last = self.cutter.finish()
        if last is not None:
            self._done(last)

    def _done(self, utterance) -> None:
        from streamemo.stream.speech import RATE

        self._clear_line()
        if not utterance.long_enough:
            self.too_short += 1
            print(f"  not kept: {utterance.speech_s:.1f} s of speech, under --min-length {self.cutter.min_s:g} s",
                  flush=True)
            return
        path = self.clips.write(utterance.audio)
        seconds = len(utterance.audio) / RATE
        self.written.append((path, seconds))
        cut = " (cut at --max-length; the rest goes on in the next clip)" if utterance.cut else ""
        print(f"  wrote {path} ({seconds:.1f} s){cut}", flush=True)

    def _show(self) -> None:
        """The live line, on a terminal only: clips so far, the input's peak level, and whether
        an utterance is being recorded."""
        if not self.live:
            return
        if self.input.source is None:
            doing = self.input.message
        elif self.cutter.recording:
            doing = f"recording… {self.cutter.seconds:4.1f} s"
        else:
            doing = "listening…"
        filled = 0 if self.peak_db < -60 else round((self.peak_db + 60) / 6)  # -60 … 0 dBFS in ten steps
        meter = "█" * filled + "·" * (10 - filled)
        clipping = " CLIPPING: move back or lower the input gain" if self.peak_db > -0.5 else ""
        level = "silence" if self.peak_db <= -99 else f"{self.peak_db:.0f} dBFS"
        sys.stderr.write(f"\r\033[K{self.clips.label} · {self.clips.folder.name}: {len(self.written)} new, "
                         f"{self.before + len(self.written)} in all │ {meter} {level:>9} │ {doing}{clipping}")
        sys.stderr.flush()

    def _clear_line(self) -> None:
        if self.live:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    def close(self) -> None:
        self._clear_line()
        self.input.close()

    def summary(self) -> None:
        seconds = sum(s for _, s in self.written)
        print(f"recorded {len(self.written)} {self.clips.label} clips ({seconds:.1f} s) into {self.clips.folder}: "
              f"{self.before + len(self.written)} there now")
        if self.too_short:
            print(f"  {self.too_short} utterance(s) with less speech than --min-length {self.cutter.min_s:g} s not kept")
        if self.dropped:
            print("  the utterance still being spoken at Ctrl-C was not kept")


def _peak_db(samples) -> float:
    import numpy as np

    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    return max(-99.0, 20 * math.log10(peak)) if peak > 0 else -99.0
