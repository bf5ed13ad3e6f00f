"""A recorded session (the JSON lines `streamemo subscribe` writes) -> a timeline PNG and
a short Markdown summary: what was heard, for how long, and how it moved.

Reading is forgiving, as a recording cut by a kill or a full disk must still be readable:
a line that is not a JSON object (a half-written last line) is skipped and counted. Only
`emotion` messages are used; arousal and valence come from the messages when they carry
them and are derived from the probabilities (`dimensions.py`) when an older recording does
not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from streamemo import StreamemoError
from streamemo.dimensions import arousal_valence


# The dashboard's colours (dashboard/dashboard.tcss), so an emotion looks the same in both.
COLOURS = {"neutral": "#93a1a1", "calm": "#2aa198", "happy": "#d9a400", "sad": "#268bd2", "angry": "#dc322f",
           "fearful": "#8b7fd6", "disgust": "#859900", "surprised": "#d33682"}


@dataclass
class Session:
    """One source's emotion messages, in arrival order."""

    source: str
    messages: list[dict] = field(default_factory=list)

    @cached_property  # read after the session is complete, by several users
    def times(self) -> np.ndarray:
        """Seconds since the first message. Within one run of the daemon, its audio clock
        (`t_audio`, exact even for a file scored faster than real time); a restart (the audio
        clock going back) starts a new run, placed by its wall-clock capture time, so the
        pause shows as a gap."""
        audio = np.array([m.get("t_audio", np.nan) for m in self.messages], dtype=np.float64)
        wall = np.array([m["t_capture"] for m in self.messages], dtype=np.float64)
        if np.isnan(audio).any():
            return wall - wall[0]
        out, offset = np.empty_like(audio), 0.0
        for i in range(len(audio)):
            if i == 0 or audio[i] < audio[i - 1]:  # a new run: anchor it on the wall clock
                offset = (wall[i] - wall[0]) - audio[i] if i else -audio[0]
            out[i] = audio[i] + offset
        return out

    @cached_property
    def hop_s(self) -> float:
        steps = np.diff(self.times)
        steps = steps[steps > 0]
        return float(np.median(steps)) if len(steps) else 0.0

    def dimensions(self) -> np.ndarray:
        """(n, 2) arousal, valence per message; NaN where nothing was classified."""
        out = np.full((len(self.messages), 2), np.nan)
        for i, m in enumerate(self.messages):
            if m.get("arousal") is not None and m.get("valence") is not None:
                out[i] = (m["arousal"], m["valence"])
            elif (av := arousal_valence(m.get("labels", []), m.get("probs"))) is not None:
                out[i] = av
        return out


def read_sessions(path: Path) -> tuple[list[Session], int]:
    """(one Session per source, in order of first appearance; lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise StreamemoError(f"cannot read {path}: {e.strerror or e}", 1) from None
    sessions: dict[str, Session] = {}
    skipped = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            m = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if not isinstance(m, dict) or m.get("topic", "emotion") != "emotion":
            continue
        if not isinstance(m.get("t_capture"), (int, float)) or not isinstance(m.get("labels"), list):
            skipped += 1
            continue
        source = str(m.get("source", "?"))
        sessions.setdefault(source, Session(source)).messages.append(m)
    if not sessions:
        raise StreamemoError(f"{path}: no emotion messages; record a session with "
                             "`streamemo subscribe --record FILE`", 1)
    return list(sessions.values()), skipped


def summarise(session: Session) -> dict:
    """Durations, time shares of each emotion (by the published top label) and mean
    arousal/valence over the voiced time."""
    msgs, hop = session.messages, session.hop_s
    labels = msgs[-1]["labels"]
    voiced = [m for m in msgs if m.get("voiced")]
    shares = {label: sum(m.get("top") == label for m in voiced) / max(len(voiced), 1) for label in labels}
    dims = session.dimensions()[[bool(m.get("voiced")) for m in msgs]]
    seqs = [m.get("seq") for m in msgs if isinstance(m.get("seq"), int)]
    missed = sum(max(0, b - a - 1) for a, b in zip(seqs, seqs[1:]) if b > a)
    return {
        "source": session.source,
        "models": sorted({str(m.get("model")) for m in msgs}),
        "messages": len(msgs),
        "missed": missed,  # gaps in seq: messages this recording never got
        "duration_s": float(session.times[-1] + hop),
        "voiced_s": len(voiced) * hop,
        "shares": shares,
        "arousal": _mean(dims[:, 0]),
        "valence": _mean(dims[:, 1]),
    }


def _mean(values: np.ndarray) -> float | None:
    """The mean of the non-NaN values; None when there are none."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else None


def plot_timeline(session: Session, out: Path) -> None:
    """Smoothed probabilities stacked over time, arousal and valence below; silence shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    msgs, t = session.messages, session.times
    labels = msgs[-1]["labels"]
    probs = np.array([m["probs"] if m.get("probs") is not None and len(m["probs"]) == len(labels)
                      else [np.nan] * len(labels) for m in msgs], dtype=np.float64)
    dims = session.dimensions()
    silent = np.array([not m.get("voiced") for m in msgs])
    unit, scale = ("min", 60.0) if t[-1] > 600 else ("s", 1.0)
    x = t / scale
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True, height_ratios=[3, 2])
    spare = iter(plt.get_cmap("tab10").colors)  # for a model's own classes
    colours = [COLOURS.get(label) or next(spare) for label in labels]
    top.stackplot(x, np.nan_to_num(probs).T, labels=labels, colors=colours, alpha=0.9)
    for ax in (top, bottom):
        # Silence: the daemon classifies nothing there; shade each silent stretch.
        for start, end in _runs(silent):
            ax.axvspan(x[start], x[min(end, len(x) - 1)], color="0.85", zorder=0, lw=0)
    top.set_ylim(0, 1)
    top.set_ylabel("probability (smoothed)")
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    top.set_title(f"{Path(session.source).name or session.source}: emotions over time (grey: no voice)")
    bottom.plot(x, dims[:, 0], color="tab:red", label="arousal")
    bottom.plot(x, dims[:, 1], color="tab:blue", label="valence")
    bottom.axhline(0, color="0.5", lw=0.8)
    bottom.set_ylim(-1, 1)
    bottom.set_ylabel("derived from probabilities")
    bottom.set_xlabel(f"time ({unit}) since the first message")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)  # a reader never sees half a PNG


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) index pairs of the runs of True in `mask`, end exclusive."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[0::2], edges[1::2]))


def markdown(summaries: list[dict], pictures: list[str], skipped: int, source_file: str) -> str:
    lines = [f"# Session report: {source_file}", ""]
    if skipped:
        lines += [f"{skipped} line(s) were not complete messages and were skipped (a recording cut mid-line).", ""]
    for s, picture in zip(summaries, pictures):
        lines += [f"## {s['source']}", "",
                  f"- {_clock(s['duration_s'])} recorded, {_clock(s['voiced_s'])} with voice "
                  f"({100 * s['voiced_s'] / max(s['duration_s'], 1e-9):.0f} %); {s['messages']} messages"
                  + (f", {s['missed']} missed (gaps in seq)" if s["missed"] else ""),
                  f"- model: {', '.join(s['models'])}"]
        if s["arousal"] is not None:
            lines.append(f"- mean while voiced: arousal {s['arousal']:+.2f}, valence {s['valence']:+.2f} "
                         "(-1 to +1, derived from the probabilities)")
        ranked = sorted(s["shares"].items(), key=lambda kv: -kv[1])
        lines += ["", "| emotion | share of voiced time | time |", "|---|---|---|"]
        lines += [f"| {label} | {100 * share:.0f} % | {_clock(share * s['voiced_s'])} |"
                  for label, share in ranked if share > 0]
        lines += ["", f"![timeline]({picture})", ""]
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def write_report(recording: Path, out_dir: Path) -> tuple[Path, list[dict]]:
    sessions, skipped = read_sessions(recording)
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures = ["timeline.png" if len(sessions) == 1 else f"timeline-{i + 1}.png" for i in range(len(sessions))]
    summaries = []
    for session, picture in zip(sessions, pictures):
        plot_timeline(session, out_dir / picture)
        summaries.append(summarise(session))
    md = out_dir / "report.md"
    tmp = md.with_name("report.md.tmp")
    tmp.write_text(markdown(summaries, pictures, skipped, Path(recording).name))
    tmp.replace(md)
    return md, summaries
