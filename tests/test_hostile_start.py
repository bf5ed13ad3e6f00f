"""Hostile input at the edges of start-up (issue 31): a SIGHUP before the daemon's handlers
are in place, and audio file names that are not UTF-8. The real CLI in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import STREAMEMO, _collect, _daemon, _stop, _subscriber

pytestmark = pytest.mark.timeout(120)

# At the moment the named module is first imported, print SIGHUP's disposition and stop.
WATCH = (
    "import signal, sys\n"
    "class Watch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == {module!r}:\n"
    "            handler = signal.getsignal(signal.SIGHUP)\n"
    "            print('fatal' if handler in (signal.SIG_DFL, None) else 'survives', flush=True)\n"
    "            raise SystemExit(0)\n"
    "sys.meta_path.insert(0, Watch())\n"
    "sys.argv[0] = 'streamemo'\n"  # as the console script starts it
    "import streamemo.cli\n"
)


@pytest.mark.parametrize("command, expected", [("run", "survives"), ("subscribe", "fatal")])
def test_sighup_cannot_end_the_daemon_from_the_package_first_line(command, expected):
    """A SIGHUP in the first 0.2 s of start-up ended `streamemo run` (exit 129): its handlers
    came only after 100-200 ms of imports. Now the package's first lines ignore SIGHUP in a
    process started as the daemon, before `streamemo.cli` is even imported. Any other
    command keeps the default, so closing its terminal still ends it."""
    # The default disposition, whatever this test runner inherited (nohup ignores SIGHUP).
    result = subprocess.run([sys.executable, "-c", WATCH.format(module="streamemo.cli"), command, "--source", "x.wav"],
                            capture_output=True, text=True, timeout=60,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    assert result.stdout.strip() == expected, (result.stdout, result.stderr)


@pytest.fixture
def strange_name(tmp_path, speech_and_silence_wav):
    """The test recording under a name whose bytes are not UTF-8 (Python holds it as
    "\\udcff\\udcfe"), as a Latin-1 system or a camera card can make them."""
    path = os.path.join(os.fsencode(tmp_path), b"talk-\xff\xfe.wav")
    shutil.copyfile(speech_and_silence_wav, path)
    return os.fsdecode(path)


def test_classify_reads_a_file_whose_name_is_not_utf8(random_model, strange_name):
    out = subprocess.run([*STREAMEMO, "classify", "--format", "json", "--model", str(random_model), strange_name],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["duration_s"] > 5 and result["file"] == strange_name


def test_the_daemon_reads_a_file_whose_name_is_not_utf8(random_model, strange_name, free_endpoint):
    """`run --source` on it publishes, the name in its messages as U+FFFD (valid text for
    every reader)."""
    proc = _daemon("--source", strange_name, "--no-realtime", "--model", str(random_model), "--bind", free_endpoint,
                   "--wait-subscriber", "20")
    sub = _subscriber(free_endpoint)
    try:
        messages = _collect(sub, lambda m: False, 60, proc)
    finally:
        code, err = _stop(proc)
        sub.close(linger=0)
    assert code == 0 and "Traceback" not in err, err
    sources = {body["source"] for topic, body in messages if topic == "emotion"}
    assert sources == {strange_name.replace("\udcff", "\ufffd").replace("\udcfe", "\ufffd")}
