"""What an install without the [train] extra gets: a daemon and `classify` that run with
the training libraries absent, and training commands that say which extra to install."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import _collect, _stop, _subscriber

# Importing any of these raises ModuleNotFoundError in the child, as in an install without them.
TRAINING_ONLY = ("tqdm", "matplotlib", "audiomentations", "pyroomacoustics", "pedalboard", "librosa")
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
