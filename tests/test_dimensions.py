"""Arousal and valence: derived from the class probabilities with published places, in
every voiced message and in `classify`; their direction checked on real clips of corpora
the shipped model never heard."""

from __future__ import annotations

import csv
import io
import subprocess

import numpy as np

from conftest import ROOT, STREAMEMO, corpus
from streamemo.dimensions import PLACES, arousal_valence


def test_derived_arousal_and_valence_follow_the_published_places():
    labels = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    assert arousal_valence(labels, np.eye(8)[4]) == PLACES["angry"][::-1]  # (arousal, valence)
    angry, sad = arousal_valence(labels, np.eye(8)[4]), arousal_valence(labels, np.eye(8)[3])
    assert angry[0] > 0.5 and sad[0] < 0 and sad[1] < 0
    # A user's own class has no place: the rest is renormalised; nothing known gives None.
    assert arousal_valence(["sad", "sarcastic"], [0.5, 0.5]) == arousal_valence(["sad"], [1.0])
    assert arousal_valence(["sarcastic"], [1.0]) is None and arousal_valence(labels, None) is None


def test_angry_voices_sound_aroused_and_sad_ones_low_and_unpleasant():
    """On EMOVO (Italian) and nEMO (Polish), which the shipped model never heard: angry
    clips come out high in arousal, sad ones lower and of negative valence, on average."""
    clips = {"angry": sorted(corpus("emovo").glob("*/rab-*"))[::7] + sorted(corpus("nemo").glob("samples/*_anger_*"))[::70],
             "sad": sorted(corpus("emovo").glob("*/tri-*"))[::7] + sorted(corpus("nemo").glob("samples/*_sadness_*"))[::70]}
    files = [str(p) for label in ("angry", "sad") for p in clips[label]]
    out = subprocess.run([*STREAMEMO, "classify", "--format", "csv", "--model", str(ROOT / "models" / "default"),
                          *files], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {row["file"]: row for row in csv.DictReader(io.StringIO(out.stdout))}
    assert list(rows) == files  # one row per file, in order

    def mean(label, key):
        return np.mean([float(rows[str(p)][key]) for p in clips[label] if rows[str(p)][key] != ""])

    assert mean("angry", "arousal") > 0.25 and mean("sad", "valence") < 0
    assert mean("angry", "arousal") - mean("sad", "arousal") > 0.25
