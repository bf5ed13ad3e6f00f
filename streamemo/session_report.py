"""A recorded session (the JSON lines `streamemo subscribe` writes) -> a timeline PNG per
source and a short Markdown summary: what was heard, when, for how long, and how it moved.

Reading is streamed and bounded, whatever the file holds: lines are read one at a time
(one longer than `MAX_LINE_BYTES` is skipped unread), each is validated as every reader of
the wire validates a message (`protocol.validate`), and what is kept is packed into arrays
of about 50 bytes a message, up to `MAX_KEPT_BYTES` (some 3 million messages); a file whose
first 16 MiB hold no message is refused as not a recording. A line that is not a valid
message (a half-written last line, garbage, a value out of range) is skipped and counted.

Order and time come from the messages, not the file: each source's messages are sorted by
the time they were sent and their sequence number, a repeated one is dropped, and they
fall into *runs*, stretches whose sequence numbers and audio clock (`t_audio`) advance
together. A run is one daemon's stream without a break (a restart, a lost device or a
message whose clock disagrees starts another); its time is its audio clock, placed on the
wall clock by its first message's capture time. Recorded time is the sum of the runs, so neither a pause
between them nor one absurd timestamp inflates it; messages missed are the gaps in
sequence numbers within runs.
"""

from __future__ import annotations

import html
import json
import math
import re
from array import array
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from streamemo import StreamemoError
from streamemo.dimensions import arousal_valence
from streamemo.protocol import ProtocolError, validate

MAX_LINE_BYTES = 64 << 10  # a message is under 2 kB; a longer line is not one
SNIFF_BYTES = 16 << 20  # no message in this much: not a recording (/dev/zero, a video)
MAX_KEPT_BYTES = 150 << 20  # the packed messages of one report: about 3 million of 8 labels
MAX_SESSIONS = 1000  # sources (and label sets) told apart; messages of any more are only counted
MAX_TIMELINES = 8  # PNGs drawn, for the sessions with the most messages
MAX_SEGMENTS = 3000  # a timeline has more messages than this: drawn in as many time slices
DEFAULT_HOP_S = 0.24  # the daemon's hop, for a session too short to measure its own
OTHER_BYTES = 51  # packed bytes of a message beside its probabilities (one byte a label)
PROB_SCALE, NO_PROBS = 254, 255  # a probability packed in a byte: enough for a picture
MAX_MODELS = 20  # model names listed per session

# The dashboard's colours (dashboard/dashboard.tcss), so an emotion looks the same in both.
COLOURS = {"neutral": "#93a1a1", "calm": "#2aa198", "happy": "#d9a400", "sad": "#268bd2", "angry": "#dc322f",
           "fearful": "#8b7fd6", "disgust": "#859900", "surprised": "#d33682"}


@dataclass
class Session:
    """One source's emotion messages over one label set, packed column by column."""

    source: str
    labels: tuple[str, ...]
    seq: array = field(default_factory=lambda: array("q"))
    t_publish: array = field(default_factory=lambda: array("d"))
    t_capture: array = field(default_factory=lambda: array("d"))
    t_audio: array = field(default_factory=lambda: array("d"))
    voiced: array = field(default_factory=lambda: array("b"))
    top: array = field(default_factory=lambda: array("h"))  # index into labels; -1: none
    probs: array = field(default_factory=lambda: array("B"))  # smoothed, x PROB_SCALE; NO_PROBS: none
    dims: array = field(default_factory=lambda: array("f"))  # arousal, valence; NaN: none
    models: dict[str, None] = field(default_factory=dict)  # the models it was heard with, in order

    def __post_init__(self):
        self.no_probs = bytes([NO_PROBS]) * len(self.labels)

    def add(self, m: dict) -> None:
        self.seq.append(m["seq"])
        self.t_publish.append(m["t_publish"])
        self.t_capture.append(m["t_capture"])
        self.t_audio.append(m["t_audio"])
        self.voiced.append(m["voiced"])
        self.top.append(-1 if m["top"] is None else self.labels.index(m["top"]))
        probs = m["probs"]
        if m["voiced"] and probs is not None:  # the held values of a pause are not drawn: not kept
            self.probs.extend([round(PROB_SCALE * p) for p in probs])
        else:
            self.probs.extend(self.no_probs)
        arousal, valence = m.get("arousal"), m.get("valence")
        if arousal is None and m["voiced"]:  # a version 1 message: derived as the daemon does
            arousal, valence = arousal_valence(self.labels, probs) or (None, None)
        self.dims.extend((math.nan if arousal is None else arousal, math.nan if valence is None else valence))
        if len(self.models) < MAX_MODELS:
            self.models[m["model"]] = None

    def __len__(self) -> int:
        return len(self.seq)


@dataclass
class Reading:
    """What a recording held: sessions, and what was left out and why."""

    sessions: list[Session]
    invalid: int = 0  # lines that are not valid messages
    first_problem: str = ""  # what was wrong with the first of them
    status: int = 0  # status messages (valid; not part of the report)
    left_out: int = 0  # messages of sources past MAX_SESSIONS


def read_recording(path: Path) -> Reading:
    """Streams the recording; raises StreamemoError (exit 1) for one that is not readable,
    not a recording, or more than a report holds."""
    sessions: dict[tuple[str, tuple[str, ...]], Session] = {}
    reading = Reading([])
    kept_bytes = read_bytes = 0
    try:
        with open(path, "rb") as f:
            for line, size in _lines(f):
                read_bytes += size
                if not sessions and not reading.status and read_bytes > SNIFF_BYTES:
                    raise StreamemoError(f"{path}: no streamemo message in its first {SNIFF_BYTES >> 20} MiB: it is "
                                         "not a recording (`streamemo subscribe --record FILE` makes one)", 1)
                if line is None:
                    reading.invalid += 1
                    reading.first_problem = reading.first_problem or f"a line longer than {MAX_LINE_BYTES} bytes"
                    continue
                if not line.strip():
                    continue
                try:
                    topic, m = _message(line)
                except ProtocolError as e:
                    reading.invalid += 1
                    reading.first_problem = reading.first_problem or str(e)
                    continue
                if topic == "status":
                    reading.status += 1
                    continue
                key = (m["source"], tuple(m["labels"]))
                session = sessions.get(key)
                if session is None:
                    if len(sessions) >= MAX_SESSIONS:
                        reading.left_out += 1
                        continue
                    session = sessions[key] = Session(*key)
                session.add(m)
                kept_bytes += OTHER_BYTES + len(key[1])
                if kept_bytes > MAX_KEPT_BYTES:
                    raise StreamemoError(f"{path}: more messages than one report holds (about "
                                         f"{MAX_KEPT_BYTES // (OTHER_BYTES + 8):,} of 8 labels); report a part of it, "
                                         "e.g. `split -l 1000000` it first", 1)
    except OSError as e:
        raise StreamemoError(f"cannot read {path}: {e.strerror or e}", 1) from None
    reading.sessions = list(sessions.values())
    if not reading.sessions:
        why = f"; the first line skipped: {reading.first_problem}" if reading.first_problem else ""
        raise StreamemoError(f"{path}: no emotion messages{why}; record a session with "
                             "`streamemo subscribe --record FILE`", 1)
    return reading


def _lines(f):
    """(line, bytes read) for each line of a binary file. A line longer than MAX_LINE_BYTES
    comes as None, then its rest as empty pieces: it is never held whole, and the bytes
    read are counted all along (/dev/zero is one endless line)."""
    inside_long = False
    while chunk := f.readline(MAX_LINE_BYTES + 1):
        ends = chunk.endswith(b"\n")
        if inside_long:
            yield b"", len(chunk)
        elif len(chunk) > MAX_LINE_BYTES and not ends:
            yield None, len(chunk)
        else:
            yield chunk, len(chunk)
        inside_long = (inside_long or len(chunk) > MAX_LINE_BYTES) and not ends


def _message(line: bytes) -> tuple[str, dict]:
    """(topic, body) of one recorded line: {"topic": ..., **body}, as `subscribe` writes it
    (a line without a topic is an emotion message, as the first recordings were)."""
    try:
        m = _JSON.decode(line.decode())
    except ValueError as e:  # not UTF-8 or not JSON
        raise ProtocolError(f"not JSON ({e})") from None
    except RecursionError:
        raise ProtocolError("nested too deep") from None
    if not isinstance(m, dict):
        raise ProtocolError("not a JSON object")
    topic = m.pop("topic", "emotion")
    if topic not in ("emotion", "status"):
        raise ProtocolError("unknown topic")
    validate(topic, m)
    return topic, m


def _no_constant(name: str):
    raise ProtocolError(f"{name} is not a number JSON allows")


_JSON = json.JSONDecoder(parse_constant=_no_constant)  # made once: json.loads makes one a call


# --- time: order, runs and durations ----------------------------------------------------------------


@dataclass
class Timeline:
    """A session's messages in order, with their place in time and the runs they form."""

    order: np.ndarray  # indices into the session's columns, in time order, repeats dropped
    clock: np.ndarray  # unix seconds at each message's end (its window's last sample)
    span: np.ndarray  # seconds of audio each message stands for (its hop, less where they crowd)
    run_starts: np.ndarray  # positions in `order` where a run begins
    hop_s: float
    missed: int
    repeated: int


def timeline(session: Session) -> Timeline:
    # Written for memory: a gigabyte of recording is 2 million messages, and each array of
    # them 16 MB, so temporaries are dropped as soon as they are used.
    seq = np.frombuffer(session.seq, dtype=np.int64)
    t_publish = np.frombuffer(session.t_publish, dtype=np.float64)
    # In the order sent: capture times are not (a file scored in 8 s batches stamps a batch's
    # windows back from the moment it was read), and a restart starts seq again.
    order = np.lexsort((np.frombuffer(session.t_audio, dtype=np.float64), seq, t_publish))
    s, p = seq[order], t_publish[order]
    repeat = (s[1:] == s[:-1]) & (p[1:] == p[:-1])  # the same message twice
    del p
    if repeat.any():
        keep = np.concatenate([[True], ~repeat])
        order, s = order[keep], s[keep]
        del keep
    a = np.frombuffer(session.t_audio, dtype=np.float64)[order]  # becomes the clock, in place
    ds = np.diff(s)
    del s
    da = np.diff(a)
    steps = da[(ds == 1) & (da > 0)]
    hop = float(np.median(steps)) if len(steps) else DEFAULT_HOP_S
    del steps
    # A run goes on while the sequence number advances and the audio clock moves with it, by
    # about a hop for each number (a gap in both: messages missed on the way).
    goes_on = (ds > 0) & (da > 0.5 * ds * hop) & (da < 1.5 * ds * hop + 0.05)
    missed = int((ds[goes_on] - 1).sum())
    del ds
    span = np.full(len(a), hop, dtype=np.float32)  # the audio a message stands for: its hop,
    span[1:][goes_on] = np.minimum(hop, da[goes_on])  # less where messages crowd
    del da
    starts = np.concatenate([[0], np.flatnonzero(~goes_on) + 1])
    lasts = np.append(starts[1:], len(a)) - 1
    # Each run sits at its first message's capture time, or a hop after the run before ends
    # if that is later (files scored faster than real time overlap otherwise):
    # begin[r] = max(capture[r], begin[r-1] + length[r-1] + hop), as a running maximum.
    length = a[lasts] - a[starts]
    before = np.concatenate([[0.0], np.cumsum(length + hop)[:-1]])
    capture = np.frombuffer(session.t_capture, dtype=np.float64)[order[starts]]
    begin = np.maximum.accumulate(capture - before) + before
    a += np.repeat(begin - a[starts], lasts - starts + 1)
    return Timeline(order, a, span, starts, hop, missed, int(repeat.sum()))


def summarise(session: Session, time: Timeline) -> dict:
    """Durations, time shares of each emotion (by the published top label) and mean
    arousal/valence over the voiced time."""
    voiced = np.frombuffer(session.voiced, dtype=np.int8)[time.order].astype(bool)
    top = np.frombuffer(session.top, dtype=np.int16)[time.order]
    dims = np.frombuffer(session.dims, dtype=np.float32).reshape(-1, 2)[time.order][voiced]
    lasts = np.append(time.run_starts[1:], len(time.order)) - 1
    duration = float((time.clock[lasts] - time.clock[time.run_starts]).sum() + time.hop_s * len(lasts))
    voiced_s = float(time.span[voiced].sum())
    labelled = voiced & (top >= 0)
    by_label = np.bincount(top[labelled], weights=time.span[labelled], minlength=len(session.labels))
    return {
        "source": session.source,
        "labels": session.labels,
        "models": list(session.models),
        "messages": len(time.order),
        "repeated": time.repeated,
        "missed": time.missed,  # gaps in seq within runs: messages this recording never got
        "runs": len(time.run_starts),
        "start": float(time.clock[0] - time.span[0]),
        "end": float(time.clock[-1]),
        "duration_s": duration,
        "voiced_s": voiced_s,
        "shares": {label: float(t) / voiced_s if voiced_s else 0.0 for label, t in zip(session.labels, by_label)},
        "arousal": _mean(dims[:, 0]),
        "valence": _mean(dims[:, 1]),
    }


def _mean(values: np.ndarray) -> float | None:
    """The mean of the non-NaN values; None when there are none."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else None


# --- the picture ------------------------------------------------------------------------------------


def segments(session: Session, time: Timeline) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, probabilities, arousal/valence) of what the timeline draws: each message
    over the audio it stands for, or, for a long session, time slices of it (a PNG has no
    more pixels). Probabilities and dimensions are NaN where nothing was voiced: the held
    values the daemon publishes through a pause are not drawn as if heard."""
    n_labels = len(session.labels)
    packed = np.frombuffer(session.probs, dtype=np.uint8).reshape(-1, n_labels)
    dims = np.frombuffer(session.dims, dtype=np.float32).reshape(-1, 2)
    voiced = np.frombuffer(session.voiced, dtype=np.int8)[time.order].astype(bool)
    end = time.clock
    if len(end) <= MAX_SEGMENTS:
        probs = packed[time.order]
        probs = np.where(probs == NO_PROBS, np.nan, probs / PROB_SCALE)  # none: unvoiced
        return end - time.span, end, probs, np.where(voiced[:, None], dims[time.order], np.nan)
    # Slices of equal time: each the mean of the voiced messages that end in it, one label at
    # a time, and only the voiced messages copied (2 million messages: 16 MB an array).
    edges = np.linspace(end[0] - time.span[0], end[-1], MAX_SEGMENTS + 1)
    slot = np.searchsorted(edges, end, side="left")
    slot -= 1
    np.clip(slot, 0, MAX_SEGMENTS - 1, out=slot)
    slot = slot.astype(np.int16)
    present = np.bincount(slot, minlength=MAX_SEGMENTS) > 0
    heard_at = time.order[voiced]
    slot = slot[voiced]
    del voiced
    heard = np.bincount(slot, minlength=MAX_SEGMENTS)
    with np.errstate(invalid="ignore", divide="ignore"):  # a slice with no voice: NaN, drawn as none
        probs = np.stack([np.bincount(slot, packed[heard_at, k], MAX_SEGMENTS) for k in range(n_labels)], axis=1)
        probs /= heard[:, None] * PROB_SCALE
        means = np.stack([np.bincount(slot, np.nan_to_num(dims[heard_at, k]), MAX_SEGMENTS) for k in range(2)],
                         axis=1)
        means /= heard[:, None]
    return edges[:-1][present], edges[1:][present], probs[present], means[present]


def plot_timeline(session: Session, time: Timeline, out: Path) -> None:
    """Smoothed probabilities stacked over clock time where voice was heard, arousal and
    valence below; stretches without voice shaded grey in both, times not recorded blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    start, end, probs, dims = segments(session, time)
    tz = datetime.fromtimestamp(float(start[0])).astimezone().tzinfo
    start, end = start / 86400.0, end / 86400.0  # matplotlib's dates: days since 1970, UTC
    xs, ys, lines_x, lines_y = _steps(start, end, probs, dims)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True, height_ratios=[3, 2])
    spare = iter(plt.get_cmap("tab10").colors)  # for a model's own classes
    labels = [_plot_text(label, 30) for label in session.labels]
    colours = [COLOURS.get(label) or next(spare, "0.3") for label in session.labels]
    top.stackplot(xs, np.nan_to_num(ys).T, labels=labels, colors=colours, alpha=0.9, step="post")
    silent = np.isnan(probs).all(axis=1)
    for ax in (top, bottom):  # no voice: the daemon classified nothing there
        ax.broken_barh(list(zip(start[silent], end[silent] - start[silent])), (-1, 2), color="0.85", zorder=0, lw=0)
    top.set_ylim(0, 1)
    top.set_ylabel("probability (smoothed)")
    if len(labels) <= 20:
        top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    name = _plot_text(Path(session.source).name or session.source, 60)
    top.set_title(f"{name}: emotions over time (grey: no voice)")
    bottom.plot(lines_x, lines_y[:, 0], color="tab:red", label="arousal")
    bottom.plot(lines_x, lines_y[:, 1], color="tab:blue", label="valence")
    bottom.axhline(0, color="0.5", lw=0.8)
    bottom.set_ylim(-1, 1)
    bottom.set_ylabel("derived from probabilities")
    bottom.set_xlabel(f"clock time ({_utc_offset(tz)})")
    locator = mdates.AutoDateLocator(tz=tz)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
    bottom.set_xlim(start[0], end[-1])
    bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    fig.tight_layout()
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)  # a reader never sees half a PNG


def _steps(start, end, probs, dims):
    """Step-plot vertices: each segment's values from its start, back to nothing at its end
    when the next does not follow on (a pause in recording is blank); line points at each
    segment's middle, broken by NaN across such a pause."""
    follows = np.concatenate([np.isclose(start[1:], end[:-1], rtol=0, atol=1e-9), [False]])
    gap_at = np.flatnonzero(~follows)
    xs = np.insert(start, gap_at + 1, end[gap_at])
    ys = np.insert(probs, gap_at + 1, np.nan, axis=0)
    middle = (start + end) / 2
    lines_x = np.insert(middle, gap_at + 1, end[gap_at])
    lines_y = np.insert(dims, gap_at + 1, np.nan, axis=0)
    return xs, ys, lines_x, lines_y


def _utc_offset(tz) -> str:
    offset = datetime.now(tz).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    return f"UTC{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


# --- text: what a source or label is called, made safe to show ------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MARKDOWN = re.compile(r"([\\`*_\[\]#|~!])")  # what acts mid-line (the text never starts one)


def plain(text: str, limit: int) -> str:
    """`text` on one line of at most `limit` characters, without control characters: a
    source's or label's name as the daemon sent it, which anyone can choose."""
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plot_text(text: str, limit: int) -> str:
    return plain(text, limit).replace("$", r"\$")  # matplotlib would read $...$ as mathematics


def _md(text: str, limit: int = 80) -> str:
    """`text` for Markdown: one line, at most `limit` characters, HTML and Markdown shown as
    written rather than acted on."""
    return _MARKDOWN.sub(r"\\\1", html.escape(plain(text, limit), quote=False)) or "(no name)"


def markdown(reading: Reading, summaries: list[dict], pictures: list[str | None], source_file: str) -> str:
    lines = [f"# Session report: {_md(source_file)}", ""]
    if reading.invalid:
        lines += [f"{reading.invalid} line(s) were not valid messages and were skipped (the first: "
                  f"{_md(reading.first_problem, 160)}).", ""]
    if reading.left_out:
        lines += [f"{reading.left_out} message(s) from sources past the first {MAX_SESSIONS} were "
                  "left out.", ""]
    undrawn = sum(p is None for p in pictures)
    if undrawn:
        lines += [f"{len(pictures)} sources: timelines are drawn for the {MAX_TIMELINES} with the most messages; "
                  f"the other {undrawn} are summarised only.", ""]
    names = [s["source"] for s in summaries]
    for s, picture in zip(summaries, pictures):
        title = _md(s["source"])
        if names.count(s["source"]) > 1:  # one source, two label sets (a reload with another model)
            title += f" ({_md(', '.join(s['labels']), 60)})"
        tz = datetime.fromtimestamp(s["start"]).astimezone().tzinfo
        lines += [f"## {title}", "",
                  f"- {_clock(s['duration_s'])} recorded, {_clock(s['voiced_s'])} with voice "
                  f"({100 * s['voiced_s'] / max(s['duration_s'], 1e-9):.0f} %); {s['messages']} messages, "
                  f"{s['missed']} missed (gaps in seq)"
                  + (f", {s['repeated']} repeated and dropped" if s["repeated"] else ""),
                  f"- from {_when(s['start'], tz)} to {_when(s['end'], tz)} ({_utc_offset(tz)})"
                  + (f", in {s['runs']} runs (the daemon restarted or its audio was interrupted)" if s["runs"] > 1
                     else ""),
                  f"- model: {', '.join(_md(m) for m in s['models'])}"]
        if s["arousal"] is not None:
            lines.append(f"- mean while voiced: arousal {s['arousal']:+.2f}, valence {s['valence']:+.2f} "
                         "(-1 to +1, derived from the probabilities)")
        ranked = sorted(s["shares"].items(), key=lambda kv: -kv[1])
        lines += ["", "| emotion | share of voiced time | time |", "|---|---|---|"]
        lines += [f"| {_md(label, 40)} | {100 * share:.0f} % | {_clock(share * s['voiced_s'])} |"
                  for label, share in ranked if share > 0]
        lines += [""] + ([f"![timeline]({picture})", ""] if picture else [])
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _when(unix: float, tz) -> str:
    return datetime.fromtimestamp(unix, tz).strftime("%Y-%m-%d %H:%M:%S")


def write_report(recording: Path, out_dir: Path) -> tuple[Path, list[dict]]:
    """Reads `recording` and writes report.md and the timeline PNGs into `out_dir`; returns
    report.md's path and each session's summary, sessions with the most messages first."""
    reading = read_recording(recording)
    sessions = sorted(reading.sessions, key=len, reverse=True)
    times = [timeline(session) for session in sessions]
    summaries = [summarise(session, time) for session, time in zip(sessions, times)]
    pictures = ["timeline.png" if len(sessions) == 1 else f"timeline-{i + 1}.png" if i < MAX_TIMELINES else None
                for i in range(len(sessions))]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for session, time, picture in zip(sessions, times, pictures):
            if picture:
                plot_timeline(session, time, out_dir / picture)
        md = out_dir / "report.md"
        tmp = md.with_name("report.md.tmp")
        tmp.write_text(markdown(reading, summaries, pictures, Path(recording).name), encoding="utf-8")
        tmp.replace(md)
    except OSError as e:
        raise StreamemoError(f"cannot write the report into {out_dir}: {e.strerror or e}; give -o a folder you "
                             "can write to", 1) from None
    return md, summaries
