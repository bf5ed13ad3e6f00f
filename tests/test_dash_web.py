"""`streamemo dash --web`: the dashboard in a real headless Chromium, driven by playwright.

The serving process starts one real daemon (the bundled small model on a speech file)
and serves the dashboard; two browser tabs open the page and must both show that daemon
live, each through its own `streamemo dash` process, with no second daemon. The test reads
the terminal's text out of the page's xterm.js (what a person would read off the screen)
and saves a screenshot: STREAMEMO_DASH_WEB_PNG=benchmarks/dash-web.png keeps it there.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

from streamemo import EMOTIONS

pytestmark = pytest.mark.timeout(120)

STREAMEMO = [sys.executable, "-m", "streamemo"]


def chromium() -> str | None:
    """Debian's browser binary itself, not its /usr/bin wrapper script (which reads
    /etc/chromium.d and adds flags of its own); playwright cannot download its own."""
    for path in ("/usr/lib/chromium/chromium", shutil.which("chromium")):
        if path and Path(path).exists():
            return path
    return None


needs_chromium = pytest.mark.skipif(chromium() is None, reason="chromium is not installed (Debian: chromium)")

# textual-serve's page keeps its xterm.js Terminal to itself (`this.terminal = new Terminal(…)`
# in a bundle). A setter on Object.prototype, installed before the page's scripts run, sees
# that assignment and keeps the terminal where the test can read its screen buffer.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  get() { return undefined; },
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true, enumerable: true});
    if (value && value.buffer && value.rows) window.__terminal = value;
  },
});
"""
READ_SCREEN = """() => {
  const t = window.__terminal;
  if (!t) return null;
  const buffer = t.buffer.active, lines = [];
  for (let row = 0; row < t.rows; row++) {
    const line = buffer.getLine(buffer.viewportY + row);
    lines.push(line ? line.translateToString(true) : "");
  }
  return lines.join("\\n");
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def what_is_missing(screen: str) -> list[str]:
    """What a person looks for on the dashboard of a daemon hearing speech."""
    missing = []
    lines = screen.splitlines()
    if not lines or "live" not in lines[0]:
        missing.append("not live")
    if "● speech" not in screen:
        missing.append("no voice shown")
    missing += [f"no percentage for {label}" for label in EMOTIONS if not re.search(rf"│ {label}\s.*\d+%", screen)]
    return missing


def wait_for_screen(page, ready, timeout_s: float, what: str) -> str:
    deadline, screen = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        screen = page.evaluate(READ_SCREEN)
        if screen is not None and ready(screen):
            return screen
        time.sleep(0.25)
    if screen is None:
        pytest.fail("the page never made an xterm.js Terminal (has textual-serve's page changed?)")
    pytest.fail(f"{what}; last screen:\n{screen}")


def processes(server: subprocess.Popen) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The server's daemons (`streamemo run`) and tab dashboards (`streamemo dash` without --web)."""
    daemons, tabs = [], []
    for child in psutil.Process(server.pid).children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if cmdline[1:4] == ["-m", "streamemo", "run"]:
            daemons.append(child)
        elif cmdline[1:4] == ["-m", "streamemo", "dash"]:
            tabs.append(child)
    return daemons, tabs


def status(port: int, path: str, headers: dict) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


@needs_chromium
def test_two_browser_tabs_watch_the_one_daemon_the_server_started(speech_wav, free_endpoint, tmp_path):
    from playwright.sync_api import sync_playwright

    # The espeak sentence four times (about 17 s at real time): speech on screen for as
    # long as the test looks, and the file still playing when the test stops the server.
    speech, rate = sf.read(speech_wav, dtype="float32")
    recording = tmp_path / "speech.wav"
    sf.write(recording, np.concatenate([speech] * 4), rate, subtype="PCM_16")
    port = free_port()
    out, err = tmp_path / "server.out", tmp_path / "server.err"
    # --wait-subscriber: the file starts when the first tab's dashboard has connected.
    command = [*STREAMEMO, "dash", "--web", "--port", str(port), "--connect", free_endpoint, "--start-daemon",
               "--daemon-log", str(tmp_path / "daemon.log"), "--", "--source", str(recording), "--model", "small",
               "--hop", "0.25", "--smoothing", "0.5", "--compute", "cpu", "--wait-subscriber", "60"]
    with open(out, "w") as stdout, open(err, "w") as stderr:
        server = subprocess.Popen(command, stdout=stdout, stderr=stderr)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while "serving on" not in out.read_text():
            assert server.poll() is None and time.monotonic() < deadline, f"{out.read_text()}{err.read_text()}"
            time.sleep(0.1)
        assert f"serving on {url[:-1]} (this machine only)" in out.read_text()

        # Another site's page may not drive it, nor reach it under a name it points at 127.0.0.1.
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        assert status(port, "/ws", {**upgrade, "Origin": "http://evil.example"}) == 403
        assert status(port, "/", {"Host": f"evil.example:{port}"}) == 403

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium())
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 760})
                context.add_init_script(CATCH_TERMINAL)
                # The page also links a web font from the internet: nothing leaves this machine.
                context.route(lambda u: not u.startswith(url), lambda route: route.abort())
                first = context.new_page()
                first.goto(url)
                wait_for_screen(first, lambda s: not what_is_missing(s), 60,
                                "the first tab never showed the daemon hearing speech")
                second = context.new_page()
                second.goto(url)
                wait_for_screen(second, lambda s: "live" in s.splitlines()[0], 30, "the second tab never went live")
                daemons, tabs = processes(server)
                assert len(daemons) == 1 and len(tabs) == 2, (daemons, tabs)

                # A tab closed ends its own dashboard only: the daemon and the other tab stay.
                second.close()
                deadline = time.monotonic() + 10
                while len(processes(server)[1]) != 1:
                    assert time.monotonic() < deadline, "closing a tab did not end its dashboard"
                    time.sleep(0.2)
                assert len(processes(server)[0]) == 1

                # Textual's web driver starts a tab unfocused, its footer empty: a click gives
                # the page focus, the footer its keys, and the keys reach the app.
                first.bring_to_front()
                first.click("#terminal")
                wait_for_screen(first, lambda s: "q quit" in s.splitlines()[-1], 10,
                                "no keys in the footer after a click")
                first.keyboard.press("p")
                wait_for_screen(first, lambda s: "PAUSED" in s.splitlines()[0], 10, "p did not pause")
                first.keyboard.press("p")
                screen = wait_for_screen(first, lambda s: "PAUSED" not in s and not what_is_missing(s), 20,
                                         "the first tab did not resume showing the speech")
                screenshot = first.screenshot()
                (tmp_path / "dash-web.png").write_bytes(screenshot)
                if os.environ.get("STREAMEMO_DASH_WEB_PNG"):
                    Path(os.environ["STREAMEMO_DASH_WEB_PNG"]).write_bytes(screenshot)
                print(screen)

                # Ctrl+C's signal, a tab still open: the server ends, and with it the daemon
                # and every tab's dashboard; the page says the session has ended.
                left = [*processes(server)[0], *processes(server)[1]]
                server.send_signal(signal.SIGINT)
                assert server.wait(20) == 0 and err.read_text() == "", err.read_text()
                gone, alive = psutil.wait_procs(left, timeout=10)
                assert not alive, alive
                first.wait_for_selector("body.-closed", timeout=5000)
            finally:
                browser.close()
        assert out.read_text().count("opened the dashboard") == out.read_text().count("closed the dashboard") == 2
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_port_in_use_is_one_line_and_no_daemon(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "daemon.log"
        result = subprocess.run([*STREAMEMO, "dash", "--web", "--port", str(port), "--start-daemon",
                                 "--daemon-log", str(log)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == f"streamemo dash: error: port {port} on 127.0.0.1 is in use; choose another with --port N\n"
    assert not log.exists()  # refused before a daemon was started


def test_a_daemon_that_stops_stops_the_server_with_its_reason(tmp_path):
    """A wrong source must not leave a server showing tabs a daemon that is not there."""
    port = free_port()
    result = subprocess.run([*STREAMEMO, "dash", "--web", "--port", str(port), "--connect",
                             f"tcp://127.0.0.1:{free_port()}", "--start-daemon", "--daemon-log",
                             str(tmp_path / "daemon.log"), "--", "--source", str(tmp_path / "nothing.wav")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert f"serving on http://127.0.0.1:{port}" in result.stdout
    assert re.fullmatch(r"streamemo dash: the daemon stopped \(exit code \d\): streamemo run: error: audio file "
                        r"\S+nothing.wav does not exist; its log: \S+daemon.log\n", result.stderr), result.stderr


def test_a_host_other_than_loopback_warns_that_there_is_no_login():
    port = free_port()
    server = subprocess.Popen([*STREAMEMO, "dash", "--web", "--host", "0.0.0.0", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        warning = server.stderr.readline()
        assert warning.startswith(f"streamemo dash: warning: anyone who can reach port {port} on this machine "
                                  "sees the dashboard"), warning
        assert "every address" in server.stdout.readline()
        # Reached by another name (as a phone would, by this machine's address), the page
        # points its websocket back at that name, not at the 0.0.0.0 it was bound to.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/", headers={"Host": f"192.0.2.7:{port}"})
        page = connection.getresponse().read().decode()
        assert f'data-session-websocket-url="ws://192.0.2.7:{port}/ws"' in page
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(20) == 0
