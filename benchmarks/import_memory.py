"""What the daemon's imports cost in resident memory (issue 16): a fresh interpreter imports
the daemon's dependencies one after another, in the order `streamemo run` first needs them,
and reports the resident set after each; then it builds the running objects (model,
pipeline with its voice gate), opens the microphone (the test suite's virtual one,
tests/pulse.py) and lists which heavy libraries ended up loaded. Figures are MiB.

    .venv/bin/python benchmarks/import_memory.py [--torch-free] [--model M]

`--model` takes a path or a bundled name ("small"); without it, the bundled default, or
while models/default does not exist, an untrained stand-in with its architecture
(benchmarks/standin_model.py; `--model standin` asks for it by name).

Each step's cost includes what it drags in that earlier steps had not (torch's own
libraries with torch). nnAudio is not a step: a model file carries its frontend's kernels,
so running never imports it (nor the scipy it pulls in); the list of heavy libraries at the
end shows whether anything did. Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from standin_model import default_or_standin  # benchmarks/, beside this script

MODEL = "MODEL"  # in a step's code: replaced by the model's path
STEPS = [
    ("python", "pass"),
    ("numpy", "import numpy"),
    ("torch", "import torch"),
    ("soxr, soundfile, sounddevice", "import soxr, soundfile, sounddevice"),
    ("pyzmq", "import zmq"),
    ("streamemo.daemon", "import streamemo.daemon"),
    ("the model loaded", f"from streamemo.model import load_model; m = load_model({MODEL!r})"),
    ("its pipeline (frontend, network, voice gate)",
     "from streamemo.stream.pipeline import Pipeline; from streamemo.config import PipelineConfig; "
     "p = Pipeline(m, PipelineConfig())"),
    ("a window scored", "import numpy as np; p.feed(np.zeros(40000, np.float32))"),
    # PortAudio loaded every ALSA plugin when sounddevice was imported; opening the microphone
    # unloads those its stream does not use (audio/sources.py: release_alsa_plugins).
    ("the microphone opened (virtual, 16 kHz), 1 s read",
     "import time; from streamemo.audio.sources import MicSource; "
     "mic = MicSource('default', 0.01, 10.0, 16000); time.sleep(1); mic.read(0.5)"),
]
# `--torch-free`: what a daemon scoring on the CPU without torch would hold at the least, for
# comparison (issue 16's 250 MB): the same libraries but torch, the microphone open, and the
# weights of the model and the voice gate read as numpy arrays. Nothing scores here.
TORCH_FREE_STEPS = [
    ("python", "pass"),
    ("numpy", "import numpy"),
    ("soxr, soundfile, pyzmq, safetensors", "import soxr, soundfile, zmq, safetensors.numpy"),
    ("the microphone opened (virtual, 16 kHz), 1 s read", STEPS[-1][1]),
    # an encoder model's frontend weights too (streamemo/encoder/*.safetensors)
    ("the model's (its encoder's too) and the voice gate's weights, as numpy",
     f"import json; w = safetensors.numpy.load_file({MODEL!r} + '.safetensors'); "
     f"e = json.load(open({MODEL!r} + '.json'))['frontend'].get('encoder'); "
     "x = e and safetensors.numpy.load_file(f'streamemo/encoder/{e}.safetensors'); "
     "g = safetensors.numpy.load_file('streamemo/stream/silero_vad.safetensors')"),
]
HEAVY = ("matplotlib", "pandas", "sklearn", "librosa", "numba", "audiomentations", "pyroomacoustics", "pedalboard",
         "textual", "tqdm", "scipy", "torch", "nnAudio", "silero_vad")

CHILD = """
import sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
before = rss()
for name, code in STEPS:
    exec(code)
    now = rss()
    print(f"| {name} | {now - before:.0f} | {now:.0f} |")
    before = now
print()
print("heavy libraries loaded: " + ", ".join(h for h in HEAVY if h in sys.modules))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-free", action="store_true")
    parser.add_argument("--model", help="a path or bundled name; default: models/default, else a stand-in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args, tmp)


def run(args, tmp: str) -> None:
    from streamemo.model import resolve_model

    model, standin = default_or_standin(args.model, tmp)
    model = str(resolve_model(model))  # the child runs in the project's root; a bundled name as a path
    print(f"model: {'an untrained stand-in with the default architecture' if standin else model}")
    steps = [(name, code.replace(repr(MODEL), repr(model))) for name, code in
             (TORCH_FREE_STEPS if args.torch_free else STEPS)]
    print("| step | MiB added | resident MiB |")
    print("|---|---|---|")
    code = f"STEPS = {steps!r}\nHEAVY = {HEAVY!r}\n" + CHILD
    # The microphone step records from the test suite's virtual microphone.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pulse import PulseServer

    pulse = PulseServer().start()
    try:
        subprocess.run([sys.executable, "-c", code], check=True, env=pulse.env)
    finally:
        pulse.stop()


if __name__ == "__main__":
    main()
