"""Bad input: one clear line naming the problem and the fix, the right exit code, no traceback."""

import subprocess

import pytest

from conftest import STREAMEMO


def _run(*args, env=None, timeout=60):
    return subprocess.run([*STREAMEMO, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _one_line_error(result, code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    line = [ln for ln in result.stderr.splitlines() if "error:" in ln]
    assert line, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_unknown_device_lists_devices_and_exits_2(pulse, random_model):
    result = _run("run", "--source", "no-such-mic", "--model", str(random_model), env=pulse.env)
    _one_line_error(result, 2, "no input device matches 'no-such-mic'", "pulse", "default")


def test_no_audio_system_says_what_to_start(no_audio_env, random_model):
    result = _run("run", "--model", str(random_model), env=no_audio_env)
    _one_line_error(result, 1, "no audio input device", "PulseAudio or PipeWire")


def test_unreadable_or_corrupt_file_is_named(tmp_path, random_model):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    result = _run("classify", str(bad), "--model", str(random_model))
    _one_line_error(result, 1, str(bad))
    result = _run("run", "--source", str(tmp_path / "missing.flac"), "--model", str(random_model))
    _one_line_error(result, 1, "missing.flac does not exist")


def test_missing_or_corrupt_model_is_named(tmp_path):
    result = _run("classify", "x.wav", "--model", str(tmp_path / "nope"))
    _one_line_error(result, 1, "nope.json does not exist")
    # With workers, which load the model too: still the one line, from the main process.
    result = _run("classify", "x.wav", "y.wav", "--jobs", "2", "--model", str(tmp_path / "nope"))
    _one_line_error(result, 1, "nope.json does not exist")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("text, needle", [
    ("[audio]\nsorce = 1\n", "unknown key 'audio.sorce'"),
    ("[pipeline]\nhop_s = \"x\"\n", "pipeline.hop_s must be a number"),
])
def test_bad_config_exits_2(tmp_path, text, needle):
    config = tmp_path / "c.toml"
    config.write_text(text)
    _one_line_error(_run("run", "--config", str(config)), 2, needle)


def test_address_in_use_is_said(random_model, speech_wav, free_endpoint):
    import zmq

    blocker = zmq.Context.instance().socket(zmq.PUB)
    blocker.bind(free_endpoint)
    try:
        result = _run("run", "--source", str(speech_wav), "--model", str(random_model), "--bind", free_endpoint)
    finally:
        blocker.close(linger=0)
    _one_line_error(result, 1, "already in use")


def test_help_and_version_everywhere():
    from streamemo.cli import COMMANDS

    assert _run("--version").stdout.startswith("streamemo ")
    top = _run("--help").stdout
    assert "streamemo/commands" not in top, "a developer's note, not help"
    assert "getting started:" in top and "streamemo dash --start-daemon" in top
    for command in COMMANDS:
        result = _run(command, "--help")
        assert result.returncode == 0 and "usage: streamemo " + command in result.stdout
        assert f"examples:\n  streamemo {command}" in result.stdout, command


def test_run_help_names_the_compute_device_apart_from_the_audio_one_and_gives_defaults():
    help_text = " ".join(_run("run", "--help").stdout.split())  # unwrapped
    assert "--compute {auto,cpu,cuda}" in help_text and "--device" not in help_text
    for flag, default in (("--hop S", "0.24"), ("--smoothing S", "1.0"), ("--window S", "the model's"),
                          ("--speech-threshold P", "0.7"), ("--model MODEL", "default")):
        after = help_text.split(f"{flag} ", 1)[1]
        assert f"(default: {default})" in after.split(" --", 1)[0], flag
    # The old name still works, for configs and scripts written before: hidden, not gone.
    for flag in ("--compute", "--device"):
        assert 'device = "cpu"' in _run("run", flag, "cpu", "--print-config").stdout


def test_print_config_shows_the_merged_result(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[publish]\nbind = "ipc:///tmp/x"\n')
    out = _run("run", "--config", str(config), "--hop", "0.5", "--print-config").stdout
    assert 'bind = "ipc:///tmp/x"' in out and "hop_s = 0.5" in out
