"""Arousal and valence, derived from the class probabilities.

Each emotion has a place on two axes, valence (unpleasant -1 ... pleasant +1) and arousal
(calm -1 ... excited +1); a window's arousal and valence are the probability-weighted mean
of those places. They are *derived* from the classifier's output, not estimated by a
network trained on dimension labels (no corpus here has them), so they inherit the
classifier's mistakes; what they add is a reading that degrades gracefully: an angry voice
heard as fearful is still high arousal and negative valence.

The places are the pleasure (valence) and arousal factor scores of Russell & Mehrabian
(1977), "Evidence for a three-factor theory of emotions", Journal of Research in
Personality 11(3): 273-294, for the emotion terms matching our labels. Two labels are not in
that table: "neutral" sits at the origin by definition, and "calm" on the direction Russell
(1980), "A circumplex model of affect", J. Personality and Social Psychology 39(6):
1161-1178, gives it (316 degrees: pleasant, low arousal) at 0.8 from the origin, about the
distance of the others.
"""

from __future__ import annotations

import math

# label -> (valence, arousal)
PLACES: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "calm": (round(0.8 * math.cos(math.radians(316)), 2), round(0.8 * math.sin(math.radians(316)), 2)),
    "happy": (0.81, 0.51),
    "sad": (-0.63, -0.27),
    "angry": (-0.51, 0.59),
    "fearful": (-0.62, 0.82),
    "disgust": (-0.60, 0.35),
    "surprised": (0.40, 0.67),
    "boredom": (-0.65, -0.62),
}


def arousal_valence(labels, probs) -> tuple[float, float] | None:
    """(arousal, valence) for probabilities over `labels`, the weighted mean of the labels'
    places; a label without a place (a user's own class) is left out and the rest
    renormalised. None when `probs` is None or no label has a place."""
    if probs is None:
        return None
    known = [(PLACES[label], float(p)) for label, p in zip(labels, probs) if label in PLACES]
    mass = sum(p for _, p in known)
    if not known or mass <= 0:
        return None
    valence = sum(v * p for (v, _), p in known) / mass
    arousal = sum(a * p for (_, a), p in known) / mass
    return round(arousal, 4), round(valence, 4)
