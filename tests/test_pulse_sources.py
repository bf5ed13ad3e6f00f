"""Microphones by name on PulseAudio/PipeWire (issue 29, part 1): `streamemo devices` lists the
server's sources, and a real daemon records from the one `--source` names, only from it, and
rides out its going away and coming back.

Two more virtual microphones beside the session's (tests/pulse.py): null sinks A and B, whose
monitors are sources described "Monitor of Streamemo Test Mic A/B". A tone played into one
sink is heard by its monitor only.
"""

import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import STREAMEMO, _collect, _daemon, _stop, _subscriber

pytestmark = pytest.mark.pulse

SINK_A, SINK_B = "streamemo_mic_a", "streamemo_mic_b"
DESCRIPTION_A, DESCRIPTION_B = "Streamemo Test Mic A", "Streamemo Test Mic B"
HEARD_DB = -20.0  # the tone is at -9 dBFS; the silence the sinks carry otherwise is -120


@pytest.fixture(scope="module")
def two_sources(pulse):
    """Sources A and B on the session's server, taken away again after this module."""
    a = pulse.add_source(SINK_A, DESCRIPTION_A)
    b = pulse.add_source(SINK_B, DESCRIPTION_B)
    yield a, b
    for sink in (SINK_A, SINK_B):
        if sink in pulse.extra:
            pulse.remove_source(sink)


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    """1.2 s of 440 Hz at half of full scale (-9 dBFS RMS)."""
    rate = 48000
    t = np.arange(int(1.2 * rate)) / rate
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def _endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _emotions(messages):
    return [b for t, b in messages if t == "emotion"]


def _statuses(messages):
    return [b for t, b in messages if t == "status"]


def _loudest(messages) -> float:
    return max(b["level_db"] for b in _emotions(messages))


def test_devices_lists_the_servers_sources_with_its_default_marked(pulse, two_sources):
    result = subprocess.run([*STREAMEMO, "devices"], env=pulse.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    portaudio, server = result.stdout.split("\n\n")
    assert "pulse" in portaudio  # PortAudio's devices, as before
    header, *rows = server.splitlines()
    assert header.startswith("pulseaudio ") and "sources" in header
    rows = {row[3:].split("  ")[0]: row for row in rows}
    a, b = two_sources
    assert rows[a] == f"   {a}  \"Monitor of {DESCRIPTION_A}\"  (48000 Hz, 1 ch)"
    assert rows[b] == f"   {b}  \"Monitor of {DESCRIPTION_B}\"  (48000 Hz, 1 ch)"
    assert [name for name, row in rows.items() if row.startswith("*")] == ["streamemo_vmic.monitor"]


def test_devices_without_a_server_lists_portaudio_and_says_so_in_one_line(pulse, tmp_path):
    """A machine where PortAudio has a device but no PulseAudio/PipeWire server answers: here
    an ALSA device that names the private server in its own configuration, while
    PULSE_SERVER (which the server query follows) names no server."""
    (tmp_path / ".asoundrc").write_text(
        f'pcm.configured_pulse {{ type pulse server "{pulse.env["PULSE_SERVER"]}" '
        'hint { show on description "a server named in ALSA\'s configuration" } }\n')
    env = {**pulse.env, "HOME": str(tmp_path), "PULSE_SERVER": f"unix:{tmp_path}/no-such-socket"}
    result = subprocess.run([*STREAMEMO, "devices"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "*   0  configured_pulse  (ALSA, 32 ch, 44100 Hz)",
        "no PulseAudio/PipeWire server was found: only the devices above can be recorded from"]


def test_devices_in_an_environment_without_pulsectl_says_how_to_install_it(pulse):
    """A virtual environment made before pulsectl was a dependency (staged as test_packaging
    stages missing libraries: the import fails in the child)."""
    code = "import sys; sys.modules['pulsectl'] = None; from streamemo.cli import main; sys.exit(main(['devices']))"
    result = subprocess.run([sys.executable, "-c", code], env=pulse.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "streamemo devices: error: pulsectl is not installed: run `make run` (or `pip install -c constraints.txt "
        "pulsectl==24.12.0`)"], result.stderr


RESOLVE = """
from streamemo import StreamemoError
from streamemo.audio.sources import import_sounddevice, resolve_input_device
sd = import_sounddevice()
for spec in ("pulse", "default", "0", "MIC A", "streamemo_mic_b.monitor", "streamemo test mic", "no such mic"):
    try:
        info, source = resolve_input_device(sd, spec)
        print(spec, "->", info["name"], source and source.name)
    except StreamemoError as e:
        print(spec, "-> error:", e, "exit", e.exit_code)
"""


def test_portaudio_names_come_first_then_the_servers(pulse, two_sources):
    """A PortAudio device's name or index means that device, as it always did; other names
    are looked for among the server's sources (exact name, then a part of one name or
    description) and recorded through PortAudio's `pulse` device."""
    out = subprocess.run([sys.executable, "-c", RESOLVE], env=pulse.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" -> ", 1) for line in out.stdout.splitlines())
    assert lines["pulse"] == "pulse None"
    assert lines["default"] == "default None"
    assert lines["0"].endswith(" None")
    assert lines["MIC A"] == f"pulse {two_sources[0]}"
    assert lines["streamemo_mic_b.monitor"] == f"pulse {two_sources[1]}"
    assert lines["streamemo test mic"] == (
        f"error: --source 'streamemo test mic' matches 2 PulseAudio/PipeWire sources: '{two_sources[0]}' "
        f"(Monitor of {DESCRIPTION_A}), '{two_sources[1]}' (Monitor of {DESCRIPTION_B}); give more of one's name "
        "or description (`streamemo devices` lists them) exit 2")
    assert lines["no such mic"].startswith("error: no input device matches 'no such mic': PortAudio has 'pulse'")
    assert f"'{two_sources[1]}' (Monitor of {DESCRIPTION_B}); `streamemo devices` describes them exit 2" \
        in lines["no such mic"]


# An unknown name through a real daemon: tests/test_cli_errors.py (`run --source no-such-mic`
# on this server, one line naming its sources, exit 2).


@pytest.fixture(scope="module")
def daemons(pulse, two_sources, random_model):
    """One daemon on A (named by a part of its description, in other case), one on B (by
    its exact name), each with a subscriber."""
    running = {}
    for sink, spec in ((SINK_A, "test mic a"), (SINK_B, two_sources[1])):
        endpoint = _endpoint()
        proc = _daemon("--source", spec, "--model", str(random_model), "--bind", endpoint, env=pulse.env)
        running[sink] = proc, _subscriber(endpoint)
    yield running
    for proc, sock in running.values():
        sock.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # both at once: each takes a second or so to stop
    for proc, _ in running.values():
        _stop(proc)


def _listen(daemons, seconds: float) -> dict:
    """What each daemon published over the next `seconds`."""
    heard = {sink: [] for sink in daemons}
    for _ in range(int(seconds / 0.25)):
        for sink, (proc, sock) in daemons.items():
            heard[sink] += _collect(sock, lambda m: False, 0.125, proc)
    return heard


def test_each_daemon_hears_the_source_it_names_and_no_other(pulse, daemons, tone):
    for sink, (proc, sock) in daemons.items():
        started = _collect(sock, lambda m: len(_emotions(m)) >= 2, 60, proc)
        assert proc.poll() is None, proc.stderr.read()
        assert _statuses(started)[-1]["device"] == f"Monitor of Streamemo Test Mic {sink[-1].upper()} ({sink}.monitor)"
    for loud, quiet in ((SINK_A, SINK_B), (SINK_B, SINK_A)):
        player = pulse.play(tone, wait=False, sink=loud)
        heard = _listen(daemons, 1.5)
        player.wait(timeout=10)
        assert _loudest(heard[loud]) > HEARD_DB, f"the daemon on {loud} must hear the tone played into it"
        assert _loudest(heard[quiet]) == -120.0, f"the daemon on {quiet} must hear nothing of {loud}"


def test_a_named_source_that_goes_away_is_lost_and_then_heard_again(pulse, daemons, tone):
    """The server moves a recording whose source vanished to its default source; the daemon
    must not go on listening there, but say it lost its input, retry, and take the named
    source again when it is back. The daemon on B goes on throughout."""
    proc, sock = daemons[SINK_A]
    _collect(sock, lambda m: len(_emotions(m)) >= 1, 30, proc)
    pulse.remove_source(SINK_A)
    try:
        lost = _collect(sock, lambda m: any(b["input_state"] == "lost" for b in _statuses(m)), 10, proc)
        assert any(b["input_state"] == "lost" for b in _statuses(lost)), _statuses(lost)[-1:]
        during = _collect(sock, lambda m: False, 1.0, proc)
        assert _emotions(during) == [] and proc.poll() is None
        # Said when the loss is found; a retry a second later may already say why reopening failed.
        assert any("is gone: source 'streamemo_mic_a.monitor' was removed" in s["message"]
                   for s in _statuses(lost + during)), _statuses(lost + during)
    finally:
        pulse.add_source(SINK_A, DESCRIPTION_A)
    back = _collect(sock, lambda m: len(_emotions(m)) >= 2, 30, proc)
    assert len(_emotions(back)) >= 2 and _statuses(back)[-1]["input_state"] == "running"
    player = pulse.play(tone, wait=False, sink=SINK_A)
    heard = _listen(daemons, 1.5)
    player.wait(timeout=10)
    assert _loudest(heard[SINK_A]) > HEARD_DB and _loudest(heard[SINK_B]) == -120.0
    assert daemons[SINK_B][0].poll() is None
