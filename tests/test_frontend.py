"""The frontend: the FFT of frames under nnAudio's window, through nnAudio's mel basis, must give
nnAudio's own output (its STFT as strided convolutions)."""

import numpy as np
import pytest
import torch

from streamemo.features import LOG_FLOOR, Frontend, FrontendSpec


def _speechlike(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 540, 2400), 1))
    return torch.from_numpy((0.2 * tone + 0.01 * rng.standard_normal(n)).astype(np.float32))


@pytest.mark.parametrize("spec", [FrontendSpec(hop_length=320), FrontendSpec(),
                                  FrontendSpec(kind="mfcc", n_mfcc=20, hop_length=320),
                                  FrontendSpec(hop_length=320, align="end"), FrontendSpec(align="end"),
                                  FrontendSpec(kind="mfcc", n_mfcc=20, hop_length=320, align="end")])
def test_frontend_equals_nnaudio(spec):
    """Centred frames are nnAudio's reflect-padded, centred STFT; end-aligned ones (streaming
    models) its uncentred STFT of the window from its first whole frame."""
    frontend = Frontend(spec)
    batch = torch.stack([_speechlike(32000, 0), _speechlike(32000, 1) * 0.1])
    ours = frontend(batch)
    layer = frontend.layer
    if spec.align == "end":
        layer = Frontend.nnaudio_layer(spec, center=False)
        batch = batch[:, (32000 - spec.n_fft) % spec.hop_length :]
    with torch.no_grad():
        theirs = layer(batch)  # nnAudio's own forward (strided convolutions)
    if spec.kind == "logmel":
        theirs = torch.log(theirs + LOG_FLOOR)
    assert ours.shape == theirs.shape == (2, spec.n_features, spec.frames(32000))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("align", ["end", "center"])
def test_a_frame_is_the_same_in_every_window_that_holds_it(align):
    """What lets a stream compute each frame once: a window's frames between its padded edges
    are those of its samples alone, computed from just their samples, and a window one frame
    hop later holds the same frames shifted."""
    spec = FrontendSpec(hop_length=320, align=align)
    frontend = Frontend(spec)
    audio = _speechlike(40000)
    whole = frontend(audio[:32000])[0]
    lead, trail = spec.padded_frames(32000)
    assert (lead, trail) == ((0, 0) if align == "end" else (1, 1))  # 20 ms frames, 32 ms FFT
    last = whole.shape[1] - 1 - trail  # the newest frame without padding
    start, end = spec.frame_start(last - 11, 32000), spec.frame_start(last, 32000) + spec.n_fft
    twelve = frontend(audio[start:end], pad=False)[0]
    torch.testing.assert_close(twelve, whole[:, last - 11 : last + 1], atol=1e-5, rtol=1e-5)
    later = frontend(audio[3840 : 32000 + 3840])[0]
    torch.testing.assert_close(later[:, lead : -12 - trail], whole[:, 12 + lead : len(whole[0]) - trail],
                               atol=1e-5, rtol=1e-5)
    if align == "center":  # the padded frames are where a window differs from a longer recording
        assert not torch.allclose(later[:, -13], whole[:, -1], atol=1e-3)


def test_a_tone_lands_in_its_mel_band():
    spec = FrontendSpec(hop_length=320)
    frontend = Frontend(spec)
    tone = torch.sin(2 * np.pi * 1000 * torch.arange(32000) / 16000)
    mel = frontend(tone)[0].mean(dim=1)
    centres = frontend.layer.mel_basis.argmax(dim=1) * spec.sample_rate / spec.n_fft  # each band's peak, Hz
    assert abs(centres[mel.argmax()].item() - 1000) < 60


def test_too_short_a_window_is_a_clear_error():
    with pytest.raises(ValueError, match="too short"):
        Frontend(FrontendSpec())(torch.zeros(100))
    with pytest.raises(ValueError, match="shorter than n_fft"):
        Frontend(FrontendSpec(align="end"))(torch.zeros(100))
