"""An untrained stand-in for the default model, for cost measurements before the trained one
exists: the shipped architecture exactly (Whisper tiny.en's first two layers in 0.24 s
blocks with 0.48 s of context, `networks.EncoderHead`, speaker adaptation), made as the
test suite's `encoder_model` fixture makes it (tests/conftest.py). Its cost is the real
model's: the same frontend, blocks and head, only the head's weights are random (and the
voice gate, not the model, decides which windows are scored).

    .venv/bin/python benchmarks/standin_model.py /tmp/standin    # writes /tmp/standin/encoder-standin.{json,safetensors}

and then `--model /tmp/standin/encoder-standin` to any benchmark.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "encoder-standin"


def make_standin(directory: str | Path) -> Path:
    """Writes the stand-in into `directory`; returns its model path (no suffix)."""
    import numpy as np
    import torch

    from streamemo import EMOTIONS
    from streamemo.features import BandStats
    from streamemo.model import Model, save_model
    from streamemo.train.recipe import whisper_frontend

    torch.manual_seed(0)
    spec = whisper_frontend()
    model = Model.create(NAME, EMOTIONS, 1.92, spec, "encoder_head")
    model.speaker_norm = BandStats(np.full(spec.n_features, 0.5), np.full(spec.n_features, 0.4))
    path = Path(directory) / NAME
    save_model(model, path, {"note": "untrained stand-in for cost measurements (benchmarks/standin_model.py)"})
    return path


def default_or_standin(model: str | None, directory: str | Path) -> tuple[str, bool]:
    """`model` when given; else the bundled default when it exists; else a stand-in written
    into `directory`. Returns (model path, whether it is the stand-in)."""
    if model == "standin":
        return str(make_standin(directory)), True
    if model:
        return model, False
    if (ROOT / "models" / "default.json").exists():
        return str(ROOT / "models" / "default"), False
    return str(make_standin(directory)), True


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.path.insert(0, str(ROOT))
    print(make_standin(sys.argv[1]))
