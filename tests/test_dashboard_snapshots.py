"""Snapshots of the main screen on a fixed feed (pytest-textual-snapshot).

Deterministic by construction: the receiver receives nothing (`StillReceiver`), its states are fed a
scripted minute of messages at fixed times, and its clock is frozen at the end of it, so
every number on screen (rates, latency, timeline) is the same on every run.
Update after an intended change with `pytest tests/test_dashboard_snapshots.py --snapshot-update`
and look at the SVGs.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from streamemo import EMOTIONS
from streamemo.dashboard.app import DashboardApp
from streamemo.protocol import encode

from feedgen import StillReceiver, emotion_body, status_body  # tests/feedgen.py

T0 = 1_763_700_000.0  # a fixed wall-clock second
HOP_S = 0.2
DURATION_S = 75.0  # more than the timeline holds, so it is full


def scripted_probs(t: float) -> list[float]:
    """Happy rising to the top over the minute, with calm and sad underneath."""
    weights = [0.3, 1.0 + 0.5 * math.sin(t / 5), 0.4 + t / 20, 0.6 + 0.3 * math.cos(t / 7), 0.2, 0.15, 0.1, 0.25]
    total = sum(weights)
    return [w / total for w in weights]


def fixed_app() -> DashboardApp:
    n = int(DURATION_S / HOP_S)
    end = T0 + (n - 1) * HOP_S + HOP_S / 2  # half a hop after the last message
    receiver = StillReceiver(["tcp://127.0.0.1:5556", "tcp://192.0.2.7:5556"], clock=lambda: end)
    live = receiver.states[0]
    live.set_connected(True, T0)
    for seq in range(n):
        t = seq * HOP_S
        received = T0 + t
        voiced = not (20 <= t < 28 or 50 <= t < 54)  # two pauses in the speech
        probs = scripted_probs(t)
        raw = [p * (1 + 0.3 * math.sin(seq + i)) for i, p in enumerate(probs)]
        raw = [r / sum(raw) for r in raw]  # a window's probabilities, summing to 1 as the protocol checks
        body = emotion_body(seq, probs, raw=raw, voiced=voiced, t_capture=received - 0.042,
                            level_db=-17.0 if voiced else -52.0)
        live.receive(encode("emotion", body), received)
        if seq % 5 == 0:
            live.receive(encode("status", status_body(seq // 5, t_publish=received, uptime_s=312.0 + t)), received)
    live.receive([b"emotion", b'{"v": 3}'], end - 1)  # one malformed message, shown in the status
    return DashboardApp(receiver)


@pytest.mark.parametrize("size", [(80, 24), (120, 30), (160, 48)], ids=["80x24", "120x30", "160x48"])
def test_main_screen(snap_compare, size):
    assert snap_compare(fixed_app(), terminal_size=size)


def test_120_columns_give_arousal_and_valence_numbers_and_the_voice_lines():
    """What the 120x30 snapshot must show, said in words: the numbers beside the two axis
    bars, and the speaker adaptation and speech share lines of the status panel."""

    async def look():
        app = fixed_app()
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            view = app.views[0]
            return app.query_one("#bars").border_subtitle, app.query_one("#status").render().plain, view

    dimensions, status, view = asyncio.run(look())
    assert "arousal" in dimensions and f"{view.arousal:+.2f}" in dimensions and f"{view.valence:+.2f}" in dimensions
    assert "adapted on 42 s of voice" in status and "40% of the last minute" in status


def test_paused_screen_at_80x24(snap_compare):
    assert snap_compare(fixed_app(), terminal_size=(80, 24), press=["p"])


def test_help_at_80x24(snap_compare):
    """The help must fit the smallest supported terminal whole, not wrapped or cut."""
    assert snap_compare(fixed_app(), terminal_size=(80, 24), press=["question_mark"])


def test_light_theme_at_80x24(snap_compare):
    app = fixed_app()
    app.theme = "textual-light"  # what `streamemo dash --light` sets
    assert snap_compare(app, terminal_size=(80, 24))


def test_the_fixed_feed_is_what_the_snapshot_shows():
    """Guards the snapshot's meaning: if these change, the pictures are of something else."""
    view = fixed_app().receiver.views()[0]
    assert view.connection == "live" and view.top == "happy" and view.voiced
    assert view.message_rate == pytest.approx(1 / HOP_S, rel=0.01)
    assert view.latency_ms == pytest.approx(42.0, abs=0.5)
    assert view.malformed == 1 and "schema version 3" in view.last_error
    assert "silence" in view.timeline and None not in view.timeline[1:]
    assert tuple(view.labels) == EMOTIONS
