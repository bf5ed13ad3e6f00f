"""The dashboard driven by a pilot against a real ZeroMQ publisher sending a scripted feed.

Each test publishes from its own Publisher on a free port; the app's receiver thread
connects to it exactly as it would to a daemon. Waits poll the app's state with a
deadline instead of sleeping a fixed time, so a loaded machine makes them slower, not flaky.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket as sockets
import sys
import threading
import time

import pytest

from streamemo import EMOTIONS
from streamemo.dashboard.app import DashboardApp, HelpScreen
from streamemo.dashboard.daemon_child import DaemonChild
from streamemo.dashboard.receiver import Receiver
from streamemo.dashboard.state import SILENCE
from streamemo.publish import Publisher

from feedgen import StillReceiver, emotion_body, emotion_message, one_hot, status_message  # tests/feedgen.py

pytestmark = pytest.mark.timeout(60)


def asynctest(test):
    """Runs an async test on its own event loop (no pytest-asyncio needed); pytest still
    sees the wrapped signature, so fixtures work."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


class Feed:
    """A scripted daemon: sends the current message every `tick()`, like a daemon's hops."""

    def __init__(self, endpoint: str, curve=None):
        self.endpoint = endpoint
        self.curve = curve
        self.publisher = Publisher(endpoint, curve=curve)
        self.seq = 0
        self.probs = one_hot("neutral")
        self.voiced = True
        self.sending = True
        self.input_state = "running"

    def tick(self) -> None:
        if not self.sending or self.publisher is None:
            return
        now = time.time()
        self.publisher.send(emotion_message(self.seq, self.probs, voiced=self.voiced, t_capture=now - 0.05,
                                                    level_db=-20.0 if self.voiced else -58.0))
        if self.seq % 10 == 0:
            self.publisher.send(status_message(self.seq // 10, t_publish=now, input_state=self.input_state,
                                                      message=f"input {self.input_state}"))
        self.seq += 1

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close(drain_s=0)
            self.publisher = None

    def reopen(self) -> None:
        self.publisher = Publisher(self.endpoint, curve=self.curve)


@pytest.fixture
def feed(free_endpoint):
    feed = Feed(free_endpoint)
    yield feed
    feed.close()


async def until(pilot, condition, feeds=(), timeout: float = 10.0, what: str = "condition") -> float:
    """Ticks the feeds every 50 ms until `condition()`; returns the seconds it took. The
    deadline is generous: a loaded machine should make a test slow, not fail."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        for feed in feeds:
            feed.tick()
        await pilot.pause(0.05)
    return time.monotonic() - start


async def keep_feeding(pilot, feeds, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for feed in feeds:
            feed.tick()
        await pilot.pause(0.05)


def shown(app, selector: str) -> str:
    """The text a widget draws right now."""
    return app.query_one(selector).render().plain


def bar_line(app, label: str) -> str:
    return next(line for line in shown(app, "#bars").splitlines() if line.strip().startswith(label))


def connection_shown(app) -> str:
    return shown(app, "#endpoints")


@asynctest
async def test_bars_and_top_label_follow_the_feed(feed):
    app = DashboardApp(Receiver([feed.endpoint]))
    async with app.run_test(size=(80, 24)) as pilot:
        feed.probs = one_hot("happy", 0.7)
        await until(pilot, lambda: "HAPPY" in shown(app, "#top"), [feed], what="HAPPY on top")
        assert "70%" in shown(app, "#top")
        assert "70%" in bar_line(app, "happy") and "▶" in bar_line(app, "happy")
        # The happy bar is the long one: 70% of the width against about 4% for the others.
        assert bar_line(app, "happy").count("█") > 5 * bar_line(app, "sad").count("█")

        feed.probs = one_hot("sad", 0.6)
        await until(pilot, lambda: "SAD" in shown(app, "#top"), [feed], what="SAD on top")
        assert "60%" in bar_line(app, "sad") and "▶" in bar_line(app, "sad")
        assert "▶" not in bar_line(app, "happy")
        assert "live" in connection_shown(app)
        assert "virtual mic" in shown(app, "#status")
        assert not app.check_action("next_endpoint", ())  # one endpoint: no Tab in the footer


@asynctest
async def test_p_freezes_the_view_and_resuming_shows_the_present(feed):
    app = DashboardApp(Receiver([feed.endpoint]))
    async with app.run_test(size=(80, 24)) as pilot:
        feed.probs = one_hot("happy")
        await until(pilot, lambda: "HAPPY" in shown(app, "#top"), [feed], what="HAPPY on top")
        await pilot.press("p")
        assert app.paused and "PAUSED" in connection_shown(app)
        frozen_bars = shown(app, "#bars")

        feed.probs = one_hot("angry")
        # The receiver keeps listening while paused: wait until it has the new state …
        await until(pilot, lambda: app.views[0].top == "angry", [feed], what="receiver to see angry")
        await keep_feeding(pilot, [feed], 0.3)
        # … and the screen still shows the old one.
        assert "HAPPY" in shown(app, "#top")
        assert shown(app, "#bars") == frozen_bars

        await pilot.press("p")
        assert not app.paused and "PAUSED" not in connection_shown(app)
        await until(pilot, lambda: "ANGRY" in shown(app, "#top"), [feed], what="ANGRY after resume")


@asynctest
async def test_r_clears_the_timeline(feed):
    app = DashboardApp(Receiver([feed.endpoint]))
    async with app.run_test(size=(80, 24)) as pilot:
        feed.probs = one_hot("calm")
        # A second of feed fills a few 0.5 s slots.
        await until(pilot, lambda: sum(s is not None for s in app.query_one("#timeline").view.timeline) >= 3,
                    [feed], what="timeline to fill")
        calm_row = next(line for line in shown(app, "#timeline").splitlines() if line.startswith("calm"))
        assert set("▁▂▃▄▅▆▇█") & set(calm_row[10:])

        await pilot.press("r")
        assert all(s is None for s in app.query_one("#timeline").view.timeline)
        calm_row = next(line for line in shown(app, "#timeline").splitlines() if line.startswith("calm"))
        assert calm_row[10:].strip() == ""


@asynctest
async def test_a_silent_feed_shows_silence(feed):
    app = DashboardApp(Receiver([feed.endpoint]))
    async with app.run_test(size=(80, 24)) as pilot:
        feed.voiced, feed.probs = False, None  # silence the daemon's smoother holds nothing of
        await until(pilot, lambda: "no speech" in shown(app, "#top"), [feed], what="no speech on top")
        assert "· no speech" in shown(app, "#level") and "-58 dBFS" in shown(app, "#level")
        await until(pilot, lambda: SILENCE in app.query_one("#timeline").view.timeline, [feed],
                    what="silence in the timeline")
        assert "·" in shown(app, "#timeline")
        assert "┃" not in shown(app, "#bars")  # no raw values when nothing was classified

        feed.voiced = True
        feed.probs = one_hot("fearful")
        await until(pilot, lambda: "FEARFUL" in shown(app, "#top"), [feed], what="voice again")
        assert "● speech" in shown(app, "#level")


@asynctest
async def test_the_top_emotion_is_held_through_a_pause_and_goes_when_the_voice_stops(feed):
    """Between sentences the daemon holds its smoothed probabilities but names no top label:
    the big label keeps the last emotion, marked as held, instead of blinking to "no speech"."""
    app = DashboardApp(Receiver([feed.endpoint]))
    async with app.run_test(size=(80, 24)) as pilot:
        feed.probs = one_hot("sad", 0.6)
        await until(pilot, lambda: "SAD" in shown(app, "#top"), [feed], what="SAD on top")
        assert "held" not in shown(app, "#top") and not app.query_one("#top").has_class("-held")

        feed.voiced = False  # a pause: probabilities held, no top label (what the daemon sends)
        await until(pilot, lambda: "held" in shown(app, "#top"), [feed], what="SAD held")
        assert shown(app, "#top").startswith("SAD  60%") and "no speech now" in shown(app, "#top")
        top = app.query_one("#top")
        assert top.has_class("-sad") and top.has_class("-held")
        assert "· no speech" in shown(app, "#level")

        feed.voiced = True  # the voice again: live, no longer held
        await until(pilot, lambda: "held" not in shown(app, "#top"), [feed], what="SAD live again")
        assert "SAD" in shown(app, "#top") and not top.has_class("-held")

        feed.voiced, feed.probs = False, None  # the voice has stopped: the smoother let go
        await until(pilot, lambda: shown(app, "#top") == "no speech", [feed], what="no speech")
        assert top.has_class("-none") and not top.has_class("-held")


@asynctest
async def test_stale_within_3_s_of_silence_and_live_again_when_it_resumes(feed):
    app = DashboardApp(Receiver([feed.endpoint]))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "live" in connection_shown(app), [feed], what="live")
        feed.sending = False
        took = await until(pilot, lambda: "stale" in connection_shown(app), timeout=6, what="stale")
        assert took < 3.0, f"stale after {took:.1f} s"
        feed.sending = True
        await until(pilot, lambda: "live" in connection_shown(app), [feed], what="live again")


@asynctest
async def test_a_lost_microphone_is_shown_even_while_messages_flow(feed):
    app = DashboardApp(Receiver([feed.endpoint]))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "running" in shown(app, "#status"), [feed], what="running input")
        assert "input" not in connection_shown(app)
        feed.input_state = "lost"
        await until(pilot, lambda: "input lost" in connection_shown(app), [feed], what="lost input in the top line")
        assert "live" in connection_shown(app)  # the daemon itself is fine and says so
        assert "virtual mic lost" in shown(app, "#status")
        feed.input_state = "running"
        await until(pilot, lambda: "input" not in connection_shown(app), [feed], what="recovered input")


@asynctest
async def test_disconnected_when_the_publisher_goes_away_and_reconnects_by_itself(feed):
    app = DashboardApp(Receiver([feed.endpoint]))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "live" in connection_shown(app), [feed], what="live")
        feed.close()
        await until(pilot, lambda: "disconnected" in connection_shown(app), timeout=6, what="disconnected")
        feed.reopen()  # same port, a new socket: a restarted daemon
        await until(pilot, lambda: "live" in connection_shown(app), [feed], timeout=10, what="live after restart")


@asynctest
async def test_malformed_messages_are_counted_and_shown_never_fatal(feed):
    app = DashboardApp(Receiver([feed.endpoint]))
    async with app.run_test(size=(100, 24)) as pilot:
        feed.probs = one_hot("happy")
        await until(pilot, lambda: "HAPPY" in shown(app, "#top"), [feed], what="HAPPY")
        good = emotion_body(0, one_hot("angry"), t_capture=time.time())
        socket = feed.publisher.socket
        socket.send_multipart([b"emotion", b"{not json"])
        await until(pilot, lambda: "malformed 1:" in shown(app, "#status"), what="bad JSON counted")
        assert "not UTF-8 JSON" in shown(app, "#status")

        socket.send_multipart([b"emotion", ('{"v": 99, ' + '"seq": 1}').encode()])
        await until(pilot, lambda: "malformed 2:" in shown(app, "#status"), what="wrong version counted")
        assert "schema version 99" in shown(app, "#status")

        missing = {"v": 1, **good}
        del missing["level_db"]
        socket.send_multipart([b"emotion", json.dumps(missing).encode()])
        await until(pilot, lambda: "malformed 3:" in shown(app, "#status"), what="missing field counted")
        assert "lacks field 'level_db'" in shown(app, "#status")

        socket.send_multipart([b"emotion", b"\xff\xfe"])  # not even UTF-8
        socket.send_multipart([b"emotion", b"[1, 2]"])  # JSON, not an object
        await until(pilot, lambda: "malformed 5:" in shown(app, "#status"), what="all five counted")

        # Right types, wrong values: what the schema lets through but no bar can be drawn of.
        nan = {"v": 1, **good, "probs": [float("nan")] + good["probs"][1:]}
        socket.send_multipart([b"emotion", json.dumps(nan).encode()])  # Python writes NaN, parsers accept it
        await until(pilot, lambda: "malformed 6:" in shown(app, "#status"), what="NaN counted")
        assert "NaN is not a number" in shown(app, "#status")
        socket.send_multipart([b"emotion", json.dumps({"v": 1, **good, "labels": list(range(8))}).encode()])
        await until(pilot, lambda: "malformed 7:" in shown(app, "#status"), what="numeric labels counted")
        assert "must hold strings" in shown(app, "#status")

        # Still alive and still following good messages.
        feed.probs = one_hot("angry")
        await until(pilot, lambda: "ANGRY" in shown(app, "#top"), [feed], what="good messages after bad ones")
        assert app.is_running


@pytest.fixture
def curve_keys(tmp_path):
    """A server key pair, an allowed client and a stranger, as `streamemo keys` makes them."""
    from streamemo.security import create_key_pair

    create_key_pair(tmp_path / "server", "server")
    create_key_pair(tmp_path / "allowed", "dash")
    create_key_pair(tmp_path / "stranger", "stranger")
    return tmp_path


@asynctest
async def test_encrypted_publisher_live_with_the_right_keys_refused_without(curve_keys, free_endpoint):
    from streamemo.security import CurveClient, CurveServer

    keys = curve_keys
    server_key = keys / "server/server.key"
    feed = Feed(free_endpoint, curve=CurveServer(keys / "server/server.key_secret", keys / "allowed"))
    feed.probs = one_hot("calm")
    try:
        def dashboard(secret: str | None) -> DashboardApp:
            curve = CurveClient(server_key, keys / secret) if secret else None
            return DashboardApp(Receiver([free_endpoint], curve=curve))

        apps = {"right keys": dashboard("allowed/dash.key_secret"),
                "unknown key": dashboard("stranger/stranger.key_secret"), "no keys": dashboard(None)}
        app = apps["right keys"]
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "CALM" in shown(app, "#top"), [feed], what="encrypted feed shown")
            assert "live" in connection_shown(app)
        for case, reason in (("unknown key", "refused this dashboard's CURVE key"), ("no keys", "CURVE")):
            app = apps[case]
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: "refused" in connection_shown(app), [feed], what=f"refused with {case}")
                assert "refused" in shown(app, "#status") and "no data yet" in shown(app, "#top")
                assert reason in app.views[0].refused
    finally:
        feed.close()


@asynctest
async def test_tab_switches_between_endpoints(free_endpoint):
    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        other = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    first, second = Feed(free_endpoint), Feed(other)
    first.probs, second.probs = one_hot("happy"), one_hot("disgust")
    try:
        app = DashboardApp(Receiver([first.endpoint, second.endpoint]))
        async with app.run_test(size=(100, 24)) as pilot:
            await until(pilot, lambda: "HAPPY" in shown(app, "#top"), [first, second], what="first endpoint")
            await until(pilot, lambda: connection_shown(app).count("live") == 2, [first, second], what="both live")
            # With several endpoints the top line carries each one's top emotion.
            await until(pilot, lambda: "disgust 70%" in connection_shown(app), [first, second], what="both tops")
            assert "happy 70%" in connection_shown(app)
            assert app.check_action("next_endpoint", ()) is True  # listed in the footer
            await pilot.press("tab")
            assert app.selected == 1
            await until(pilot, lambda: "DISGUST" in shown(app, "#top"), [first, second], what="second endpoint")
            await pilot.press("tab")
            await until(pilot, lambda: "HAPPY" in shown(app, "#top"), [first, second], what="back to the first")
            second.sending = False
            await until(pilot, lambda: "stale" in connection_shown(app), [first], timeout=6, what="second stale")
            assert "live" in connection_shown(app)  # the first is unaffected
    finally:
        first.close()
        second.close()


@asynctest
async def test_help_opens_and_closes_while_the_feed_goes_on(feed):
    app = DashboardApp(Receiver([feed.endpoint]))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "reset the timeline" in app.screen.query_one("#help").render().plain
        # The feed goes on under the help screen and still reaches the main screen.
        feed.probs = one_hot("surprised")
        await until(pilot, lambda: app.views[0].top == "surprised", [feed], what="feed under help")
        await keep_feeding(pilot, [feed], 0.3)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await until(pilot, lambda: "SURPRISED" in shown(app, "#top"), [feed], what="main screen up to date")
        # Any key closes the help and does nothing else: not pause, not quit.
        for key in ("p", "q"):
            await pilot.press("question_mark")
            await pilot.press(key)
            assert not isinstance(app.screen, HelpScreen) and not app.paused and app.is_running
        await pilot.press("q")
    assert app.return_code == 0


@asynctest
async def test_a_daemon_that_exits_early_is_shown(tmp_path, free_endpoint):
    child = DaemonChild([sys.executable, "-c", "import sys; print('streamemo run: error: no input device found');"
                         " sys.exit(1)"], tmp_path / "daemon.log")
    child.start()
    app = DashboardApp(Receiver([free_endpoint]), child=child)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.daemon_problem, what="the daemon's exit noticed")
        banner = app.query_one("#banner")
        assert banner.display
        text = banner.render().plain
        assert "exit code 1" in text and "no input device found" in text and "daemon.log" in text


@asynctest
async def test_a_daemon_that_fails_to_start_shows_its_own_error_line(tmp_path, free_endpoint, pulse, random_model,
                                                                     monkeypatch):
    """The real daemon refusing an unknown device: its error line is followed in the log by
    the device list, and the banner must show the error, not the list's last line."""
    for name, value in pulse.env.items():  # the daemon inherits the dashboard's environment
        monkeypatch.setenv(name, value)
    child = DaemonChild([sys.executable, "-m", "streamemo", "run", "--bind", free_endpoint, "--source", "USB",
                         "--model", str(random_model)], tmp_path / "daemon.log")
    child.start()
    app = DashboardApp(Receiver([free_endpoint]), child=child)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.daemon_problem, timeout=30, what="the daemon's exit noticed")
        text = app.banner.render().plain
        assert "exit code 2" in text and "streamemo run: error: no input device matches 'USB'" in text, text
    assert "default" in (tmp_path / "daemon.log").read_text()  # the list is in the log, for whoever opens it


@asynctest
async def test_a_starting_daemon_is_announced_until_it_publishes(tmp_path, feed):
    child = DaemonChild([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "daemon.log")
    child.start()
    try:
        app = DashboardApp(Receiver([feed.endpoint]), child=child)
        async with app.run_test(size=(80, 24)) as pilot:
            assert app.banner.display and "starting the daemon" in app.banner.render().plain
            assert not app.banner.has_class("-error")
            # Not yet bound, then bound but silent: a normal start, so neither alarm is raised.
            assert "○ " in connection_shown(app) and "starting" in connection_shown(app)
            feed.sending = False
            await until(pilot, lambda: app.receiver.states[0].connected, timeout=10, what="connected, silent")
            await keep_feeding(pilot, [], 2.5)  # longer than a stale feed is given
            assert "starting" in connection_shown(app)
            assert "disconnected" not in connection_shown(app) and "stale" not in connection_shown(app)
            feed.sending = True
            await until(pilot, lambda: not app.banner.display, [feed], what="the banner to go once messages flow")
            await until(pilot, lambda: "live" in connection_shown(app), [feed], what="live")
    finally:
        child.stop()


def test_stop_terminates_a_running_child(tmp_path):
    child = DaemonChild([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                        tmp_path / "daemon.log")
    child.start()
    assert child.problem() is None
    child.stop()
    assert child.process.returncode == -15  # SIGTERM, not the SIGKILL fallback
    assert "killed by signal 15" in child.problem()


def test_dash_rejects_a_malformed_endpoint(capsys):
    from streamemo.cli import main

    assert main(["dash", "--connect", "nonsense"]) == 2
    assert "cannot connect to nonsense" in capsys.readouterr().err


def test_receiver_coalesces_a_burst_into_few_notifications(free_endpoint):
    """The newest-wins contract without the UI: a burst of 500 messages costs a handful of
    notifications (at most one outstanding), and the views end on the last message."""
    receiver = Receiver([free_endpoint])
    notified = []
    thread = threading.Thread(target=receiver.run, args=(lambda: notified.append(time.monotonic()),))
    thread.start()
    publisher = Publisher(free_endpoint)
    try:
        deadline = time.monotonic() + 10
        while receiver.views()[0].connection != "live" and time.monotonic() < deadline:
            publisher.send(emotion_message(0, one_hot("neutral"), t_capture=time.time()))
            receiver.acknowledge()
            time.sleep(0.05)
        receiver.acknowledge()
        before = len(notified)
        for seq in range(1, 501):
            publisher.send(emotion_message(seq, one_hot(EMOTIONS[seq % 8]), t_capture=time.time()))
        deadline = time.monotonic() + 10
        while receiver.views()[0].seq != 500 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.views()[0].seq == 500
        assert receiver.views()[0].top == EMOTIONS[500 % 8]
        # Never acknowledged since the burst began: exactly one notification, however many messages.
        time.sleep(0.3)
        assert len(notified) - before <= 1
    finally:
        receiver.stop()
        thread.join(5)
        publisher.close(drain_s=0)
    assert not thread.is_alive()


def test_stop_ends_the_receiving_thread_promptly(free_endpoint):
    """Quitting must not wait on the receiver: it polls with a short timeout, then closes
    its sockets and terminates its own ZeroMQ context."""
    receiver = Receiver([free_endpoint])
    thread = threading.Thread(target=receiver.run, args=(lambda: None,))
    thread.start()
    time.sleep(0.3)
    receiver.stop()
    thread.join(5)
    assert not thread.is_alive()  # a hang fails here; its speed is not asserted on a shared machine


@asynctest
async def test_emotion_colours_keep_contrast_on_the_dark_and_the_light_theme(free_endpoint):
    def luminance(colour) -> float:  # WCAG 2 relative luminance
        def channel(v: int) -> float:
            v /= 255
            return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

        r, g, b = colour.triplet
        return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)

    def contrast(style) -> float:
        high, low = sorted((luminance(style.color), luminance(style.bgcolor)), reverse=True)
        return (high + 0.05) / (low + 0.05)

    for theme in ("textual-dark", "textual-light"):
        app = DashboardApp(StillReceiver([free_endpoint]))
        async with app.run_test(size=(80, 24)) as pilot:
            app.theme = theme
            await pilot.pause()
            bars = app.query_one("#bars")
            colours = {label: bars.emotion_style(label) for label in EMOTIONS}
            assert len({str(style.color) for style in colours.values()}) == len(EMOTIONS), "one colour each"
            for label, style in colours.items():
                assert contrast(style) >= 3.5, f"{label} on {theme}: {style}"


def test_dash_arguments_after_the_separator_go_to_the_daemon():
    from streamemo.cli import build_parser

    args = build_parser("dash").parse_args(
        ["dash", "--connect", "tcp://127.0.0.1:5999", "--start-daemon", "--", "--model", "m", "--hop", "0.25"])
    assert args.start_daemon and args.connect == ["tcp://127.0.0.1:5999"]
    assert args.daemon_args == ["--model", "m", "--hop", "0.25"]


@pytest.mark.parametrize("argv, complaint", [
    (["dash", "--", "--model", "m"], "need --start-daemon"),
    (["dash", "--start-daemon", "--", "--bind", "tcp://127.0.0.1:1"], "give --connect instead"),
])
def test_dash_refuses_daemon_arguments_it_cannot_honour(argv, complaint, capsys):
    from streamemo.cli import main

    assert main(argv) == 2
    assert complaint in capsys.readouterr().err


def test_the_message_rate_is_the_daemons_rate():
    """A daemon sending every 0.24 s sends 4.17 messages a second: shown as 4.2, the rate its
    status promises, not as 4.0 or 4.5 by how many arrivals fall into a 2 s window."""
    from streamemo.dashboard.state import EndpointState
    from streamemo.protocol import encode

    state = EndpointState("tcp://127.0.0.1:1")
    shown = set()
    for seq in range(100):
        t = 100.0 + 0.24 * seq
        state.receive(encode("emotion", emotion_body(seq, one_hot("sad"), t_capture=t)), t)
        if seq > 10:
            shown.add(f"{state.view(t + 0.1).message_rate:.1f}")
    assert shown == {"4.2"}


def test_state_survives_a_daemon_restarting_with_another_label_set():
    """Pure state: a restart with a 4-label model must not leave 8-value timeline slots
    that the 4-row timeline would misread."""
    from streamemo.dashboard.state import EndpointState
    from streamemo.protocol import encode

    state = EndpointState("tcp://127.0.0.1:1")
    for seq in range(10):
        state.receive(encode("emotion", emotion_body(seq, one_hot("sad"), t_capture=100.0 + seq)), 100.0 + seq)
    four = ("neutral", "happy", "sad", "angry")
    state.receive(encode("emotion", emotion_body(0, one_hot("happy", labels=four), labels=four, t_capture=111.0)), 111.0)
    view = state.view(111.2)
    assert view.labels == four and view.top == "happy"
    (only,) = [slot for slot in view.timeline if slot is not None]
    assert only == pytest.approx(one_hot("happy", labels=four), abs=1e-5)
    assert view.seq_gaps == 0  # seq went back to 0: a restart, not lost messages
