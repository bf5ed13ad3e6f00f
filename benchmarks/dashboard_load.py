"""The dashboard under a flood: a feed far faster than any screen, key presses meanwhile.

A separate process publishes emotion messages at --rate (200/s by default, 40x a daemon's
usual 5/s) plus a status each second; the app runs headless (Textual's pilot) at a given
terminal size and receives them over real TCP. Every --key-every seconds a key bound to a
probe action is pressed and the time until the action runs is taken. Reported:

  key latency          press -> the action running (p50, p95, max)
  display age          a frame's draw time minus its newest message's arrival (p50, p99)
  frames/s             how often the screen was redrawn (bounded by the receiver at 20/s)
  received/s           messages the receiver took off the socket
  RSS                  resident memory after warm-up and at the end
  CPU                  process CPU seconds per wall second (all threads)

Run: .venv/bin/python benchmarks/dashboard_load.py [--seconds 10] [--rate 200] [--size 80x24]
The test tests/test_dashboard_load.py runs `measure()` and asserts generous bounds; the
numbers recorded in benchmarks/dashboard_load.md come from this script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
from textual import events
from textual.binding import Binding

from streamemo.dashboard.app import DashboardApp
from streamemo.dashboard.receiver import Receiver

FEEDGEN = Path(__file__).resolve().parent.parent / "tests" / "feedgen.py"  # the scripted daemon


class ProbeApp(DashboardApp):
    """The real app plus one invisible key whose action notes when it ran, counting frames."""

    BINDINGS = [Binding("z", "probe", show=False)]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.probed_at = 0.0
        self.frames_drawn = 0
        self.display_ages: list[float] = []

    def action_probe(self) -> None:
        self.probed_at = time.perf_counter()

    def refresh_views(self) -> None:
        super().refresh_views()
        self.frames_drawn += 1
        view = self.views[0]
        if view.received_at is not None:
            self.display_ages.append(time.time() - view.received_at)


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


async def measure(seconds: float = 10.0, rate: float = 200.0, size=(80, 24), key_every: float = 0.25) -> dict:
    endpoint = free_endpoint()
    feed = subprocess.Popen([sys.executable, str(FEEDGEN), endpoint, "--rate", str(rate)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process = psutil.Process()
    try:
        app = ProbeApp(Receiver([endpoint]))
        async with app.run_test(size=size) as pilot:
            deadline = time.monotonic() + 20
            while app.views[0].connection != "live":
                if time.monotonic() > deadline:
                    raise RuntimeError("the feed never arrived")
                await pilot.pause(0.05)
            await pilot.pause(1.0)  # warm-up: first frames, caches, allocator pools
            rss = [process.memory_info().rss]
            frames0, received0, cpu0 = app.frames_drawn, app.receiver.received, process.cpu_times()
            ages0 = len(app.display_ages)
            latencies = []
            start = time.monotonic()
            next_rss = start + 1.0
            while time.monotonic() - start < seconds:
                # Posted the way a terminal driver delivers a key: into the app's queue,
                # behind whatever the feed has queued. (pilot.press() would also wait for
                # the screen to go idle, which a 200/s feed rarely lets it do.)
                pressed = time.perf_counter()
                app.post_message(events.Key("z", "z"))
                while app.probed_at < pressed:
                    await asyncio.sleep(0.001)
                latencies.append(app.probed_at - pressed)
                await pilot.pause(key_every)
                if time.monotonic() >= next_rss:
                    rss.append(process.memory_info().rss)
                    next_rss += 1.0
            wall = time.monotonic() - start
            rss.append(process.memory_info().rss)
            cpu1 = process.cpu_times()
            rate_seen = app.views[0].message_rate
            frames = app.frames_drawn - frames0
            received = app.receiver.received - received0
            ages = app.display_ages[ages0:]
    finally:
        feed.terminate()
        feed.wait(5)
    latencies.sort()
    ages.sort()
    return {
        "seconds": round(wall, 2),
        "feed_rate_per_s": rate,
        "terminal": f"{size[0]}x{size[1]}",
        "received_per_s": round(received / wall, 1),
        "message_rate_shown": round(rate_seen, 1),
        "frames_per_s": round(frames / wall, 1),
        "key_presses": len(latencies),
        "key_latency_ms_p50": round(1000 * statistics.median(latencies), 1),
        "key_latency_ms_p95": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1),
        "key_latency_ms_max": round(1000 * latencies[-1], 1),
        "display_age_ms_p50": round(1000 * statistics.median(ages), 1),
        "display_age_ms_p99": round(1000 * ages[int(0.99 * (len(ages) - 1))], 1),
        "rss_mb_start": round(rss[0] / 2**20, 1),
        "rss_mb_end": round(rss[-1] / 2**20, 1),
        "rss_mb_max": round(max(rss) / 2**20, 1),
        "rss_mb_each_second": [round(r / 2**20, 1) for r in rss],
        "cpu_per_wall_s": round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--size", default="80x24")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    result = asyncio.run(measure(args.seconds, args.rate, (width, height)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
