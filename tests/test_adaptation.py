"""Speaker adaptation: the running per-band statistics, and the pipeline scoring with them."""

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from streamemo.config import PipelineConfig
from streamemo.model import load_model, save_model
from streamemo.stream.adaptation import BandStats, SpeakerAdapter, VoiceStats, active_frames, normalise
from streamemo.stream.pipeline import Pipeline, file_probabilities

REF = BandStats(np.full(4, -6.0), np.full(4, 2.0))


def speaker(mean, std, frames=500, seed=0):
    """(4, frames) log-mel-like map: every frame active (each band varies around `mean`)."""
    return np.random.default_rng(seed).normal(mean, std, (4, frames))


def test_adapter_starts_as_the_identity_and_learns_the_voice():
    adapter = SpeakerAdapter(REF, prior_frames=10, memory_frames=1e9)
    scale, shift = adapter.affine()
    np.testing.assert_allclose(scale, 1.0) and np.testing.assert_allclose(shift, 0.0, atol=1e-12)
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
    np.testing.assert_allclose(normalise(voice, stats, REF).mean(axis=1), REF.mean, atol=1e-4)


@pytest.fixture(scope="module")
def adapted_model(random_model, tmp_path_factory):
    """The random test model, marked as trained on speaker-normalised features."""
    model = load_model(random_model)
    model.speaker_norm = BandStats(np.full(64, -7.0), np.full(64, 2.5))
    path = tmp_path_factory.mktemp("models") / "adapted"
    save_model(model, path)
    return load_model(path)


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
    # chunking cannot change what adaptation hears: one sample or the whole file at a time
    pipeline.reset(speaker=True)
    pipeline.reset()
    trickle = []
    for start in range(0, len(audio), 997):
        trickle += pipeline.feed(audio[start : start + 997])
    np.testing.assert_allclose(file_probabilities(trickle + pipeline.flush()), first, atol=1e-5)


def test_adaptation_can_be_switched_off(adapted_model, speech_wav):
    audio = load_16k(speech_wav)
    off = Pipeline(adapted_model, replace(PipelineConfig(), speaker_adaptation=False))
    assert off.adapter is None
    plain = Pipeline(adapted_model, PipelineConfig(), scorer=off.scorer)
    plain.adapter = None
    np.testing.assert_allclose(_file(off, audio), _file(plain, audio), atol=1e-6)
    assert Pipeline(adapted_model, PipelineConfig()).adapter is not None


def load_16k(path):
    from streamemo.train.audio import load_audio

    return load_audio(path, 16000)
