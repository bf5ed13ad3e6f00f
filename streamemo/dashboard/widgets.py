"""The dashboard's widgets. Each draws one part of an `EndpointView` and nothing else.

Colours live in dashboard.tcss: every widget that colours emotions derives from
`EmotionWidget`, whose component classes (`emotion--happy`, …) the stylesheet sets, so
one emotion has one colour everywhere. Widgets hold the view in a reactive attribute and
draw from it in `render()`; an unchanged view (frozen dataclass, compared by value)
causes no repaint, which is what keeps the screen from flickering.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from streamemo import EMOTIONS
from streamemo.dashboard.state import DISCONNECTED, LIVE, REFUSED, SILENCE, STALE, STARTING, WAITING, EndpointView

EIGHTHS = " ▏▎▍▌▋▊▉█"  # horizontal bar: 0..8 eighths of a cell
LEVELS = " ▁▂▃▄▅▆▇█"  # vertical bar: 0..8 eighths of a cell
RAW_MARK = "┃"
SILENCE_MARK = "·"  # no speech, in the timeline and the speech indicator alike
LEVEL_FLOOR_DB = -60.0  # the level meter's left end; speech sits around -30..-10 dBFS
CONNECTION_MARKS = {LIVE: "●", STALE: "◐", WAITING: "○", STARTING: "○", DISCONNECTED: "✕", REFUSED: "⊘"}


def hbar(value: float, width: int) -> str:
    """`value` in [0, 1] as `width` cells of block characters, to an eighth of a cell."""
    eighths = round(max(0.0, min(1.0, value)) * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (EIGHTHS[part] if part else "")
    return text.ljust(width)[:width]


def vbar_cell(value: float, row: int, height: int) -> str:
    """One cell of a `height`-row-tall vertical bar for `value` in [0, 1]; row 0 is the top."""
    fill = max(0.0, min(1.0, value)) * height - (height - 1 - row)
    return LEVELS[round(max(0.0, min(1.0, fill)) * 8)]


def percent(value: float | None) -> str:
    return "  —" if value is None else f"{round(value * 100):3d}%"


class EmotionWidget(Widget):
    """Base for widgets that colour emotions; the colours are component classes in the tcss."""

    COMPONENT_CLASSES = {f"emotion--{e}" for e in EMOTIONS} | {"emotion--other", "emotion--muted"}

    view: reactive[EndpointView | None] = reactive(None)

    def emotion_style(self, label: str) -> Style:
        name = f"emotion--{label}" if label in EMOTIONS else "emotion--other"
        return self.get_component_rich_style(name)

    def muted(self) -> Style:
        return self.get_component_rich_style("emotion--muted")


class EndpointBar(EmotionWidget):
    """One line: every endpoint with its connection state, the daemon's input state when it
    is not running, and with several endpoints each one's top emotion; the one shown below
    is highlighted."""

    COMPONENT_CLASSES = EmotionWidget.COMPONENT_CLASSES | {"endpoint--selected", "endpoint--paused"} | {
        f"connection--{c}" for c in CONNECTION_MARKS}

    views: reactive[tuple[EndpointView, ...]] = reactive(())
    selected: reactive[int] = reactive(0)
    paused: reactive[bool] = reactive(False)

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        several = len(self.views) > 1
        for i, view in enumerate(self.views):
            state = self.get_component_rich_style(f"connection--{view.connection}")
            # "tcp://" is the default and eats a line shared by several endpoints.
            name = view.endpoint.removeprefix("tcp://")
            entry = Text.assemble((f" {CONNECTION_MARKS[view.connection]} ", state), f"{name} ",
                                  (view.connection, state))
            input_state = view.status.input_state if view.status else None
            if view.connection == LIVE and input_state not in (None, "running"):
                # Messages flow but the microphone does not: say so where it is seen first.
                entry.append(f" · input {input_state}", self.get_component_rich_style("connection--stale"))
            if several and view.connection == LIVE and view.top:
                entry.append(f" {view.top} {percent(view.confidence).strip()}", self.emotion_style(view.top))
            entry.append(" ")
            if i == self.selected and several:
                entry.stylize(self.get_component_rich_style("endpoint--selected"))
            text.append_text(entry)
            text.append(" ")
        if self.paused:
            text.append(" PAUSED ", self.get_component_rich_style("endpoint--paused"))
        return text


class TopEmotion(EmotionWidget):
    """The top emotion, big, on its own colour. Through a pause between sentences the last
    one stays, marked as held, for as long as the daemon holds its smoothed probabilities;
    "no speech" once the daemon has let them go (the voice has really stopped)."""

    CLASSES_BY_TOP = {label: f"-{label}" for label in EMOTIONS}

    def watch_view(self, view: EndpointView | None) -> None:
        # The background colour per emotion is a CSS class (-happy, …), so the tcss decides it.
        top = None if view is None else view.top or view.held_top
        wanted = "-none" if top is None else self.CLASSES_BY_TOP.get(top, "-other")
        for name in (*self.CLASSES_BY_TOP.values(), "-other", "-none"):
            self.set_class(name == wanted, name)
        self.set_class(view is not None and view.held_top is not None, "-held")

    def render(self) -> Text:
        view = self.view
        if view is None or view.seq is None:
            return Text("no data yet")
        if view.top is not None:
            return Text.assemble((view.top.upper(), "bold"), f"  {percent(view.confidence).strip()}")
        if view.held_top is not None:
            return Text.assemble((view.held_top.upper(), "bold"), f"  {percent(view.held_confidence).strip()}",
                                 "  held · no speech now")
        return Text("no speech" if not view.voiced else "listening…")


class LevelMeter(EmotionWidget):
    """Speech indicator (the daemon's voice gate) and the input level in dBFS."""

    COMPONENT_CLASSES = EmotionWidget.COMPONENT_CLASSES | {"level--voiced", "level--bar"}

    def render(self) -> Text:
        view = self.view
        width = self.size.width
        if view is None or view.level_db is None:
            return Text("no input yet", self.muted())
        indicator = ("● speech ", self.get_component_rich_style("level--voiced")) if view.voiced \
            else (f"{SILENCE_MARK} no speech ", self.muted())
        label = f" {view.level_db:5.0f} dBFS"
        bar_width = max(0, width - len(indicator[0]) - len(label))
        fraction = (view.level_db - LEVEL_FLOOR_DB) / -LEVEL_FLOOR_DB
        bar = hbar(fraction, bar_width)
        return Text.assemble(indicator, (bar, self.get_component_rich_style("level--bar")), label,
                             no_wrap=True)


def axis_bar(value: float, width: int) -> str:
    """-1 … +1 on `width` cells (odd) around a centre mark: "──┼██" is about +0.8."""
    half = width // 2
    cells = ["─"] * half + ["┼"] + ["─"] * half
    reach = round(max(-1.0, min(1.0, value)) * half)
    for k in range(1, abs(reach) + 1):
        cells[half + (k if reach > 0 else -k)] = "█"
    return "".join(cells)


class EmotionBars(EmotionWidget):
    """One bar per emotion: the smoothed probability, with the raw (this window's) value as ┃.
    Arousal and valence, derived from the same probabilities, ride on the bottom frame; the
    top frame says when the daemon decides among a chosen set of emotions only."""

    LABEL_WIDTH = 11
    TITLE = "emotions  ┃ raw"

    def watch_view(self, view: EndpointView | None) -> None:
        self._frame(view)

    def on_resize(self) -> None:  # the frame's width decides what its texts can say
        self._frame(self.view)

    def _frame(self, view: EndpointView | None) -> None:
        self.border_title = self._title(view)
        self.border_subtitle = self._dimensions(view)

    def _title(self, view: EndpointView | None) -> str:
        """The top frame's text: with a chosen set, says so, naming it where the frame has room."""
        if view is None or view.emotions is None:
            return self.TITLE
        named = f"chosen emotions: {', '.join(view.emotions)}  ┃ raw"
        return named if len(named) <= self.outer_size.width - 4 else f"{len(view.emotions)} chosen emotions  ┃ raw"

    def _dimensions(self, view: EndpointView | None) -> str:
        """The bottom frame's text: two axis bars, with numbers where the frame has room."""
        if view is None or view.arousal is None or view.valence is None:
            return "arousal, valence: when voiced"
        a, v = view.arousal, view.valence
        room = self.outer_size.width - 4  # the frame's corners and a space beside each
        for bar, numbers in ((9, True), (7, True), (7, False)):
            text = (f"arousal {axis_bar(a, bar)}{f' {a:+.2f}' if numbers else ''}  "
                    f"valence {axis_bar(v, bar)}{f' {v:+.2f}' if numbers else ''}")
            if len(text) <= room:
                break
        return text

    def render(self) -> Text:
        view = self.view
        labels = view.labels if view else EMOTIONS
        probs = view.probs if view and view.probs else None
        raw = view.raw if view else None
        width = max(1, self.size.width - self.LABEL_WIDTH - 5)
        out = Text(no_wrap=True, overflow="crop")
        for i, label in enumerate(labels):
            colour = self.emotion_style(label)
            is_top = view is not None and view.top == label
            # Unvoiced: the smoothed values are held, shown muted so they do not read as live.
            bar_style = colour if view is not None and view.voiced else self.muted()
            name = f"{label[:self.LABEL_WIDTH - 2]:<{self.LABEL_WIDTH - 2}}" + ("▶ " if is_top else "  ")
            out.append(name, colour + Style(bold=is_top))
            value = probs[i] if probs else 0.0
            cells = Text(hbar(value, width), bar_style)
            if raw is not None:
                at = min(width - 1, int(raw[i] * width))
                # On a filled cell the mark is drawn reversed: a gap cut into the bar.
                on_fill = at < int(value * width)
                mark = Text(RAW_MARK, bar_style + Style(bold=True, reverse=on_fill))
                cells = cells[:at] + mark + cells[at + 1:]
            out.append_text(cells)
            out.append(" " + percent(probs[i] if probs else None))
            if i < len(labels) - 1:
                out.append("\n")
        return out


class Timeline(EmotionWidget):
    """The last 60 s per emotion, oldest left: a sparkline per emotion, · where it was silent.

    Rows grow with the terminal: each emotion gets (height - 1) // n_labels rows, so a tall
    terminal shows finer detail instead of empty space; a spare row gets a time axis."""

    LABEL_WIDTH = 10
    AXIS_TICKS_S = (60, 45, 30, 15)  # seconds ago; "now" is the right edge

    def render(self) -> Text:
        view = self.view
        labels = view.labels if view else EMOTIONS
        slots = view.timeline if view else ()
        width = max(1, self.size.width - self.LABEL_WIDTH)
        columns = self._columns(slots, width)
        n = max(1, len(labels))
        rows_each = max(1, (self.size.height - 1) // n)
        muted = self.muted()
        # Below half of the smallest step a bar would be blank; a muted baseline instead
        # tells "about zero" apart from "no data".
        visible = 0.5 / (8 * rows_each)
        lines = []
        for i, label in enumerate(labels):
            colour = self.emotion_style(label)
            for row in range(rows_each):
                bottom = row == rows_each - 1
                line = Text(f"{label[:self.LABEL_WIDTH - 1]:<{self.LABEL_WIDTH}}" if bottom else " " * self.LABEL_WIDTH,
                            colour)
                for column in columns:
                    if column is None:
                        line.append(" ")
                    elif column == SILENCE:
                        line.append(SILENCE_MARK if bottom else " ", muted)
                    elif column[i] >= visible:
                        line.append(vbar_cell(column[i], row, rows_each), colour)
                    else:
                        line.append("▁" if bottom else " ", muted)
                lines.append(line)
        if self.size.height > rows_each * n:
            lines.append(Text(" " * self.LABEL_WIDTH + self._axis(width), muted))
        return Text("\n", no_wrap=True, overflow="crop").join(lines)

    @classmethod
    def _axis(cls, width: int) -> str:
        """Tick labels under the columns: "-60s", "-45s", … with "now" at the right edge."""
        axis = [" "] * width
        marks = [(f"-{s}s", round(width * (1 - s / 60))) for s in cls.AXIS_TICKS_S] + [("now", width)]
        for text, at in marks:
            start = min(max(0, at - len(text)) if at == width else at, width - len(text))
            if start >= 0 and all(c == " " for c in axis[max(0, start - 1):start + len(text) + 1]):
                axis[start:start + len(text)] = text
        return "".join(axis)

    @staticmethod
    def _columns(slots: tuple, width: int) -> list:
        """Fits the slots to `width` columns: several slots per column are averaged (silence
        only if all of them were silent), one slot may span several columns."""
        n = len(slots)
        if n == 0:
            return [None] * width
        out = []
        for c in range(width):
            lo = c * n // width
            hi = max(lo + 1, (c + 1) * n // width)
            group = slots[lo:hi]
            data = [s for s in group if s is not None and s != SILENCE]
            if data:
                out.append(tuple(sum(v) / len(data) for v in zip(*data)))
            elif SILENCE in group:
                out.append(SILENCE)
            else:
                out.append(None)
        return out


class StatusPanel(Widget):
    """The daemon's health from its `status` heartbeat plus what this dashboard measures."""

    COMPONENT_CLASSES = {"status--key", "status--bad", "status--good"}

    view: reactive[EndpointView | None] = reactive(None)

    def render(self) -> Text:
        view = self.view
        key = self.get_component_rich_style("status--key")
        bad = self.get_component_rich_style("status--bad")
        good = self.get_component_rich_style("status--good")
        rows: list[tuple[str, Text | str]] = []
        s = view.status if view else None
        if view is not None and view.connection == REFUSED:
            rows.append(("refused", Text(view.refused or "", bad)))
        if s is None:
            rows.append(("daemon", Text("no status yet", key)))
        else:
            state_style = good if s.input_state == "running" else bad
            rows += [
                ("device", Text.assemble(s.device, " ", (s.input_state, state_style))),
                ("rate", f"{s.sample_rate} → {s.model_rate} Hz · {s.compute}"),
                ("model", s.model),
                # What the voice has taught the daemon, and how much of what it hears is speech.
                ("speaker", "no adaptation" if s.adapted_s is None else f"adapted on {s.adapted_s:.0f} s of voice"),
            ]
            if s.speech_share is not None:
                rows.append(("speech", f"{s.speech_share:.0%} of the last minute"))
        if view is not None:
            # Measured here, against what the daemon's hop promises.
            expected = f" (expected {1 / s.hop_s:.1f})" if s and s.hop_s > 0 else ""
            gaps = Text(f" · {view.seq_gaps} lost", bad) if view.seq_gaps else ""
            rows.append(("messages", Text.assemble(f"{view.message_rate:.1f}/s{expected}", gaps)))
            rows.append(("latency", f"{_ms(view.latency_ms)} · p50 {_ms(view.latency_p50_ms)}"))
        if s is not None:
            rows += [
                ("process", f"p50 {_ms(s.proc_ms_p50)} · p99 {_ms(s.proc_ms_p99)}"),
                ("overflows", Text(f"{s.overflows} ({s.dropped_samples} samples lost)", bad if s.overflows else "")),
            ]
        if view is not None and view.malformed:
            rows.append(("malformed", Text(f"{view.malformed}: {view.last_error}", bad)))
        # Below the fold at 80x24 and 120x30, shown when the panel is taller.
        if s is not None:
            if s.message:
                rows.append(("daemon", s.message))
            rows += [("uptime", _duration(s.uptime_s)), ("source", s.source)]
        if view is not None and view.seq is not None:
            rows.append(("last seq", str(view.seq)))
        out = Text(no_wrap=True, overflow="ellipsis")
        for i, (name, value) in enumerate(rows):
            out.append(f"{name:<10}", key)
            out.append_text(value if isinstance(value, Text) else Text(str(value)))
            if i < len(rows) - 1:
                out.append("\n")
        return out


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"

