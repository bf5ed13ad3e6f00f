"""Which encoder layer, and how much left context per block, by a quick probe (issue 28).

    .venv/bin/python scripts/convert_whisper.py --model tiny.en -o /tmp/whisper-tiny.en-4.safetensors
    .venv/bin/python benchmarks/encoder_probe.py /tmp/whisper-tiny.en-4.safetensors [--per-class 60]

Four classes (angry, happy, neutral, sad), up to --per-class clips a class a corpus from the
seven corpora in ../shared/data; each clip's encoder features at every layer, computed
(a) by Whisper as is over the whole clip (centred frames, its own padding) and (b) in blocks
of B frames with C frames of left context as the daemon computes them (streamemo/encoder/
frontend.py), pooled over time (mean and spread); normalised per speaker (or per corpus);
then leave one corpus out with logistic regression. Prints the mean UA over the five corpora
the shipped model never trains on in the cross-corpus protocol, and over all seven. A probe
is not a model: it says where to look. One core, about 8 minutes for 1,620 clips.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from streamemo.audio.files import load_audio
from streamemo.encoder.frontend import CONV_PAST, scale_log_mel
from streamemo.encoder.whisper import load_encoder
from streamemo.train.readers import read_corpus

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
CORPORA = ("ravdess", "emodb", "emovo", "nemo", "ased", "turev", "korean")
UNSEEN = ("emovo", "nemo", "ased", "turev", "korean")
CLASSES = ("angry", "happy", "neutral", "sad")
SETTINGS = {"whole": None, "b12c12": (12, 12), "b12c24": (12, 24), "b12c48": (12, 48), "b24c24": (24, 24)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoder", type=Path, help="a converted encoder file with every layer")
    parser.add_argument("--per-class", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder = load_encoder(args.encoder)
    import librosa

    mel_t = torch.tensor(librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)).T.contiguous()
    window = torch.hann_window(400)

    def log_mel(samples: torch.Tensor) -> torch.Tensor:
        power = torch.fft.rfft(samples.unfold(-1, 400, 160) * window).abs() ** 2
        return scale_log_mel(power @ mel_t).transpose(-1, -2)

    def run(mel: torch.Tensor, padding: int) -> list[torch.Tensor]:
        x = F.gelu(F.conv1d(mel, encoder.conv1.weight, encoder.conv1.bias, padding=padding))
        x = F.gelu(F.conv1d(x, encoder.conv2.weight, encoder.conv2.bias, stride=2, padding=padding)).transpose(1, 2)
        x, outs = x + encoder.positional_embedding[: x.shape[1]], []
        for block in encoder.blocks:
            x = block(x)
            outs.append(x)
        return outs

    def features(audio: np.ndarray, setting) -> list[np.ndarray]:
        if setting is None:  # Whisper as is: centred frames, reflect padding, zero-padded convolutions
            a = F.pad(torch.from_numpy(audio)[None, None], (200, 200), mode="reflect")[0, 0]
            return [o[0].numpy() for o in run(log_mel(a)[None, :, :-1], 1)]
        block, context = setting
        past = (2 * context + CONV_PAST) * 160 + 240
        n = len(audio) // (block * 320)
        a = torch.from_numpy(np.pad(audio, (past, 0)))[: past + n * block * 320]
        chunks = log_mel(a).unfold(-1, 2 * (block + context) + CONV_PAST, 2 * block).permute(1, 0, 2)
        return [o[:, -block:].reshape(-1, o.shape[-1]).numpy() for o in run(chunks, 0)]

    rng = np.random.default_rng(0)
    clips = []
    for corpus in CORPORA:
        read = [c for c in read_corpus(f"{corpus}:{DATA / corpus}", boredom=False).clips if c.label in CLASSES]
        for label in CLASSES:
            of = [c for c in read if c.label == label]
            clips += [of[i] for i in rng.permutation(len(of))[: args.per_class]]
    pooled = {s: [] for s in SETTINGS}
    seconds = dict.fromkeys(SETTINGS, 0.0)
    with torch.inference_mode():
        for clip in clips:
            audio = load_audio(clip.path, 16000).astype(np.float32)
            audio = np.pad(audio, (0, max(0, 30720 - len(audio))))  # one 1.92 s window at least, as training pads
            for name, setting in SETTINGS.items():
                t = time.perf_counter()
                layers = features(audio, setting)
                seconds[name] += time.perf_counter() - t
                pooled[name].append([np.concatenate([f.mean(0), f.std(0)]) for f in layers])

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    corpus = np.array([c.corpus for c in clips])
    label = np.array([c.label for c in clips])
    print(f"{len(clips)} clips; encoder seconds per setting: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    for unit, groups in (("corpus", corpus), ("speaker", np.array([c.speaker for c in clips]))):
        for name in SETTINGS:
            row = []
            for layer in range(len(encoder.blocks)):
                x = np.array([p[layer] for p in pooled[name]])
                for g in np.unique(groups):
                    m = groups == g
                    x[m] = (x[m] - x[m].mean(0)) / (x[m].std(0) + 1e-6)
                ua = {}
                for held in CORPORA:
                    fit = LogisticRegression(C=0.05, max_iter=300).fit(x[corpus != held], label[corpus != held])
                    ua[held] = 100 * balanced_accuracy_score(label[corpus == held], fit.predict(x[corpus == held]))
                row.append(f"L{layer + 1} {np.mean([ua[c] for c in UNSEEN]):.1f}/{np.mean(list(ua.values())):.1f}")
            print(f"per {unit:7s} {name:7s} " + "  ".join(row))


if __name__ == "__main__":
    main()
