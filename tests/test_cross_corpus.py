"""Cross-corpus evaluation: leave-one-corpus-out, a test set scored over the classes it has,
the 4-class view, per-corpus results for an existing model, and corpus-balanced sampling.
Real (tiny) training runs on generated clips named like the real corpora."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamemo.train.datasets import Clip
from streamemo.train.evaluate import ClipScore, score_metrics, scored_views
from streamemo.train.batches import corpus_draw_probabilities

sys.path.insert(0, str(Path(__file__).parent))
from test_readers import voice  # noqa: E402
from test_train import STREAMEMO, TINY, _env  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Pitch tells the classes apart in both corpora, so a model trained on one can hear the other.
F0 = {"neutral": 110.0, "happy": 220.0, "sad": 90.0, "angry": 300.0}
RAVDESS_CODE = {"neutral": "01", "happy": "03", "sad": "04", "angry": "05"}
EMODB_LETTER = {"neutral": "N", "happy": "F", "sad": "T", "angry": "W"}


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory) -> tuple[Path, Path]:
    """RAVDESS-named (3 actors) and EmoDB-named (2 speakers) clips of four emotions."""
    root = tmp_path_factory.mktemp("corpora")
    for actor in (1, 2, 3):
        for label, f0 in F0.items():
            for statement in (1, 2):
                path = root / "ravdess" / f"Actor_{actor:02d}" / \
                    f"03-01-{RAVDESS_CODE[label]}-01-0{statement}-01-{actor:02d}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, voice(1.4, 16000, f0 * (1 + 0.04 * actor), seed=actor), 16000)
    for speaker in ("03", "08"):
        for label, f0 in F0.items():
            for text in ("a01", "b02"):
                path = root / "emodb" / f"{speaker}{text}{EMODB_LETTER[label]}a.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, voice(1.3, 16000, f0 * (0.97 if speaker == "03" else 1.05), seed=int(speaker)),
                         16000)
    return root / "ravdess", root / "emodb"


def test_a_test_set_is_scored_over_the_classes_it_has():
    labels = ["neutral", "calm", "happy", "sad"]
    # The model's favourite for clip 1 is calm, which this test set does not have: over the
    # set's classes (neutral, happy, sad) its label is the most probable of those, neutral.
    scores = [ClipScore("1", "neutral", "calm", [0.3, 0.6, 0.1, 0.0], False),
              ClipScore("2", "happy", "happy", [0.1, 0.1, 0.7, 0.1], False),
              ClipScore("3", "sad", "calm", [0.1, 0.5, 0.0, 0.4], False)]
    assert score_metrics(scores, labels)["ua"] == pytest.approx(1 / 3)  # every class the model knows
    views = scored_views(scores, labels)
    assert views["metrics"]["ua"] == 1.0 and views["metrics"]["confusion"][1] == [0, 0, 0, 0]
    assert views["four_class"]["n_clips"] == 3  # neutral, happy, sad are all among the four


def test_corpus_sampling_power_shares_draws_between_corpora():
    clips = [Clip(Path(f"{i}"), "sad", f"big:{i}", "big") for i in range(90)] + \
            [Clip(Path(f"{i}"), "sad", f"small:{i}", "small") for i in range(10)]
    assert corpus_draw_probabilities(clips, 1.0) is None  # every clip once an epoch, as always
    for power, big_share in ((0.0, 0.5), (0.5, 3 / 4)):
        p = corpus_draw_probabilities(clips, power)
        assert p.sum() == pytest.approx(1.0)
        assert p[:90].sum() == pytest.approx(big_share)
        assert np.ptp(p[:90]) == 0 and np.ptp(p[90:]) == 0  # within a corpus, clips alike


def test_leave_one_corpus_out_trains_on_the_others_and_reports_each(two_corpora, tmp_path):
    ravdess, emodb = two_corpora
    out = subprocess.run([*STREAMEMO, "evaluate", "--data", f"ravdess:{ravdess}", "--data", f"emodb:{emodb}",
                          "--leave-one-corpus-out", "--epochs", "1", "--window", "1", "--recipe", "small", "--arch-params",
                          json.dumps(TINY), "--batch-size", "8", "--quiet", "--threads", "1", "--wave-copies", "0",
                          "--corpus-sampling-power", "0.5", "--corpus-classes-only", "--degrade", "reverb", "--report", str(tmp_path / "rep")],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "fold emodb: UA" in out.stdout and "fold ravdess: UA" in out.stdout
    assert "4 classes: UA" in out.stdout and "degraded (reverb): UA" in out.stdout
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    folds = {f["name"]: f for f in report["folds"]}
    assert folds["emodb"]["test_speakers"] == ["emodb:03", "emodb:08"]
    assert folds["emodb"]["n_train"] == 24 and folds["ravdess"]["n_train"] == 16  # the other corpus, whole
    assert folds["ravdess"]["metrics"]["n_clips"] == 24 and folds["emodb"]["four_class"]["n_clips"] == 16
    assert report["meta"]["recipe"]["corpus_sampling_power"] == 0.5 and report["meta"]["recipe"]["corpus_classes_only"]
    summary = report["summary"]
    assert summary["ua"]["per_fold"] == [folds["emodb"]["metrics"]["ua"], folds["ravdess"]["metrics"]["ua"]]
    assert summary["four_class"]["ua"]["mean"] == pytest.approx(
        np.mean([f["four_class"]["ua"] for f in report["folds"]]))
    # The degraded condition scores the same clips again, through rooms never trained in.
    assert folds["emodb"]["degraded"]["condition"] == "reverb"
    assert folds["emodb"]["degraded"]["metrics"]["n_clips"] == 16
    assert sorted(p["path"] for p in folds["emodb"]["predictions"]) == sorted(str(p) for p in emodb.glob("*.wav"))
    assert "degraded" in summary and "degraded_four_class" in summary
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| emodb | all" not in md and "| emodb | 03, 08 |" in md
    assert "4 classes (angry, happy, neutral, sad)" in md and "| degraded: reverb |" in md


def test_an_existing_model_is_reported_per_test_corpus(two_corpora, tmp_path):
    ravdess, emodb = two_corpora
    out = subprocess.run([*STREAMEMO, "evaluate", "--model", str(ROOT / "models" / "small"),
                          "--test", f"emodb:{emodb}", "--test", f"ravdess:{ravdess}", "--quiet",
                          "--report", str(tmp_path / "rep")], env=_env(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [(f["name"], f["metrics"]["n_clips"]) for f in report["folds"]] == [("emodb", 16), ("ravdess", 24)]
    assert report["summary"]["n_folds"] == 2


def test_folds_fine_tune_a_model_only_if_it_never_heard_the_test_corpus(two_corpora, tmp_path):
    ravdess, emodb = two_corpora
    common = ["--recipe", "small", "--window", "1", "--batch-size", "8", "--quiet", "--threads", "1", "--wave-copies", "0",
              "--epochs", "1"]
    # The small shipped model heard RAVDESS and EmoDB: starting the folds from it would test on
    # speakers it trained on, so the run stops before any fold trains.
    out = subprocess.run([*STREAMEMO, "evaluate", "--data", f"ravdess:{ravdess}", "--data", f"emodb:{emodb}",
                          "--leave-one-corpus-out", "--init", str(ROOT / "models" / "small"), *common],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "was trained on emodb, ravdess" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    # A first stage keeps its fold models; fold 2 (RAVDESS held out: folds go by corpus name)
    # trained on EmoDB alone, so it may start the second stage's fold 2, and fold 1 may not.
    stage1 = tmp_path / "stage1"
    out = subprocess.run([*STREAMEMO, "evaluate", "--data", f"ravdess:{ravdess}", "--data", f"emodb:{emodb}",
                          "--leave-one-corpus-out", "--save-models", str(stage1), "--recipe", "small", "--arch-params", json.dumps(TINY),
                          *common, "--report", str(tmp_path / "rep1")], env=_env(tmp_path), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    card = json.loads((stage1 / "fold2.json").read_text())["training"]
    assert card["data"] == ["emodb"] and card["speaker_ids"] == ["emodb:03", "emodb:08"]
    second = [*STREAMEMO, "evaluate", "--data", f"ravdess:{ravdess}", "--data", f"emodb:{emodb}",
              "--leave-one-corpus-out", "--fold", "2", *common, "--report", str(tmp_path / "rep2")]
    out = subprocess.run([*second, "--init", str(stage1 / "fold1")], env=_env(tmp_path), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "was trained on 3 of the test speakers (ravdess:01" in out.stderr, out.stderr
    out = subprocess.run([*second, "--init", str(stage1 / "fold{fold}")], env=_env(tmp_path), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (fold,) = json.loads((tmp_path / "rep2" / "report.json").read_text())["folds"]
    assert fold["name"] == "ravdess" and fold["init"] == str(stage1 / "fold2") and fold["n_train"] == 16


@pytest.mark.parametrize("args, says", [
    (["--folds", "ravdess", "--leave-one-corpus-out"], "run them separately"),
    (["--leave-one-corpus-out", "--degrade", "reverb+fog"], "unknown degradation 'fog'"),
    (["--leave-one-corpus-out", "--augment", '{"background": true, "noise_dir": "/nonexistent"}'], "/nonexistent"),
])
def test_evaluation_mistakes_are_one_line_before_any_work(args, says, tmp_path):
    out = subprocess.run([*STREAMEMO, "evaluate", "--data", f"ravdess:{tmp_path}", *args], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and says in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_the_card_gives_the_corpora_the_model_never_heard(two_corpora, tmp_path):
    ravdess, emodb = two_corpora
    model = tmp_path / "m"
    out = subprocess.run([*STREAMEMO, "train", "--data", f"emodb:{emodb}", "-o", str(model), "--recipe", "small", "--arch-params",
                          json.dumps(TINY), "--window", "1", "--batch-size", "8", "--quiet", "--threads", "1",
                          "--wave-copies", "0", "--epochs", "1"], env=_env(tmp_path), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr

    def evaluate(test: str, report: str):
        out = subprocess.run([*STREAMEMO, "evaluate", "--model", str(model), "--test", test, "--degrade", "reverb",
                              "--quiet", "--report", str(tmp_path / report)], env=_env(tmp_path),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return tmp_path / report / "report.json"

    unheard, heard = evaluate(f"ravdess:{ravdess}", "cross"), evaluate(f"emodb:{emodb}", "same")
    card = [*STREAMEMO, "card", str(model), "--evaluation", str(unheard), "--card-md", str(tmp_path / "CARD.md")]
    out = subprocess.run([*card, "--cross-corpus", str(heard)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "corpora it was not trained on" in out.stderr and "trained on emodb" in out.stderr
    out = subprocess.run([*card, "--cross-corpus", str(unheard)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cross = json.loads((tmp_path / "m.json").read_text())["cross_corpus"]
    assert set(cross["corpora"]) == {"ravdess"} and cross["corpora"]["ravdess"]["clips"] == 24
    assert "degraded" in cross["corpora"]["ravdess"] and cross["mean"]["ua"] == cross["corpora"]["ravdess"]["ua"]
    md = (tmp_path / "CARD.md").read_text()
    assert "## Across corpora: voices, languages and rooms it never heard" in md and "| ravdess |" in md
    # Given alone, the cross-corpus part replaces its old self in the card and leaves the rest,
    # but for the header's weights hash, made current (it went stale when a model was re-saved).
    sha = json.loads((tmp_path / "m.json").read_text())["weights_sha256"][:16]
    (tmp_path / "CARD.md").write_text(md.replace(f"`{sha}…`", f"`{'0' * 16}…` (re-saved since)"))
    out = subprocess.run([*STREAMEMO, "card", str(model), "--cross-corpus", str(unheard), "--card-md",
                          str(tmp_path / "CARD.md")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "CARD.md").read_text() == md.replace(f"`{sha}…`", f"`{sha}…` (re-saved since)")
    assert json.loads((tmp_path / "m.json").read_text())["evaluation"]["ua"]  # kept


def test_the_card_says_what_each_corpus_license_means_for_the_weights():
    from streamemo.train.licenses import LICENSES
    from streamemo.train.report import model_card_markdown

    corpora = ["ravdess", "emodb", "nemo", "turev", "korean"]
    card = {"name": "m", "arch": {"name": "cnn_lstm", "params": {}}, "n_parameters": 1000, "window_s": 2.0,
            "frontend": {"kind": "logmel", "n_mels": 64, "sample_rate": 16000, "hop_length": 320},
            "labels": ["neutral", "sad"], "weights_sha256": "0" * 64,
            "training": {"data": [f"{c}:x" for c in corpora], "licenses": {c: LICENSES[c] for c in corpora}}}
    md = model_card_markdown(card, None)
    assert "Because ravdess and nemo are CC BY-NC-SA 4.0" in md
    assert "turev is licensed no-derivatives" in md and "no commercial use" in md
    assert "every training corpus (ravdess, emodb, nemo, turev, korean)" in md
    alone = model_card_markdown({**card, "training": {"licenses": {"emodb": LICENSES["emodb"]}}}, None)
    assert "CC BY-NC-SA" not in alone and "no commercial use" not in alone  # EmoDB's copies are CC0


def test_corpus_classes_only_scores_each_clip_over_its_own_corpus_classes():
    from streamemo.train.batches import Batches
    from streamemo.train.recipe import TrainConfig

    clips = [Clip(Path("a"), "sad", "x:1", "x"), Clip(Path("b"), "angry", "x:1", "x"),
             Clip(Path("c"), "sad", "y:1", "y"), Clip(Path("d"), "calm", "y:1", "y")]
    y = np.array([0, 1, 0, 2])  # sad, angry, calm
    feats = [np.zeros((4, 10), np.float32)] * 4
    batches = Batches(TrainConfig(corpus_classes_only=True, wave_copies=0, spec_augment=False), clips, feats,
                      [[]] * 4, y, 3, 10, None)
    assert batches.allowed.tolist() == [[True, True, False]] * 2 + [[True, False, True]] * 2
    _, target, allowed = batches.make(np.array([3, 0]), np.zeros(4), np.zeros(4, int), np.random.default_rng(0),
                                      None)
    assert target.tolist() == [2, 0] and allowed.tolist() == [[True, False, True], [True, True, False]]
    assert Batches(TrainConfig(wave_copies=0), clips, feats, [[]] * 4, y, 3, 10, None).allowed is None
    # Fine-tuning may give the model classes no training clip has: the masks are the model's width.
    wider = Batches(TrainConfig(corpus_classes_only=True, wave_copies=0), clips, feats, [[]] * 4, y, 5, 10, None)
    assert wider.allowed.shape == (4, 5) and not wider.allowed[:, 3:].any()
