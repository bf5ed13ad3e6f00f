"""The default model's frontend: Whisper's log-mel with a fixed clamp, and its encoder run in
blocks with left context (streamemo/encoder/frontend.py, stream/blocks.py). What training
computes for a clip is what a stream computes, however the audio arrives."""

from __future__ import annotations

import json
import shutil

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from streamemo import ModelError
from streamemo.config import PipelineConfig
from streamemo.encoder import frontend as encoder_frontend
from streamemo.features import build_frontend
from streamemo.model import load_model
from streamemo.stream.blocks import BlockStream
from streamemo.stream.pipeline import Pipeline
from streamemo.train.batches import crops_at_hop
from streamemo.train.recipe import whisper_frontend


@pytest.fixture(scope="module")
def frontend():
    return build_frontend(whisper_frontend())


@pytest.fixture(scope="module")
def speech(speech_and_silence_wav) -> np.ndarray:
    audio, rate = sf.read(speech_and_silence_wav, dtype="float32")
    assert rate == 16000
    return audio


def test_log_mel_is_whispers_formula_with_a_fixed_clamp(frontend):
    """Against a direct numpy formula: frames of 400 samples every 160 ending on their last
    sample, periodic Hann, |FFT|^2, librosa's Slaney mel basis (Whisper's own filters),
    log10, clamped at LOG_FLOOR (not 8 below the loudest frame), (x + 4) / 4."""
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(16000)
    audio[8000:10000] = 0.0  # digital silence: clamped to the floor
    audio = audio.astype(np.float32)

    frames = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float64), 400)[::160]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    mel = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80).astype(np.float64) @ power.T
    expected = (np.maximum(np.log10(np.maximum(mel, 1e-10)), encoder_frontend.LOG_FLOOR) + 4) / 4

    ours = frontend.log_mel(torch.from_numpy(audio)[None])[0].numpy()
    assert ours.shape == expected.shape == (80, (16000 - 400) // 160 + 1)
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    silent = 8000 // 160 + 3  # a frame wholly inside the silence
    np.testing.assert_allclose(ours[:, silent], (encoder_frontend.LOG_FLOOR + 4) / 4, rtol=1e-6)
    # The floor is 8 (80 dB) below what a full-scale sine reaches in its loudest band.
    assert abs(encoder_frontend.full_scale_log_mel(frontend.kernels()) - encoder_frontend.FULL_SCALE_LOG10) < 0.05


def test_a_streams_blocks_are_the_clips_features(frontend, speech):
    """Training crops a clip's features at the daemon's hop; the daemon's block stream
    computes each window's blocks from the audio it holds. The two are the same numbers, and
    a live hop encodes one new block."""
    whole = frontend(torch.from_numpy(speech)[None])[0]  # what the trainer caches
    block, past = frontend.block_samples, frontend.past_samples
    window = 8 * block
    stream = BlockStream(frontend, window, torch.device("cpu"))
    padded = np.concatenate([np.zeros(past, np.float32), speech])
    encoded = []
    for end in range(window, len(speech) + 1, block):  # a window every hop of one block
        audio = padded[end - window : end + past]
        got = stream.features([(audio, end)])[0]
        encoded.append(stream.encoded)
        start = (end - window) // frontend.spec.frame_hop
        np.testing.assert_allclose(got.numpy(), whole[:, start : start + got.shape[1]].numpy(), atol=1e-5)
    assert encoded[0] == 8 and np.all(np.diff(encoded) == 1)  # each block encoded once
    assert len(stream.cache) <= 8  # nothing older than a window is kept


@pytest.fixture(scope="module")
def model(encoder_model):
    return load_model(encoder_model)


def _raw(model, audio, chunk, config=PipelineConfig()):
    pipeline = Pipeline(model, config)
    out = []
    for start in range(0, len(audio), chunk):
        out += pipeline.feed(audio[start : start + chunk])
    out += pipeline.flush()
    return out, pipeline


def test_an_encoder_model_scores_the_same_however_the_audio_arrives(model, speech):
    reference, _ = _raw(model, speech, len(speech))
    assert any(e.voiced for e in reference) and not all(e.voiced for e in reference)
    for chunk in (160, 1000, 5333):
        got, _ = _raw(model, speech, chunk)
        assert [e.voiced for e in got] == [e.voiced for e in reference]
        for a, b in zip(got, reference):
            if a.raw is not None:
                np.testing.assert_allclose(a.raw, b.raw, atol=1e-5)
                np.testing.assert_allclose(a.smoothed, b.smoothed, atol=1e-5)


def test_a_live_stream_encodes_ahead_when_speech_starts_and_scores_the_same(model, speech):
    """Fed as the daemon feeds it (to the next task, then `prepare`), the pipeline wakes in
    the middle of each hop of silence and, once the gate hears speech, encodes the next
    window's complete blocks ahead: the window that opens the gate waits for one block,
    not eight. Silence encodes nothing, and the numbers are those of the file fed whole."""
    reference, whole = _raw(model, speech, len(speech))
    pipeline = Pipeline(model, PipelineConfig())
    got, at_window, ahead, pos, quiet = [], [], 0, 0, []
    while pos < len(speech):
        take = min(pipeline.samples_to_next_task, len(speech) - pos)
        before = pipeline.blocks.encoded
        estimates = pipeline.feed(speech[pos : pos + take])
        at_window += [pipeline.blocks.encoded - before] * len(estimates)
        got += estimates
        pos += take
        ahead += pipeline.prepare()
        if pos <= int(2.5 * 16000):  # the leading 3 s are silence
            quiet.append(pipeline.blocks.encoded)
    assert [e.voiced for e in got] == [e.voiced for e in reference[: len(got)]]
    for a, b in zip(got, reference):
        if a.raw is not None:
            np.testing.assert_allclose(a.raw, b.raw, atol=1e-5)
    first = next(i for i, e in enumerate(got) if e.voiced)
    assert ahead >= 7 and at_window[first] == 1  # its seven older blocks were encoded ahead
    assert max(at_window) == 1  # no window waits for more than its newest block
    assert pipeline.blocks.encoded == whole.blocks.encoded  # and none is encoded that the file's windows do not need
    # Up to 2.5 s: the first window (1.92 s), then a wake at the middle and the end of each hop;
    # nothing to encode in silence.
    assert quiet == [0] * 5


def test_the_network_sees_in_the_daemon_what_it_trained_on(model, speech):
    """Without speaker adaptation, each voiced window's probabilities are the network's on
    the training crop of the clip's cached features at the same place."""
    config = PipelineConfig(speaker_adaptation=False)
    estimates, pipeline = _raw(model, speech, 4000, config)
    feats = build_frontend(model.frontend)(torch.from_numpy(speech)[None])[0].numpy()
    crops = crops_at_hop(feats, model.frontend.frames(pipeline.window), pipeline.hop // model.frontend.frame_hop)
    with torch.no_grad():
        trained = torch.softmax(pipeline.scorer.network(torch.from_numpy(crops)), -1).numpy()
    assert len(estimates) == len(trained)
    for e, p in zip(estimates, trained):
        if e.raw is not None:
            np.testing.assert_allclose(e.raw, p, atol=1e-5)


def test_a_hop_of_part_of_a_block_encodes_each_window_on_its_own_grid(model, speech, caplog):
    """At 0.25 s a window's blocks do not line up with the last one's: they are encoded anew
    for each window (said once in the log), with the same definition: equal to the clip's
    features when the window ends on the clip's grid."""
    config = PipelineConfig(hop_s=0.25, speaker_adaptation=False, speech_share=0.0)  # every window scored
    with caplog.at_level("INFO"):
        estimates, pipeline = _raw(model, speech, 4000, config)
    assert "encodes each block once only at hops of a whole number of 0.24 s" in caplog.text
    feats = build_frontend(model.frontend)(torch.from_numpy(speech)[None])[0].numpy()
    width = model.frontend.frames(pipeline.window)
    aligned = [e for e in estimates if e.raw is not None and round(e.t_audio * 16000) % 3840 == 0]
    assert aligned
    for e in aligned:
        end = round(e.t_audio * 16000) // model.frontend.frame_hop
        with torch.no_grad():
            p = torch.softmax(pipeline.scorer.network(torch.from_numpy(feats[None, :, end - width : end])), -1)[0]
        np.testing.assert_allclose(e.raw, p.numpy(), atol=1e-5)


def test_a_model_never_loads_with_another_encoder(encoder_model, tmp_path):
    for change, needle in ((lambda f: f.update(encoder_sha256="0" * 64), "is not the one the model was trained on"),
                           (lambda f: f.update(encoder="../../../etc/passwd"), "must name a shipped encoder file"),
                           (lambda f: f.update(encoder="whisper-large"), "is not in this installation"),
                           (lambda f: f.update(n_mels=64), "needs n_mels 80")):
        card = json.loads(encoder_model.with_suffix(".json").read_text())
        change(card["frontend"])
        shutil.copy(encoder_model.with_suffix(".safetensors"), tmp_path / "m.safetensors")
        (tmp_path / "m.json").write_text(json.dumps(card))
        with pytest.raises(ModelError, match=needle):
            load_model(tmp_path / "m")
