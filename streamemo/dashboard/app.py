"""The Textual app: wires the receiver to the widgets and handles the keys.

The receiver runs in a Textual thread worker and posts `FeedChanged` (never the messages
themselves); the handler reads the newest views and hands the selected endpoint's view
to the widgets. Pausing stops that hand-over, nothing else: the receiver keeps listening,
so resuming shows the present, not a replay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Callable
from pathlib import Path

from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from streamemo.dashboard.receiver import Receiver
from streamemo.dashboard.state import LIVE, REFUSED, STARTING, EndpointView
from streamemo.dashboard.widgets import (
    EmotionBars,
    EndpointBar,
    LevelMeter,
    StatusPanel,
    Timeline,
    TopEmotion,
)

HELP = """\
[b]streamemo dash[/b]: what a daemon hears, live.

[b]q[/b] quit (stops a daemon started by --start-daemon)   [b]p[/b] pause/resume
[b]r[/b] reset the timeline   [b]tab[/b] next endpoint (shift+tab back)   [b]?[/b] help

[b]bars[/b]      smoothed probability per emotion; [b]┃[/b] this window's raw value;
          ▶ the top emotion; muted: held through a pause in the voice
[b]timeline[/b]  last 60 s, newest right; [b]·[/b] no speech, blank: no data
[b]states[/b]    ● live   ◐ stale (connected, no message for 2 s)
          ○ waiting or starting (nothing yet)   ✕ disconnected (retrying)
          ⊘ refused (CURVE keys rejected or missing: see --help)
[b]latency[/b]   capture of a window's last sample → receipt here
          (between machines it includes their clocks' difference)

any key closes this"""


class HelpScreen(ModalScreen[None]):
    """Any key closes it, and does only that: `q` here must not quit, nor `p` pause."""

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help")

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        self.dismiss()


class DashboardApp(App[None]):
    # Absolute: a relative CSS_PATH resolves beside the module of a *subclass* (tests, benchmarks).
    CSS_PATH = Path(__file__).with_name("dashboard.tcss")
    TITLE = "streamemo"
    ENABLE_COMMAND_PALETTE = False  # nothing to command; keeps the footer to our keys
    # Breakpoint classes land on the screen; the tcss grows panels when there is room.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("p", "toggle_pause", "pause"),
        Binding("r", "reset_timeline", "reset timeline"),
        # priority: Tab would otherwise move focus, and there is nothing here to focus.
        Binding("tab", "next_endpoint", "next endpoint", priority=True),
        Binding("shift+tab", "next_endpoint(-1)", "previous", show=False, priority=True),
        Binding("question_mark", "help", "help", key_display="?"),
    ]

    class FeedChanged(Message):
        """Posted by the receiving thread: newer state is waiting. Carries no data on
        purpose: the handler always reads the newest state, never a backlog."""

    paused: reactive[bool] = reactive(False)
    selected: reactive[int] = reactive(0)
    daemon_problem: reactive[str] = reactive("")  # a started daemon that exited, and why
    daemon_starting: reactive[bool] = reactive(False)  # a started daemon not heard from yet

    def __init__(self, receiver: Receiver, *, child=None, on_exit_signal: Callable[[int], None] | None = None):
        """`receiver` runs on a worker thread and holds the endpoints' states (`Receiver`, or
        anything with its methods). `child` is a DaemonChild to watch. `on_exit_signal(signum)`:
        given, SIGTERM and SIGHUP (terminal closed, tmux pane killed) call it and then quit
        the app the normal way."""
        super().__init__()
        self.on_exit_signal = on_exit_signal
        self.receiver = receiver
        self.child = child
        self.views: list[EndpointView] = []
        # Until check_child first runs: a daemon just started is starting, not disconnected.
        self.set_reactive(DashboardApp.daemon_starting, child is not None)

    def compose(self) -> ComposeResult:
        # Kept as attributes rather than queried: App.query_one looks at the *active*
        # screen, which is the help screen while it is open, and feed updates go on.
        self.endpoint_bar = EndpointBar(id="endpoints")
        self.banner = Static(id="banner")
        self.panels = [TopEmotion(id="top"), LevelMeter(id="level"), EmotionBars(id="bars"),
                       StatusPanel(id="status"), Timeline(id="timeline")]
        top, level, bars, status, self.timeline = self.panels
        bars.border_title = EmotionBars.TITLE
        status.border_title = "status"
        self.timeline.border_title, self.timeline.border_subtitle = "last 60 s", "· no speech   now →"
        yield self.endpoint_bar
        yield self.banner
        with Horizontal(id="upper"):
            with Vertical(id="now"):
                yield top
                yield level
                yield bars
            yield status
        yield self.timeline
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_views()
        if self.on_exit_signal is not None:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(signum, self.exit_on_signal, signum)
        self.receive_feed()
        if self.child is not None:
            self.check_child()
            self.set_interval(0.5, self.check_child)

    def exit_on_signal(self, signum: int) -> None:
        self.on_exit_signal(signum)
        self.exit()

    @work(thread=True, exclusive=True, name="receiver")
    def receive_feed(self) -> None:
        worker = get_current_worker()
        self.receiver.run(notify=lambda: self.post_message(self.FeedChanged()),
                          cancelled=lambda: worker.is_cancelled)

    def on_unmount(self) -> None:
        self.receiver.stop()

    def on_dashboard_app_feed_changed(self, _: FeedChanged) -> None:
        self.refresh_views()
        self.receiver.acknowledge()

    def refresh_views(self) -> None:
        self.views = self.receiver.views()
        if self.daemon_starting and self.views[0].connection not in (LIVE, REFUSED):
            # Loading torch and the model takes seconds, unbound ("disconnected") then silent
            # ("stale"): neither is wrong, so neither is said.
            self.views[0] = dataclasses.replace(self.views[0], connection=STARTING)
        self.selected = min(self.selected, len(self.views) - 1)
        self.endpoint_bar.views = tuple(self.views)
        if not self.paused:
            self.show(self.views[self.selected])

    def show(self, view: EndpointView) -> None:
        for panel in self.panels:
            panel.view = view

    # --- reactive state ------------------------------------------------------------------

    def watch_paused(self, paused: bool) -> None:
        self.endpoint_bar.paused = paused
        self.screen.set_class(paused, "-paused")
        if not paused and self.views:
            self.show(self.views[self.selected])

    def watch_selected(self, selected: int) -> None:
        self.endpoint_bar.selected = selected
        if self.views:
            self.show(self.views[selected])

    def watch_daemon_problem(self) -> None:
        self.update_banner()

    def watch_daemon_starting(self) -> None:
        self.update_banner()
        self.refresh_views()

    def update_banner(self) -> None:
        if self.daemon_problem:
            text = self.daemon_problem
        elif self.daemon_starting:
            text = f"starting the daemon: {self.child.title}\nits log: {self.child.log_path}"
        else:
            text = ""
        self.banner.update(text)
        self.banner.set_class(bool(self.daemon_problem), "-error")
        self.banner.display = bool(text)

    # --- actions -------------------------------------------------------------------------

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused

    def action_reset_timeline(self) -> None:
        self.receiver.reset_timeline(self.selected)
        self.views = self.receiver.views()
        # Shown even while paused: the user asked for an empty timeline and should see it.
        self.timeline.view = self.views[self.selected]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # With one endpoint Tab has nothing to switch to: keep it out of the footer.
        if action == "next_endpoint" and len(self.receiver.states) < 2:
            return False
        return True

    def action_next_endpoint(self, step: int = 1) -> None:
        self.selected = (self.selected + step) % len(self.receiver.states)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def check_child(self) -> None:
        self.daemon_problem = self.child.problem() or ""
        # Until its first message the daemon is loading (torch, the model, the device):
        # say so, rather than leave a bare "disconnected" to alarm whoever ran `make run`.
        self.daemon_starting = not self.daemon_problem and self.views[0].seq is None

