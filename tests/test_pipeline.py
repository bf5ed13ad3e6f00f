"""Windowing, VAD, smoothing and chunk-size invariance of what gets published."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from streamemo.audio.sources import Chunk
from streamemo.config import PipelineConfig
from streamemo.features import window_starts
from streamemo.model import load_model
from streamemo.stream.pipeline import Pipeline, file_probabilities
from streamemo.stream.processor import Processor
from streamemo.stream.smoothing import Smoother


def _published(model, signal, rate, chunk, config=PipelineConfig()):
    processor = Processor(Pipeline(model, config), rate, "test")
    out = []
    for start in range(0, len(signal), chunk):
        out += processor.process(Chunk(signal[start : start + chunk], 0.0))
    out += processor.finish()
    return [message.to_body() for _, message in out]


@pytest.fixture(scope="module")
def model(random_model):
    return load_model(random_model)


def test_chunk_size_does_not_change_published_probabilities(model, speech_and_silence_wav):
    signal, rate = sf.read(speech_and_silence_wav, dtype="float32")
    reference = _published(model, signal, rate, 48000)
    assert len(reference) == len(window_starts(len(signal), 32000, round(PipelineConfig().hop_s * 16000)))
    assert any(m["voiced"] for m in reference) and not all(m["voiced"] for m in reference)
    for chunk in (1, 160, 1024):
        messages = _published(model, signal, rate, chunk)
        assert len(messages) == len(reference)
        for a, b in zip(messages, reference):
            assert (a["seq"], a["t_audio"], a["voiced"], a["top"]) == (b["seq"], b["t_audio"], b["voiced"], b["top"])
            for key in ("probs", "raw"):
                if a[key] is None:
                    assert b[key] is None
                else:
                    np.testing.assert_allclose(a[key], b[key], atol=1e-5)


def test_chunk_size_invariance_holds_through_resampling(model, speech_wav):
    """The espeak file is 22050 Hz, so this goes through the streaming soxr resampler."""
    signal, rate = sf.read(speech_wav, dtype="float32")
    assert rate != 16000
    reference = _published(model, signal, rate, 48000)
    for chunk in (160, 1024):
        messages = _published(model, signal, rate, chunk)
        assert [m["voiced"] for m in messages] == [m["voiced"] for m in reference]
        for a, b in zip(messages, reference):
            if a["raw"] is not None:
                np.testing.assert_allclose(a["raw"], b["raw"], atol=1e-4)


def test_silence_is_never_classified(model):
    messages = _published(model, np.zeros(16000 * 4, np.float32), 16000, 1024)
    assert messages and all(not m["voiced"] and m["raw"] is None and m["top"] is None for m in messages)


def test_a_stream_shorter_than_a_window_gets_one_padded_window(model):
    rng = np.random.default_rng(0)
    messages = _published(model, (0.3 * rng.standard_normal(8000)).astype(np.float32), 16000, 1000)
    assert len(messages) == 1 and messages[0]["t_audio"] == 2.0


def test_capture_time_of_a_window_is_that_of_its_last_sample(model):
    pipeline = Pipeline(model, PipelineConfig(hop_s=0.25))
    estimates = pipeline.feed(np.zeros(40000, np.float32), t_end=100.0)
    # Windows end at 32000, 36000 and 40000 samples; the chunk's last sample was at t=100.
    assert [round(e.t_capture, 6) for e in estimates] == [99.5, 99.75, 100.0]


def test_file_probabilities_averages_voiced_windows_only(model, speech_and_silence_wav):
    signal, _ = sf.read(speech_and_silence_wav, dtype="float32")
    pipeline = Pipeline(model, PipelineConfig())
    estimates = pipeline.feed(signal) + pipeline.flush()
    voiced = [e.raw for e in estimates if e.voiced]
    np.testing.assert_allclose(file_probabilities(estimates), np.mean(voiced, axis=0))
    assert file_probabilities(pipeline.feed(np.zeros(0, np.float32))) is None


def test_smoother_time_constant_is_in_seconds_not_hops():
    # After one time constant of a step input, a first-order filter has covered 1 - 1/e.
    for hop in (0.1, 0.25, 0.5):
        smoother = Smoother(hop, tau_s=1.0, hysteresis=0.0, reset_after_s=10)
        smoother.update(np.array([1.0, 0.0]))
        for _ in range(round(1.0 / hop)):
            state, _ = smoother.update(np.array([0.0, 1.0]))
        assert state[1] == pytest.approx(1 - np.exp(-1), abs=1e-9)


def test_hysteresis_keeps_the_top_label_until_a_clear_lead():
    smoother = Smoother(0.25, tau_s=1e-9, hysteresis=0.1, reset_after_s=10)  # no smoothing: raw passes
    assert smoother.update(np.array([0.6, 0.4]))[1] == 0
    assert smoother.update(np.array([0.47, 0.53]))[1] == 0  # leads by 0.06 < 0.1: no flicker
    assert smoother.update(np.array([0.4, 0.6]))[1] == 1  # leads by 0.2: switch


def test_long_silence_resets_the_smoother():
    smoother = Smoother(0.25, tau_s=1.0, hysteresis=0.0, reset_after_s=1.0)
    smoother.update(np.array([1.0, 0.0]))
    state, top = smoother.update(None)
    assert top is None and state is not None  # held through a short pause
    for _ in range(4):
        state, top = smoother.update(None)
    assert state is None
    state, top = smoother.update(np.array([0.0, 1.0]))
    assert top == 1 and state[1] == 1.0  # a fresh start, not a blend with the last speaker


BLAS_THREADS = """
import numpy
import streamemo
from threadpoolctl import threadpool_info
print(*[i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"])
"""


@pytest.mark.parametrize("asked, expected", [(None, "1"), ("2", "2")])
def test_a_program_that_imports_numpy_first_scores_on_one_blas_thread(asked, expected):
    """The voice gate's small products cost twice the CPU on two OpenBLAS threads, forty times on
    a busy machine. A program that imported numpy before streamemo has its BLAS threads started
    already, and streamemo limits them to one; an explicit OPENBLAS_NUM_THREADS wins."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if asked:
        env["OPENBLAS_NUM_THREADS"] = asked
    out = subprocess.run([sys.executable, "-c", BLAS_THREADS], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() and set(out.stdout.split()) == {expected}, out.stdout
