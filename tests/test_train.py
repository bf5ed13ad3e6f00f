"""The trainer on a tiny generated corpus: a real (short) training run, the feature cache,
seeded determinism, augmentation, the report folder, torchrun/DDP and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from streamemo.model import load_model
from streamemo.train.augment import AugmentConfig, WaveAugmenter, spec_augment
from streamemo.train.readers import read_ravdess
from streamemo.train.evaluate import run_folds, summarise
from streamemo.train.report import PLOTS, write_report
from streamemo.train.recipe import TrainConfig
from streamemo.train.sessions import split_validation
from streamemo.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from test_readers import voice  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STREAMEMO = [sys.executable, "-m", "streamemo"]
# A network small enough that two epochs on a few clips take seconds.
TINY = {"channels": [4, 8], "pools": [[2, 2], [2, 2]], "proj": 16, "lstm_hidden": 8}
F0 = {"01": 110.0, "03": 220.0, "04": 90.0, "05": 300.0}  # neutral, happy, sad, angry: pitch tells them apart


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    """RAVDESS-named clips: 4 actors x 4 emotions x 2 statements, 1.2-2 s, 16 kHz."""
    root = tmp_path_factory.mktemp("ravdess")
    for actor in range(1, 5):
        for emotion, f0 in F0.items():
            for statement in (1, 2):
                x = voice(1.2 + 0.4 * statement, 16000, f0 * (1 + 0.05 * actor), seed=actor)
                path = root / f"Actor_{actor:02d}" / f"03-01-{emotion}-01-0{statement}-01-{actor:02d}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, x, 16000)
    return root


def tiny_config(**changes) -> TrainConfig:
    base = TrainConfig.small(arch_params=TINY, window_s=1.0, epochs=2, batch_size=8, lr=3e-3, progress=False,
                       val_fraction=0.25, device="cpu", threads=1, wave_copies=0)
    return replace(base, **changes)


def test_training_smoke_run_learns_and_saves(tiny_corpus, tmp_path):
    clips = read_ravdess(tiny_corpus).clips
    started = time.perf_counter()
    result = Trainer(tiny_config(epochs=2), tmp_path / "cache").fit(clips, name="smoke")
    assert time.perf_counter() - started < 60
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert all(np.isfinite(h["loss"]) and 0 <= h["val_ua"] <= 1 for h in result.history)
    # validation holds out whole speakers, carved from the training speakers only
    assert {c.speaker for c in result.val_clips}.isdisjoint({c.speaker for c in result.train_clips})
    assert len({c.speaker for c in result.val_clips}) == 1
    assert result.labels == ["neutral", "happy", "sad", "angry"]
    # normalisation statistics were fitted on the training features, not left at 0/1
    norm = result.model.network.norm
    assert float(norm.mean.abs().mean()) > 0.5 and not torch.allclose(norm.std, torch.ones_like(norm.std))
    from streamemo.model import save_model

    save_model(result.model, tmp_path / "m", extra_card={"training": {"data": ["fixture"]}})
    loaded = load_model(tmp_path / "m")
    assert loaded.labels == result.labels and loaded.card["training"]["data"] == ["fixture"]
    x = torch.randn(2, 64, 101)
    assert torch.allclose(loaded.network(x), result.model.network.eval()(x), atol=1e-5)


@pytest.mark.parametrize("arch, params", [("cnn2d", {"channels": [4, 8]}), ("conv1d", {"channels": [8, 8]})])
def test_other_architectures_train_on_augmented_copies(tiny_corpus, tmp_path, arch, params):
    """cnn2d (log-mel images) and conv1d (MFCC sequences) through the whole trainer, with one
    augmented waveform copy per clip: made once, cached, and drawn in training."""
    clips = read_ravdess(tiny_corpus).clips
    kind = "mfcc" if arch == "conv1d" else "logmel"
    cfg = tiny_config(arch=arch, arch_params=params, epochs=1, wave_copies=1, speaker_norm=kind == "logmel",
                      frontend=replace(TrainConfig.small().frontend, kind=kind))
    trainer = Trainer(cfg, tmp_path / "cache")
    result = trainer.fit(clips)
    n_train = len(result.train_clips)
    assert trainer.store.computed == len(clips) + n_train  # every clip's features, then one copy each
    assert result.model.arch == arch and np.isfinite(result.history[0]["loss"])
    again = Trainer(cfg, tmp_path / "cache")
    again.fit(clips)
    assert again.store.computed == 0  # the copies came from the cache too
    from streamemo.stream.pipeline import Scorer

    window = 0.01 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)  # 1 s, the tiny window
    probs = Scorer(result.model)(window)
    assert probs.shape == (1, 4) and np.isclose(probs.sum(), 1, atol=1e-5)


def test_ensemble_is_its_seeds_trained_apart_and_averages_their_probabilities(tiny_corpus, tmp_path):
    clips = read_ravdess(tiny_corpus).clips
    cfg = tiny_config(epochs=1, val_fraction=0.0, seed=3)
    ensemble = Trainer(replace(cfg, ensemble=2), tmp_path / "cache").fit(clips, name="ens")
    singles = [Trainer(replace(cfg, seed=s), tmp_path / "cache").fit(clips).model for s in (3, 4)]
    assert ensemble.model.arch == "ensemble" and ensemble.model.arch_params["members"] == 2
    assert ensemble.model.n_parameters() == 2 * singles[0].n_parameters()
    from streamemo.model import save_model
    from streamemo.train.report import model_card_markdown

    save_model(ensemble.model, tmp_path / "ens", extra_card={"training": {"recipe": replace(cfg, ensemble=2).to_dict()}})
    card_md = model_card_markdown(ensemble.model.card, None)  # the prose card says what it is
    assert "ensemble of 2 cnn_lstm networks averaged" in card_md and "seeds 3, 4 (one per member)" in card_md
    x = torch.randn(3, 64, 51)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m.network.eval()(x), -1) for m in singles]).mean(0)
        got = torch.softmax(ensemble.model.network(x), -1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # What benchmarks/ensemble_report.py relies on: scored as the evaluation scores clips
    # (voice gate, speaker sessions with adaptation), the ensemble's clip probabilities are
    # its members' mean.
    from streamemo.train.evaluate import score_clips

    together, _ = score_clips(ensemble.model, clips, progress=False)
    apart = [score_clips(m, clips, progress=False)[0] for m in singles]
    assert len(together) == len(clips) and ensemble.model.speaker_norm is not None
    for clip, *members in zip(together, *apart):
        assert all(m.path == clip.path for m in members)
        np.testing.assert_allclose(clip.probabilities, np.mean([m.probabilities for m in members], axis=0),
                                   atol=1e-5)
    from streamemo.model import save_model
    from streamemo.stream.inference import inference_network

    save_model(ensemble.model, tmp_path / "ens")
    loaded = load_model(tmp_path / "ens")
    with torch.inference_mode():
        torch.testing.assert_close(torch.softmax(inference_network(loaded.network)(x), -1), expected,
                                   atol=1e-5, rtol=1e-4)
    # fine-tuning an ensemble: member by member, against the reference speaker it was trained on
    tuned = Trainer(replace(cfg, ensemble=2), tmp_path / "cache").fit(clips[::2], init=loaded).model
    assert tuned.arch == "ensemble" and np.array_equal(tuned.speaker_norm.mean, loaded.speaker_norm.mean)


def test_feature_cache_second_run_computes_nothing(tiny_corpus, tmp_path):
    clips = read_ravdess(tiny_corpus).clips[:6]
    cfg = tiny_config(epochs=1)
    first = Trainer(cfg, tmp_path / "cache")
    first.store.get_many(clips, progress=False)
    assert first.store.computed == 6 and first.store.hits == 0
    second = Trainer(cfg, tmp_path / "cache")
    _, feats, _ = second.store.get_many(clips, progress=False)
    assert second.store.computed == 0 and second.store.hits == 6
    # a different frontend parameter is a different key
    third = Trainer(replace(cfg, frontend=replace(cfg.frontend, n_mels=40)), tmp_path / "cache")
    _, feats40, _ = third.store.get_many(clips[:1], progress=False)
    assert third.store.computed == 1 and feats40[0].shape[0] == 40 and feats[0].shape[0] == 64


def test_voice_statistics_are_cached_and_equal_the_daemons_measure(tiny_corpus, tmp_path):
    from streamemo.config import PipelineConfig
    from streamemo.train.sessions import measure_voice

    clip = read_ravdess(tiny_corpus).clips[0]
    cfg, gate = tiny_config(), PipelineConfig()
    first = Trainer(cfg, tmp_path / "cache").store.voice(clip, 16000, 4000, gate)
    entries = sorted((tmp_path / "cache").rglob("*.npy"))
    again = Trainer(cfg, tmp_path / "cache").store.voice(clip, 16000, 4000, gate)
    assert sorted((tmp_path / "cache").rglob("*.npy")) == entries and len(entries) == 1
    from streamemo.audio.files import load_audio

    store = Trainer(cfg, tmp_path / "other").store
    direct = measure_voice(load_audio(clip.path, 16000), store.frontend, 16000, 4000, gate)
    assert first.frames > 0 and first.frames == again.frames == direct.frames
    np.testing.assert_allclose(again.sum_sq, direct.sum_sq, rtol=1e-12)


def test_same_seed_same_weights_other_seed_other_weights(tiny_corpus, tmp_path):
    clips = read_ravdess(tiny_corpus).clips
    cfg = tiny_config(epochs=1, mixup=0.4)

    def weights(seed):
        r = Trainer(replace(cfg, seed=seed), tmp_path / "cache").fit(clips)
        return torch.cat([p.flatten() for p in r.model.network.state_dict().values() if p.is_floating_point()])

    assert torch.equal(weights(3), weights(3))
    assert not torch.equal(weights(3), weights(4))


def test_validation_driven_recipe_sgd_plateau_early_stop_best_epoch(tiny_corpus, tmp_path):
    """The options that watch held-out speakers, together: SGD; the rate halved after each
    epoch that does not beat the best validation UA so far; a stop after two such epochs;
    and the best epoch's weights returned, not the last (nor an average)."""
    clips = read_ravdess(tiny_corpus).clips
    cfg = tiny_config(epochs=8, optimizer="sgd", lr=0.05, schedule="plateau", plateau_patience=0, early_stop=2,
                      select="best", val_fraction=0.25, mixup=0.0, speaker_norm=False)
    trainer = Trainer(cfg, tmp_path / "cache")
    result = trainer.fit(clips)
    history = result.history
    ua = [e["val_ua"] for e in history]
    gained = [k == 0 or ua[k] > max(ua[:k]) for k in range(len(ua))]
    for k in range(len(history) - 1):
        assert history[k + 1]["lr"] == pytest.approx(history[k]["lr"] * (1.0 if gained[k] else 0.5))
    # Early stopping ends the run at the first two epochs in a row without a gain.
    both_stale = [k for k in range(1, len(gained)) if not gained[k - 1] and not gained[k]]
    assert both_stale in ([], [len(gained) - 1])
    if len(history) < cfg.epochs:
        assert both_stale == [len(gained) - 1]
    assert result.chosen.startswith("best validation epoch")
    _, val_feats, _ = trainer.store.get_many(result.val_clips, "val", progress=False)
    y_val = np.array([result.labels.index(c.label) for c in result.val_clips])
    kept = trainer.validate(result.model.network, val_feats, y_val, len(result.labels))
    assert kept["val_ua"] == pytest.approx(max(ua))

    # Asked for without validation speakers, they are refused before any work.
    out = subprocess.run([*STREAMEMO, "train", "--data", f"ravdess:{tiny_corpus}", "-o", str(tmp_path / "m"),
                          "--select", "best"], env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "add --val-fraction" in out.stderr and not list(tmp_path.glob("m.*"))


def test_architectures_take_their_notebooks_features():
    from streamemo.cli import build_parser
    from streamemo.train.options import config_from_args

    def config(*flags):
        return config_from_args(build_parser("train").parse_args(["train", "--data", "x:y", "-o", "m", *flags]))

    assert config().frontend.kind == "whisper" and config().arch == "encoder_head"
    assert config("--arch", "cnn2d").frontend.kind == "logmel" and config("--recipe", "small").frontend.kind == "logmel"
    assert config("--recipe", "small", "--arch", "encoder_head").frontend == config().frontend
    mfcc = config("--arch", "conv1d")
    assert mfcc.frontend.kind == "mfcc" and not mfcc.speaker_norm  # adaptation needs log-mel energies
    assert config("--arch", "conv1d", "--features", "logmel").frontend.kind == "logmel"


def test_split_validation_holds_out_speakers_per_corpus(tiny_corpus):
    clips = read_ravdess(tiny_corpus).clips
    train, val = split_validation(clips, 0.5, seed=1)
    assert len({c.speaker for c in val}) == 2 and len(train) + len(val) == len(clips)
    assert split_validation(clips, 0.5, seed=1) == (train, val)


def test_waveform_augmentation_is_seeded_and_each_transform_switchable():
    x = voice(1.0)
    every = AugmentConfig(p=1.0, dynamic_range=True, speed=True)
    aug = WaveAugmenter(every)
    a, b, c = aug(x, 16000, seed=5), aug(x, 16000, seed=5), aug(x, 16000, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.float32 and np.abs(a).max() <= 1.0
    off = AugmentConfig(noise=False, shift=False, stretch=False, pitch=False, gain=False)
    assert np.array_equal(WaveAugmenter(off)(x, 16000, seed=1), x)
    only_gain = AugmentConfig(p=1.0, noise=False, shift=False, stretch=False, pitch=False, gain_db=(6.0, 6.0))
    assert np.allclose(WaveAugmenter(only_gain)(x, 16000, seed=1), np.clip(x * 10 ** (6 / 20), -1, 1), atol=1e-5)
    assert every.key() != AugmentConfig().key()
    # The copies' seed is part of the cache key (another seed, another draw of copies);
    # seed 0 keeps the key it had before the field existed.
    assert AugmentConfig(seed=1).key() != AugmentConfig().key() and '"seed"' not in AugmentConfig().key()
    # So do the rooms/background/channel switches (tests/test_rooms.py): off by default, and
    # then absent from the key; on, they change it.
    assert not any(f'"{k}' in AugmentConfig().key() for k in ("room", "background", "channel"))
    for switch in ("room", "background", "channel"):
        assert AugmentConfig(**{switch: True}).key() != AugmentConfig().key()


def test_spec_augment_masks_bands_and_frames():
    x = torch.arange(2 * 64 * 100, dtype=torch.float32).reshape(2, 64, 100)
    cfg = AugmentConfig(freq_masks=1, freq_mask_width=10, time_masks=1, time_mask_width=10)
    y = spec_augment(x.clone(), cfg, torch.Generator().manual_seed(0))
    z = spec_augment(x.clone(), cfg, torch.Generator().manual_seed(0))
    assert torch.equal(y, z) and not torch.equal(y, x)
    assert (y != x).float().mean() < 0.35  # masks, not a wipe


def test_report_folder_from_a_tiny_fold_run(tiny_corpus, tmp_path, capsys):
    clips = read_ravdess(tiny_corpus).clips
    folds = [["ravdess:01", "ravdess:02"], ["ravdess:03", "ravdess:04"]]
    results = run_folds(tiny_config(epochs=1, val_fraction=0.5), clips, folds, cache_dir=tmp_path / "cache")
    summary = summarise(results)
    assert summary["n_folds"] == 2 and len(summary["ua"]["per_fold"]) == 2
    assert np.sum(summary["confusion"]) == len(clips)  # every clip tested exactly once
    from collections import Counter

    folder = write_report(tmp_path / "report", "tiny", summary, results,
                          {"train": Counter(c.label for c in clips)}, {"command": "streamemo evaluate …"})
    data = json.loads((folder / "report.json").read_text())
    assert data["summary"]["ua"]["mean"] == pytest.approx(summary["ua"]["mean"])
    md = (folder / "report.md").read_text()
    assert "| **mean ± std** |" in md and "Confusion matrix" in md and "streamemo evaluate" in md
    assert "## Per class (all folds pooled; ± the spread over folds)" in md
    for plot in PLOTS:
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The human-readable model card carries the fold table and the licenses.
    from streamemo.features import FrontendSpec
    from streamemo.model import Model, save_model
    from streamemo.train.report import model_card_markdown

    labels = data["summary"]["labels"]
    model = Model.create("tiny", labels, 1.0, FrontendSpec(), "cnn_lstm", TINY)
    save_model(model, tmp_path / "tiny", extra_card={"training": {"data": ["ravdess:x"],
                                                                  "licenses": {"ravdess": "CC BY-NC-SA 4.0"}}})
    card_md = model_card_markdown(model.card, data)
    assert "| **mean ± std** |" in card_md and "CC BY-NC-SA 4.0" in card_md and "Intended use" in card_md
    assert "64-band log-mel" in card_md and "non-commercial use only" in card_md
    # A model of a user's own MFCC data: the card says so and claims no RAVDESS terms.
    own = Model.create("own", labels, 1.0, FrontendSpec(kind="mfcc"), "conv1d", {"channels": [8, 8]})
    save_model(own, tmp_path / "own", extra_card={"training": {"data": ["csv:mine.csv"], "licenses": {"csv": "yours"}}})
    own_md = model_card_markdown(own.card, None)
    assert "40-coefficient MFCC" in own_md and "BY-NC-SA" not in own_md and "non-commercial" not in own_md

    # `streamemo card` puts a report's figures into a model trained before it; the weights
    # file is untouched, so the card's hash still holds.
    from streamemo.cli import main as cli

    before = (tmp_path / "tiny.safetensors").read_bytes()
    assert cli(["card", str(tmp_path / "tiny"), "--evaluation", str(folder / "report.json"),
                "--card-md", str(tmp_path / "CARD.md")]) == 0
    card = load_model(tmp_path / "tiny").card  # loads: the weights still match the card's hash
    assert (tmp_path / "tiny.safetensors").read_bytes() == before
    assert card["evaluation"]["ua"]["mean"] == pytest.approx(summary["ua"]["mean"])
    assert len(card["evaluation"]["folds"]) == 2 and "| **mean ± std** |" in (tmp_path / "CARD.md").read_text()

    # A report of other labels is refused with one line, and the model is left as it was.
    save_model(Model.create("two", labels[:2], 1.0, FrontendSpec(), "cnn_lstm", TINY), tmp_path / "two")
    card_before = (tmp_path / "two.json").read_text()
    assert cli(["card", str(tmp_path / "two"), "--evaluation", str(folder / "report.json")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "attach a report of this model's recipe" in error[0]
    assert (tmp_path / "two.json").read_text() == card_before


def _env(tmp_path) -> dict:
    env = dict(os.environ, STREAMEMO_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_cli_train_then_evaluate_and_fine_tune(tiny_corpus, tmp_path):
    env = _env(tmp_path)
    common = ["--window", "1", "--recipe", "small", "--arch-params", json.dumps(TINY), "--batch-size", "8", "--quiet", "--threads", "1",
              "--wave-copies", "0"]
    out = subprocess.run([*STREAMEMO, "train", "--data", f"ravdess:{tiny_corpus}", "-o", str(tmp_path / "m"),
                          "--epochs", "1", *common], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout and "0 skipped" in out.stdout
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["training"]["licenses"]["ravdess"].startswith("CC BY-NC-SA")
    assert card["training"]["recipe"]["epochs"] == 1 and "git_commit" in card
    assert card["command"].startswith("streamemo train --data ravdess:") and "--wave-copies 0" in card["command"]
    out = subprocess.run([*STREAMEMO, "evaluate", "--model", str(tmp_path / "m"), "--test",
                          f"ravdess:{tiny_corpus}", "--report", str(tmp_path / "rep"), "--quiet"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "UA" in out.stdout and (tmp_path / "rep" / "confusion_matrix.png").exists()

    # Cross-corpus: train on the RAVDESS-named corpus, test on a folder-per-class corpus of
    # other voices, in one command.
    other = tmp_path / "other"
    for emotion, f0 in {"neutral": 120.0, "happy": 240.0, "sad": 95.0, "angry": 320.0}.items():
        (other / emotion).mkdir(parents=True)
        for k in range(2):
            sf.write(other / emotion / f"take{k}.wav", voice(1.5, 16000, f0 * (1 + 0.03 * k), seed=10 + k), 16000)
    out = subprocess.run([*STREAMEMO, "evaluate", "--data", f"ravdess:{tiny_corpus}", "--test", f"folder:{other}",
                          "--epochs", "1", *common, "--report", str(tmp_path / "cross")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "cross" / "report.json").read_text())
    assert report["title"] == f"train ravdess:{tiny_corpus}; test folder:{other}"
    assert len(report["folds"][0]["predictions"]) == 8 and report["meta"]["skipped"] == 0

    # Transfer to a corpus with a class the model lacks: the output layer grows by a row,
    # and every weight it had (the old classes' rows included) is where fine-tuning starts.
    (other / "boredom").mkdir()
    for k in range(2):
        sf.write(other / "boredom" / f"take{k}.wav", voice(1.5, 16000, 100.0, seed=20 + k), 16000)
    out = subprocess.run([*STREAMEMO, "train", "--data", f"folder:{other}", "-o", str(tmp_path / "bored"),
                          "--epochs", "1", "--init", str(tmp_path / "m"), *common],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    base = load_model(tmp_path / "m")
    assert load_model(tmp_path / "bored").labels == base.labels + ["boredom"]
    start = Trainer(tiny_config())._initial_model("t", base.labels + ["boredom"], base).network.state_dict()
    for key, value in base.network.state_dict().items():
        assert torch.equal(start[key] if value.dim() == 0 else start[key][: value.shape[0]], value)
    assert start["head.1.weight"].shape[0] == len(base.labels) + 1
    out = subprocess.run([*STREAMEMO, "train", "--data", f"ravdess:{tiny_corpus}", "-o", str(tmp_path / "ft"),
                          "--epochs", "1", "--init", str(tmp_path / "m"), *common],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "ft.json").read_text())["training"]["init"] == str(tmp_path / "m")
    bad = subprocess.run([*STREAMEMO, "train", "--data", "nope:x", "-o", str(tmp_path / "x")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_torchrun_two_cpu_processes(tiny_corpus, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    env = _env(tmp_path)
    out = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "streamemo", "train",
                          "--data", f"ravdess:{tiny_corpus}", "-o", str(tmp_path / "ddp"), "--epochs", "2",
                          "--window", "1", "--recipe", "small", "--arch-params", json.dumps(TINY), "--batch-size", "4", "--quiet",
                          "--threads", "1", "--device", "cpu", "--wave-copies", "0"],
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("wrote") == 1  # rank 0 alone writes the model
    model = load_model(tmp_path / "ddp")
    assert model.card["training"]["final_epoch"]["epoch"] == 2


def test_cli_evaluate_folds_writes_the_report(tiny_corpus, tmp_path):
    import shutil

    corpus = shutil.copytree(tiny_corpus, tmp_path / "corpus")
    # A corrupt clip of actor 01: fold 1 tests on it, fold 2 trains on it. Both skip it, with
    # a warning naming it, and the summary counts one file, not two skips.
    corrupt = corpus / "Actor_01" / "03-01-05-01-01-02-01.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"ravdess": {"unit": "actor", "folds": [[1, 2], [3, 4]]}}))
    out = subprocess.run([*STREAMEMO, "evaluate", "--data", f"ravdess:{corpus}", "--folds", "ravdess",
                          "--folds-file", str(folds), "--fold", "1,2", "--epochs", "1", "--window", "1",
                          "--recipe", "small", "--arch-params", json.dumps(TINY), "--val-fraction", "0.5", "--quiet", "--threads", "1",
                          "--wave-copies", "0",
                          "--report", str(tmp_path / "rep")], env=_env(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fold 1: UA" in out.stdout and "fold 2: UA" in out.stdout
    assert "; 1 file(s) skipped" in out.stdout
    assert str(corrupt) in out.stderr  # the warning names the file
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [len(f["skipped"]) for f in report["folds"]] == [1, 1] and report["meta"]["skipped"] == 1
    assert [f["test_speakers"] for f in report["folds"]] == [["ravdess:01", "ravdess:02"], ["ravdess:03", "ravdess:04"]]
    assert report["meta"]["recipe"]["epochs"] == 1
    assert [len(f["predictions"]) for f in report["folds"]] == [16, 16]  # fold 1: 17 clips, one unreadable


def test_spectrogram_command_draws_the_log_mel_image(tiny_corpus, tmp_path, capsys):
    from streamemo.cli import main

    clip = next(tiny_corpus.rglob("*.wav"))
    for model, bands in (("small", 64), ("default", 80)):  # bundled models by name; default's is Whisper's log-mel
        assert main(["spectrogram", str(clip), "-o", str(tmp_path / "s.png"), "--model", model]) == 0
        assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({bands} x " in capsys.readouterr().out
    assert main(["spectrogram", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "x.png")]) == 1


def test_bad_evaluation_report_stops_train_before_training(tiny_corpus, tmp_path):
    bad = tmp_path / "report.json"
    bad.write_text("{}")
    out = subprocess.run([*STREAMEMO, "train", "--data", f"ravdess:{tiny_corpus}", "-o", str(tmp_path / "m"),
                          "--evaluation", str(bad), "--epochs", "1", "--quiet"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith("not an evaluate report.json ('summary')")
    assert "epoch" not in out.stderr and not list(tmp_path.glob("m.*"))  # nothing trained, nothing written

    bad.write_text(json.dumps({"summary": {"labels": ["neutral", "happy"]}}))  # another recipe's classes
    out = subprocess.run([*STREAMEMO, "train", "--data", f"ravdess:{tiny_corpus}", "-o", str(tmp_path / "m"),
                          "--evaluation", str(bad), "--epochs", "1", "--quiet"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith("attach a report of this model's recipe")
    assert "epoch" not in out.stderr and not list(tmp_path.glob("m.*"))


def _one_line(out, code: int, *needles: str) -> None:
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    for needle in needles:
        assert needle in out.stderr, out.stderr


def test_training_and_card_mistakes_are_one_line_and_lose_nothing(tiny_corpus, tmp_path):
    """Issue 31, cause 6: a model with NaN weights as --init, fold numbers out of range,
    reports that are binary or nested 100,000 deep, -o over an existing model, a corpus
    linked into place, spectrogram -o at a folder."""
    env = _env(tmp_path)
    tiny = ["--recipe", "small", "--arch-params", json.dumps(TINY), "--window", "1", "--batch-size", "8", "--quiet",
            "--threads", "1", "--wave-copies", "0", "--epochs", "1"]

    def run(*args):
        return subprocess.run([*STREAMEMO, *args], env=env, capture_output=True, text=True, timeout=300)

    # A corpus whose actors are symlinked folders is read through the links.
    linked = tmp_path / "linked"
    linked.mkdir()
    for actor in tiny_corpus.iterdir():
        (linked / actor.name).symlink_to(actor, target_is_directory=True)
    assert len(read_ravdess(linked).clips) == len(read_ravdess(tiny_corpus).clips) == 32
    out = run("train", "--data", f"ravdess:{linked}", "-o", str(tmp_path / "m"), *tiny)
    assert out.returncode == 0, out.stderr
    weights = (tmp_path / "m.safetensors").read_bytes()

    # -o over a model is refused unless --force, before any training.
    _one_line(run("train", "--data", f"ravdess:{tiny_corpus}", "-o", str(tmp_path / "m"), *tiny), 2,
              "a model is already there", "--force")
    assert (tmp_path / "m.safetensors").read_bytes() == weights

    # Weights gone to NaN: fine-tuning from them stops at the first epoch and writes nothing.
    from safetensors.torch import load_file, save_file

    state = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v
             for k, v in load_file(tmp_path / "m.safetensors").items()}
    save_file(state, tmp_path / "nan.safetensors")
    card = json.loads((tmp_path / "m.json").read_text())
    card.pop("weights_sha256")
    (tmp_path / "nan.json").write_text(json.dumps(card))
    _one_line(run("train", "--data", f"ravdess:{tiny_corpus}", "-o", str(tmp_path / "ft"), "--init",
                  str(tmp_path / "nan"), *tiny), 1, "training diverged", "--init model gives non-finite outputs")
    assert not list(tmp_path.glob("ft.*"))
    out = run("train", "--data", f"ravdess:{tiny_corpus}", "-o", str(tmp_path / "m"), "--force", *tiny)
    assert out.returncode == 0, out.stderr

    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"ravdess": {"unit": "actor", "folds": [[1, 2], [3, 4]]}}))
    evaluate = ["evaluate", "--data", f"ravdess:{tiny_corpus}", "--folds", "ravdess", "--folds-file", str(folds)]
    _one_line(run(*evaluate, "--fold", "0,-1", *tiny), 2, "give fold numbers from 1")
    _one_line(run(*evaluate, "--fold", "2,3", *tiny), 2, "--fold 3: there are 2 folds, numbered 1 to 2")

    garbage, deep = tmp_path / "garbage.json", tmp_path / "deep.json"
    garbage.write_bytes(bytes(range(256)) * 64)
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for report, needle in ((garbage, "not an evaluate report.json"), (deep, "nested too deep")):
        _one_line(run("card", str(tmp_path / "m"), "--cross-corpus", str(report)), 2, str(report), needle)

    from streamemo.cli import main

    clip = next(tiny_corpus.rglob("*.wav"))
    assert main(["spectrogram", str(clip), "-o", str(tmp_path)]) == 2
    assert not (tmp_path.parent / f"{tmp_path.name}.png").exists()
    assert main(["spectrogram", str(clip), "-o", str(tmp_path / "image"), "--model", "small"]) == 0
    assert (tmp_path / "image").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
