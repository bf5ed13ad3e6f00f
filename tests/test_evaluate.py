"""Evaluation figures, and the promise that the evaluation's label for a clip is the label
the daemon's path (`load_model` + `Pipeline`, and `streamemo classify`) gives it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamemo.config import PipelineConfig
from streamemo.model import load_model, save_model
from streamemo.stream.pipeline import Pipeline, file_probabilities
from streamemo.audio.files import load_audio
from streamemo.train.readers import read_ravdess
from streamemo.train.recipe import TrainConfig
from streamemo.train.evaluate import ClipScore, load_folds, score_clips, score_metrics, summarise
from streamemo.train.metrics import classification_metrics
from streamemo.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SHARED_DATA, corpus  # noqa: E402
from test_train import tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_metrics_by_hand():
    # 3 classes; class 2 never occurs in the truth, so UA averages classes 0 and 1 only.
    y_true = [0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 1, 1, 2]
    m = classification_metrics(y_true, y_pred, 3)
    assert m["confusion"] == [[3, 1, 0], [0, 1, 1], [0, 0, 0]]
    assert m["wa"] == pytest.approx(4 / 6)
    assert m["ua"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["precision"] == pytest.approx([1.0, 0.5, 0.0])
    f1_0, f1_1 = 2 * 1 * 0.75 / 1.75, 0.5
    assert m["macro_f1"] == pytest.approx((f1_0 + f1_1) / 2)

    # Over folds: class 0's recall is 3/4 in this fold and 1 in a perfect one; class 2 is
    # tested in neither, so it has no spread; per-class figures pool the clips.
    perfect = score_metrics([ClipScore(str(i), label, label, [1, 0, 0], False) for i, label in enumerate("aab")],
                            ["a", "b", "c"])
    s = summarise([{"labels": ["a", "b", "c"], "metrics": {**m, "ua_strict": m["ua"], "wa_strict": m["wa"],
                                                            "no_voice": 0}},
                   {"labels": ["a", "b", "c"], "metrics": perfect}])
    assert s["ua"]["per_fold"] == pytest.approx([0.625, 1.0])
    assert s["per_class"]["a"]["recall"] == pytest.approx(5 / 6) and s["per_class"]["a"]["recall_std"] == pytest.approx(0.125)
    assert s["per_class"]["c"]["recall_std"] == 0.0 and s["per_class"]["c"]["support"] == 0


def test_no_voice_clips_count_in_the_strict_figures():
    labels = ["a", "b"]
    scores = [ClipScore("1", "a", "a", [1, 0], False), ClipScore("2", "a", "a", [1, 0], True),
              ClipScore("3", "b", "b", [0, 1], False), ClipScore("4", "c", "a", [1, 0], False)]
    m = score_metrics(scores, labels)
    assert m["ua"] == 1.0 and m["wa"] == 1.0
    assert m["ua_strict"] == pytest.approx(0.75) and m["wa_strict"] == pytest.approx(2 / 3)
    assert m["no_voice"] == 1 and m["unknown_label"] == 1 and m["n_clips"] == 3


def test_folds_file_names_speakers_like_the_readers():
    path = SHARED_DATA / "folds.json"
    if not path.exists():
        pytest.skip(f"{path} is absent (the corpora live in ../shared/data beside the project)")
    folds = load_folds(path, "ravdess")
    assert len(folds) == 6 and folds[0] == ["ravdess:01", "ravdess:11", "ravdess:20", "ravdess:21"]
    assert sorted(s for f in folds for s in f) == [f"ravdess:{i:02d}" for i in range(1, 25)]
    assert len(load_folds(path, "emodb")) == 5


@pytest.mark.parametrize("recipe", ["small", "default"])
def test_trained_model_gives_classify_the_evaluations_label(tmp_path, recipe):
    """Acceptance 6: train on a few real RAVDESS clips, save, load as the daemon does; the
    label `streamemo classify` prints for a clip is the label the evaluation gave it. For
    both recipes: the small model's column stream, the default's encoder blocks."""
    root = corpus("ravdess")
    clips = [c for c in read_ravdess(root).clips if c.speaker in ("ravdess:01", "ravdess:02", "ravdess:03")]
    train = [c for c in clips if c.speaker != "ravdess:03"][::3]
    test = [c for c in clips if c.speaker == "ravdess:03"][:4]
    config = (tiny_config(epochs=1, window_s=2.0, val_fraction=0.0) if recipe == "small" else
              TrainConfig(epochs=1, batch_size=8, wave_copies=0, threads=1, progress=False))
    result = Trainer(config, tmp_path / "cache").fit(train, "acc6")
    scores, _ = score_clips(result.model, test, progress=False)
    save_model(result.model, tmp_path / "acc6")

    model = load_model(tmp_path / "acc6")
    assert model.speaker_norm is not None  # the default recipe: scored with speaker adaptation
    # One speaker's clips are one session, in the evaluation's order: adaptation carries over.
    assert sorted(s.path for s in scores) == sorted(str(c.path) for c in test)
    pipeline = Pipeline(model, PipelineConfig())
    for score in scores:
        if score.no_voice:
            continue
        pipeline.reset()
        audio = load_audio(score.path, model.frontend.sample_rate)
        probs = file_probabilities(pipeline.feed(audio) + pipeline.flush())
        assert model.labels[int(np.argmax(probs))] == score.predicted
        assert np.allclose(probs, score.probabilities, atol=1e-5)

    voiced = [s for s in scores if not s.no_voice]
    assert voiced, "expected at least one voiced clip among the test clips"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "streamemo", "classify", "--model", str(tmp_path / "acc6"), "--json",
                          "--same-speaker", *[s.path for s in voiced]], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    printed = [json.loads(line)["label"] for line in out.stdout.splitlines() if line.startswith("{")]
    assert printed == [s.predicted for s in voiced]


@pytest.mark.parametrize("name, trained_acc", [("default", 0.7), ("small", 0.8)])
def test_bundled_models_are_what_their_cards_say_and_know_their_training_speakers(name, trained_acc):
    """`models/default` and `models/small` as shipped, loaded by name: the weights match the
    card's hash (load_model checks), the size bound holds, both cards carry the same
    evaluation, and on an actor they were trained on they are right almost always: a guard
    against committing weights that do not belong to the card's frontend or labels (that
    scores near chance, 12.5 %)."""
    model = load_model(name)
    assert model.name == name and model.n_parameters() <= 2_000_000
    evaluation = model.card["evaluation"]
    prose = (ROOT / "models" / ("MODEL_CARD.md" if name == "default" else f"MODEL_CARD-{name}.md")).read_text()
    assert model.card["weights_sha256"][:16] in prose
    assert f"**{100 * evaluation['ua']['mean']:.1f} ± {100 * evaluation['ua']['std']:.1f}**" in prose

    clips = [c for c in read_ravdess(corpus("ravdess")).clips if c.speaker == "ravdess:05"]
    scores, _ = score_clips(model, clips, progress=False)
    assert len(scores) == 60
    assert np.mean([s.predicted == s.label for s in scores]) >= trained_acc
