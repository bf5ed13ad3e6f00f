"""What an install without the [train] extra gets: a daemon and `classify` that run with
the training libraries absent, and training commands that say which extra to install."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import _collect, _stop, _subscriber

# Importing any of these raises ModuleNotFoundError in the child, as in an install without
# them. silero_vad is the [test] extra's reference for the voice gate, whose weights are bundled.
TRAINING_ONLY = ("tqdm", "matplotlib", "audiomentations", "pyroomacoustics", "pedalboard", "librosa", "silero_vad")
WITHOUT_TRAINING = (f"import sys; sys.modules.update(dict.fromkeys({TRAINING_ONLY!r}));"
                    "from streamemo.cli import main; sys.exit(main(sys.argv[1:]))")


def _without_training(*args, **kw):
    return [sys.executable, "-c", WITHOUT_TRAINING, *args]


def test_daemon_and_classify_run_without_the_training_libraries(random_model, speech_wav, free_endpoint):
    classified = subprocess.run(_without_training("classify", str(speech_wav), "--model", str(random_model),
                                                  "--json"), capture_output=True, text=True, timeout=120)
    assert classified.returncode == 0, classified.stderr
    assert json.loads(classified.stdout)["windows"]
    proc = subprocess.Popen(_without_training("run", "--source", str(speech_wav), "--no-realtime", "--model",
                                              str(random_model), "--bind", free_endpoint, "--wait-subscriber", "20"),
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sock = _subscriber(free_endpoint)
    messages = _collect(sock, lambda m: sum(t == "emotion" for t, _ in m) >= 3, 60, proc)
    code, err = _stop(proc)
    assert code == 0, err
    assert sum(t == "emotion" for t, _ in messages) >= 3


def test_training_commands_name_the_extra_they_need(tmp_path):
    out = subprocess.run(_without_training("evaluate", "--data", f"ravdess:{tmp_path}", "--folds", "ravdess"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "streamemo evaluate: error: needs the training libraries (tqdm is not installed): pip install 'streamemo[train]'"]


def test_a_wheel_installed_outside_the_checkout_classifies_with_its_bundled_model(speech_wav, tmp_path):
    """`pip install .` anywhere: the wheel carries the default model as package data."""
    import shutil
    import sysconfig
    from pathlib import Path

    import pytest

    root = Path(__file__).resolve().parent.parent
    # Built from a copy, so the build leaves nothing in the checkout.
    source = tmp_path / "source"
    shutil.copytree(root, source, symlinks=True,
                    ignore=shutil.ignore_patterns(".venv", ".git", "reports", "build", "*.egg-info", "__pycache__",
                                                  ".pytest_cache", ".hypothesis"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, timeout=600)
    if built.returncode != 0:  # the isolated build fetches setuptools; offline that cannot work
        pytest.skip(f"cannot build a wheel here: {(built.stderr.strip().splitlines() or ['?'])[-1]}")
    (wheel,) = (tmp_path / "dist").glob("streamemo-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    # The dependencies (torch and the rest, several hundred MB) come from this venv's
    # site-packages by a path line; streamemo itself only from the wheel.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    where = subprocess.run([str(python), "-c", "import streamemo.config as c; print(c.__file__, c.DEFAULT_MODEL)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    module, model = where.stdout.split()
    assert module.startswith(str(venv)) and model.startswith(str(venv)), where.stdout
    out = subprocess.run([str(venv / "bin" / "streamemo"), "classify", str(speech_wav), "--json"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["windows"]  # no --model: the bundled one, from the wheel (above)
    small = subprocess.run([str(venv / "bin" / "streamemo"), "classify", str(speech_wav), "--json", "--model", "small"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert small.returncode == 0, small.stderr
    assert json.loads(small.stdout)["windows"][0]["model"].startswith("small@")  # by name, from the wheel
