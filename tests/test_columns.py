"""The streaming network (time_padding "valid"): each frame and each column of the conv stack
computed once (stream/columns.py) must publish what scoring each window whole publishes,
with centred frames (the shipped model's) and end-aligned ones; models and hops that cannot
stream are scored window by window."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from streamemo import EMOTIONS
from streamemo.audio.files import load_audio
from streamemo.config import PipelineConfig
from streamemo.features import BandStats, Frontend, FrontendSpec, frame_windows
from streamemo.model import Model, load_model, save_model
from streamemo.stream.pipeline import Pipeline
from streamemo.train.batches import crops_at_hop
from streamemo.train.cache import FeatureRecipe, FeatureStore

# A hop of whole columns (12 frames of 20 ms, 3 columns of 80 ms); every window scored.
OPEN = PipelineConfig(hop_s=0.24, speech_share=0.0)
STREAMING = FrontendSpec(hop_length=320)


@pytest.fixture(scope="module", params=["center", "end"])
def streaming_model(request, tmp_path_factory):
    """A small untrained streaming CNN-LSTM, saved like a real one, "trained" (its card says)
    on speaker-normalised features."""
    torch.manual_seed(0)
    spec = replace(STREAMING, align=request.param)
    model = Model.create("stream", EMOTIONS, 2.0, spec, "cnn_lstm", {"time_padding": "valid"})
    model.speaker_norm = BandStats(np.full(64, -7.0), np.full(64, 2.5))
    path = tmp_path_factory.mktemp("models") / "stream"
    save_model(model, path)
    return path


@pytest.fixture(scope="module")
def audio(speech_and_silence_wav):
    return load_audio(speech_and_silence_wav, 16000)


def _raw(pipeline, audio, chunk=None):
    pipeline.reset(speaker=True)
    chunk = chunk or len(audio)
    estimates = []
    for start in range(0, len(audio), chunk):
        estimates += pipeline.feed(audio[start : start + chunk])
    return np.stack([e.raw for e in estimates])


def _whole_windows(model, config):
    pipeline = Pipeline(model, config)
    pipeline.columns = None  # what every model did before streaming: each window encoded whole
    return pipeline


def test_streamed_columns_publish_what_whole_windows_do(streaming_model, audio):
    model = load_model(streaming_model)
    config = replace(OPEN, speaker_adaptation=False)  # adaptation maps a hop's frames as they arrive: below
    streaming = Pipeline(model, config)
    assert streaming.columns is not None, "0.24 s is a whole number of the network's columns"
    streamed = _raw(streaming, audio)
    assert len(streamed) >= 8
    np.testing.assert_allclose(streamed, _raw(_whole_windows(model, config), audio), atol=1e-5)
    # and the stream keeps exactly one window's streamed columns, equal to that window encoded whole
    window = frame_windows(audio, streaming.window, streaming.hop)[-1]
    with torch.inference_mode():
        whole = streaming.scorer.network.encode(streaming.scorer.features(window[None]))[0]
    held = streaming.columns.columns
    assert len(held) == len(whole) - (1 if model.frontend.align == "center" else 0)  # the newest is the slab's
    torch.testing.assert_close(held, whole[: len(held)], atol=1e-5, rtol=1e-4)


def test_frames_skipped_while_unvoiced_are_caught_up_exactly(streaming_model, audio):
    """Unvoiced windows compute nothing; the next voiced one pushes what arrived meanwhile."""
    model = load_model(streaming_model)
    config = PipelineConfig(hop_s=0.24, speaker_adaptation=False)
    pipeline = Pipeline(model, config)
    pipeline.reset()
    gated = pipeline.feed(audio)
    voiced = [e.voiced for e in gated]
    assert any(voiced) and not all(voiced) and any(not a and b for a, b in zip(voiced, voiced[1:]))
    whole = _whole_windows(model, config)
    whole.reset()
    for a, b in zip(gated, whole.feed(audio)):
        assert a.voiced == b.voiced
        if a.voiced:
            np.testing.assert_allclose(a.raw, b.raw, atol=1e-5)


def test_with_speaker_adaptation_the_stream_is_chunk_size_invariant(streaming_model, audio):
    model = load_model(streaming_model)  # trained, it says, on speaker-normalised features
    pipeline = Pipeline(model, OPEN)
    assert pipeline.columns is not None and pipeline.adapter is not None
    reference = _raw(pipeline, audio)
    for chunk in (1, 160, 1024):  # to float rounding: a batch's windows group their sums differently
        np.testing.assert_allclose(_raw(pipeline, audio, chunk), reference, atol=1e-5)
    # The first window is every frame at once, mapped as the voice is known after it: as whole.
    np.testing.assert_allclose(reference[0], _raw(_whole_windows(model, OPEN), audio)[0], atol=1e-5)
    # Later windows differ only in that each hop's frames keep the mapping of their arrival.
    assert np.abs(reference - _raw(_whole_windows(model, OPEN), audio)).max() < 0.05


@pytest.mark.parametrize("why", ["hop", "mfcc", "same"])
def test_what_cannot_stream_is_scored_window_by_window(why, audio, caplog):
    spec = replace(STREAMING, kind="mfcc") if why == "mfcc" else STREAMING
    params = {"time_padding": "same" if why == "same" else "valid"}
    model = Model.create("m", EMOTIONS, 2.0, spec, "cnn_lstm", params)
    model.network.eval()
    config = replace(OPEN, hop_s=0.25) if why == "hop" else OPEN
    with caplog.at_level("INFO", logger="streamemo.stream.pipeline"):
        pipeline = Pipeline(model, config)
    assert pipeline.columns is None
    if why == "hop":  # a streaming model at a hop it cannot stream at: say so, and which hops it can
        assert "whole number of 0.08 s" in caplog.text
    assert _raw(pipeline, audio).shape == (len(frame_windows(audio, pipeline.window, pipeline.hop)), len(EMOTIONS))


@pytest.mark.parametrize("align", ["center", "end"])
def test_the_trainers_crops_are_the_streams_frames(align, audio, tmp_path):
    """Training crops a clip's cached features at hops; each crop is the frames the daemon
    computes for that window, but for the frames at a window's edges that reach into its
    padding (centred frames: the first and the last)."""
    spec = replace(STREAMING, align=align)
    store = FeatureStore(FeatureRecipe(spec, 32000), tmp_path / "cache")
    hop = round(OPEN.hop_s * 16000)
    crops = crops_at_hop(store.features_of_audio(audio), spec.frames(32000), hop // spec.hop_length)
    frontend = Frontend(spec)
    windows = frame_windows(audio, 32000, hop)
    assert len(crops) == len(windows)
    lead, trail = spec.padded_frames(32000)
    with torch.inference_mode():
        daemon = frontend(torch.from_numpy(windows)).numpy()
    inner = slice(lead, spec.frames(32000) - trail)
    np.testing.assert_allclose(crops[..., inner], daemon[..., inner], atol=1e-4)


def test_an_ensemble_of_streaming_networks_streams_each_member(audio):
    torch.manual_seed(1)
    params = {"member_arch": "cnn_lstm", "member_params": {"time_padding": "valid"}, "members": 2}
    model = Model.create("pair", EMOTIONS, 2.0, STREAMING, "ensemble", params)
    model.network.eval()
    config = replace(OPEN, speaker_adaptation=False)
    pipeline = Pipeline(model, config)
    assert pipeline.columns is not None and len(pipeline.columns.streams) == 2
    np.testing.assert_allclose(_raw(pipeline, audio), _raw(_whole_windows(model, config), audio), atol=1e-5)
