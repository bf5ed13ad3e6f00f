"""Speaker adaptation: the running per-band statistics, and the pipeline scoring with them."""

import json
import subprocess
from dataclasses import replace

import numpy as np
import pytest
from conftest import STREAMEMO

from streamemo import StreamemoError
from streamemo.config import Config, PipelineConfig
from streamemo.features import Frontend
from streamemo.model import load_model, save_model
from streamemo.protocol import decode
from streamemo.features import BandStats
from streamemo.stream.adaptation import (
    SpeakerAdapter,
    VoiceStats,
    active_frames,
    affine,
)
from streamemo.stream.pipeline import Pipeline, file_probabilities
from streamemo.train.sessions import measure_voice

REF = BandStats(np.full(4, -6.0), np.full(4, 2.0))


def speaker(mean, std, frames=500, seed=0):
    """(4, frames) log-mel-like map: every frame active (each band varies around `mean`)."""
    return np.random.default_rng(seed).normal(mean, std, (4, frames))


def test_adapter_starts_as_the_identity_and_learns_the_voice():
    adapter = SpeakerAdapter(REF, prior_frames=10, memory_frames=1e9)
    scale, shift = adapter.affine()
    np.testing.assert_allclose(scale, 1.0)
    np.testing.assert_allclose(shift, 0.0, atol=1e-12)
    for i in range(20):  # 10 000 frames of a louder, flatter voice
        adapter.update(speaker(-2.0, 0.5, seed=i))
    mapped = speaker(-2.0, 0.5, seed=99) * adapter.affine()[0][:, None] + adapter.affine()[1][:, None]
    np.testing.assert_allclose(mapped.mean(axis=1), REF.mean, atol=0.15)
    np.testing.assert_allclose(mapped.std(axis=1), REF.std, rtol=0.1)


def test_adapter_forgets_the_previous_speaker_and_freezes_on_request():
    adapter = SpeakerAdapter(REF, prior_frames=10, memory_frames=2000)
    for i in range(20):
        adapter.update(speaker(-2.0, 0.5, seed=i))
    for i in range(40):  # 20 000 frames of another voice: ten memories
        adapter.update(speaker(-9.0, 1.0, seed=100 + i))
    np.testing.assert_allclose(adapter.current().mean, -9.0, atol=0.1)
    np.testing.assert_allclose(adapter.current().std, 1.0, atol=0.1)
    before = adapter.current()
    with adapter.frozen():
        adapter.update(speaker(5.0, 1.0))
    assert np.array_equal(adapter.current().mean, before.mean)
    adapter.reset()
    np.testing.assert_allclose(adapter.current().mean, REF.mean)


def test_pauses_do_not_count_as_voice():
    voice = speaker(-3.0, 1.0, frames=100)
    pause = np.full((4, 100), -14.0)  # more than 30 dB below the voice
    assert active_frames(np.concatenate([voice, pause], axis=1)).shape[1] == 100
    acc = VoiceStats(4)
    acc.update(np.concatenate([voice, pause], axis=1), weight=1.0)
    stats = acc.stats()
    scale, shift = affine(stats, REF)
    np.testing.assert_allclose((voice * scale[:, None] + shift[:, None]).mean(axis=1), REF.mean, atol=1e-4)


def test_a_band_the_microphone_leaves_empty_is_not_blown_up():
    flat = BandStats(np.full(4, -13.8), np.full(4, 1e-3))  # a band at the log floor
    scale, _ = affine(flat, REF)
    assert scale.max() <= 4.0


@pytest.fixture(scope="module")
def adapted_model(random_model):
    """The random test model: marked as trained on speaker-normalised features."""
    return load_model(random_model)


def _file(pipeline, audio):
    pipeline.reset()
    return file_probabilities(pipeline.feed(audio) + pipeline.flush())


def test_speaker_norm_survives_save_and_load(adapted_model):
    assert np.allclose(adapted_model.speaker_norm.mean, -7.0) and adapted_model.card["speaker_norm"]["std"][0] == 2.5


def test_a_session_adapts_and_a_new_speaker_starts_afresh(adapted_model, speech_wav):
    audio = load_16k(speech_wav)
    pipeline = Pipeline(adapted_model, PipelineConfig())
    first = _file(pipeline, audio)
    again = _file(pipeline, audio)  # the same voice a second time: adapted further
    assert not np.allclose(first, again, atol=1e-4)
    pipeline.reset(speaker=True)
    np.testing.assert_allclose(_file(pipeline, audio), first, atol=1e-6)
    # chunking cannot change what adaptation hears
    pipeline.reset(speaker=True)
    trickle = []
    for start in range(0, len(audio), 997):
        trickle += pipeline.feed(audio[start : start + 997])
    np.testing.assert_allclose(file_probabilities(trickle + pipeline.flush()), first, atol=1e-5)


def test_training_measures_a_voice_exactly_as_the_daemon_hears_it(adapted_model, speech_wav):
    """`measure_voice` (the trainer's statistics) and a pipeline's adapter after the same
    recording hold the same sums: one definition of a voice's statistics."""
    audio = load_16k(speech_wav)
    pipeline = Pipeline(adapted_model, replace(PipelineConfig(), adaptation_memory_s=1e12))
    _file(pipeline, audio)
    measured = measure_voice(audio, Frontend(adapted_model.frontend), pipeline.window, pipeline.hop, PipelineConfig())
    heard = pipeline.adapter.heard
    assert measured.frames > 50
    np.testing.assert_allclose(heard.frames, measured.frames, rtol=1e-9)
    np.testing.assert_allclose(heard.sum, measured.sum, rtol=1e-5)
    np.testing.assert_allclose(heard.sum_sq, measured.sum_sq, rtol=1e-5)


def test_adaptation_can_be_switched_off(adapted_model, speech_wav):
    """Switched off, a model trained with speaker normalisation scores features as they
    come, exactly like a model without it; switched on, it scores differently."""
    audio = load_16k(speech_wav)
    off = Pipeline(adapted_model, replace(PipelineConfig(), speaker_adaptation=False))
    assert off.adapter is None and off.adapted_s is None
    without = Pipeline(replace(adapted_model, speaker_norm=None), PipelineConfig(), scorer=off.scorer)
    np.testing.assert_allclose(_file(off, audio), _file(without, audio), atol=1e-6)
    on = Pipeline(adapted_model, PipelineConfig(), scorer=off.scorer)
    # An untrained network moves little with its input, but ten times the equality above is no rounding.
    assert np.abs(_file(on, audio) - _file(off, audio)).max() > 1e-5 and on.adapted_s > 1.0


def test_a_model_card_without_speaker_norm_still_loads(tmp_path, random_model):
    model = replace(load_model(random_model), speaker_norm=None)
    save_model(model, tmp_path / "old")
    card = json.loads((tmp_path / "old.json").read_text())
    del card["speaker_norm"]  # as cards written before speaker adaptation existed
    (tmp_path / "old.json").write_text(json.dumps(card))
    loaded = load_model(tmp_path / "old")
    assert loaded.speaker_norm is None and Pipeline(loaded, PipelineConfig()).adapter is None


def test_adaptation_settings_are_range_checked():
    with pytest.raises(StreamemoError, match=r"cfg\.toml: pipeline\.adaptation_prior_s must be positive"):
        Config().merged({"pipeline": {"adaptation_prior_s": 0}}, origin="cfg.toml")


def test_status_from_a_daemon_without_adapted_s_still_decodes():
    from feedgen import status_body

    from streamemo.protocol import to_json

    body = {**status_body(1, t_publish=1.0), "v": 1}  # version 1: daemons before adapted_s sent this
    del body["adapted_s"]
    assert "adapted_s" not in decode([b"status", to_json(body).encode()])[1]


def test_classify_treats_each_file_as_its_own_speaker_unless_asked(random_model, speech_wav, tmp_path):
    def labels_probs(*extra, files=(speech_wav, speech_wav)):
        out = subprocess.run([*STREAMEMO, "classify", "--model", str(random_model), "--json", *extra,
                              *map(str, files)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return [json.loads(line)["probs"] for line in out.stdout.splitlines()]

    first, second = labels_probs()
    np.testing.assert_allclose(first, second, atol=1e-6)  # the default: each file afresh
    np.testing.assert_allclose(labels_probs("--each-file-alone"), [first, first], atol=1e-6)  # the old flag
    first_session, second_session = labels_probs("--same-speaker")
    np.testing.assert_allclose(first_session, first, atol=1e-6)
    assert not np.allclose(first_session, second_session, atol=1e-4)  # the second time, adapted to the voice
    # A list with a speaker column: rows of one speaker are one session, in order.
    listing = tmp_path / "files.csv"
    listing.write_text(f"path,speaker\n{speech_wav},ann\n{speech_wav},bob\n{speech_wav},ann\n")
    ann1, ann2, bob = labels_probs("--list", str(listing), files=())
    np.testing.assert_allclose(ann1, first, atol=1e-6)
    np.testing.assert_allclose(ann2, second_session, atol=1e-6)
    np.testing.assert_allclose(bob, first, atol=1e-6)


def load_16k(path):
    from streamemo.audio.files import load_audio

    return load_audio(path, 16000)
