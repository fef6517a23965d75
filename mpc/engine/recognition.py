"""1:1 verification and 1:N identification on feature-vector shares.

Similarity is the cosine of the probe feature vector ``a`` and an enrolled one ``b``. Computed
jointly so that the aggregating node (party 0) learns the score and nothing else of the vectors.
Steps, in order:

1. one elementwise Beaver product of the stacked shares ``[G; a; G] * [a..a; a; G]``, summed per
   row: shares of ``<g_m, a>``, ``<a, a>``, ``<g_m, g_m>`` (2f bits) — one round;
2. truncation to f bits (local for two parties, one round with the dealer otherwise);
3. one elementwise Beaver product with dealer masks ``(rho*sigma, rho^2, sigma^2)`` (fresh
   random integers in [2^8, 2^8 + 2^10) per subject): ``u = rho*sigma*<a,g>``,
   ``v = rho^2*<a,a>``, ``w = sigma^2*<g,g>`` — one round;
4. ``u, v, w`` revealed to party 0 only — one round; party 0 computes
   ``cos = u / sqrt(v * w)``, which the masks cancel out of.

What party 0 learns: the scores; the norms only up to the random multiplicative masks
(statistical hiding, not perfect). No node ever holds a feature vector.

Range: with f = 16 the masked products stay below 2^63 while |<a,g>|, <a,a>, <g,g> < 2^24
(features of norm up to about 4000); the elementwise products need |a_j g_j| < 2^26.

"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from splitseal.errors import InvalidInputError

from .protocol import Session
from .ring import decode

log = logging.getLogger(__name__)

AGGREGATOR = 0


def cosine_scores(session: Session, probe: np.ndarray, gallery: np.ndarray) -> np.ndarray | None:
    """Cosine of the probe (D,) against each row of gallery (M, D), all shares with f bits.

    Returns the M scores at the aggregator (party 0), None elsewhere.
    """
    probe = np.asarray(probe, dtype=np.uint64).reshape(-1)
    gallery = np.asarray(gallery, dtype=np.uint64)
    if gallery.ndim != 2 or gallery.shape[0] == 0 or gallery.shape[1] != probe.size:
        raise InvalidInputError(f"gallery of shape {gallery.shape} does not match a probe of {probe.size} values")
    m = gallery.shape[0]
    x = np.concatenate([gallery, probe[None, :], gallery])
    y = np.concatenate([np.broadcast_to(probe, gallery.shape), probe[None, :], gallery])
    sums = session.mul(x, y).sum(axis=1, dtype=np.uint64)
    sums = session.truncate(sums)
    ab, aa, bb = sums[:m], np.repeat(sums[m:m + 1], m), sums[m + 1:]
    masks = session._need_triples().positive_masks(session._tag("masks"), m)
    masked = session.mul(np.stack([ab, aa, bb]), masks)
    revealed = session.reveal_to(AGGREGATOR, masked)
    if revealed is None:
        return None
    u, v, w = (decode(r, session.f) for r in revealed[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = u / np.sqrt(np.maximum(v, 0.0) * np.maximum(w, 0.0))
    return np.nan_to_num(cos, nan=-1.0, posinf=-1.0, neginf=-1.0)


@dataclass(frozen=True)
class Decision:
    """What the aggregator decided (and broadcast to the other nodes)."""

    kind: str           # "verify" | "identify"
    subject: str | None  # the claimed subject (verify) or the best match (identify, if accepted)
    accepted: bool
    score: float | None  # known to the aggregator (and returned to the caller) only


def decide_verify(scores: np.ndarray, subject: str, threshold: float) -> Decision:
    s = float(scores[0])
    return Decision("verify", subject, s >= threshold, s)


def decide_identify(scores: np.ndarray, subjects: list[str], threshold: float) -> Decision:
    best = int(np.argmax(scores))
    s = float(scores[best])
    return Decision("identify", subjects[best] if s >= threshold else None, s >= threshold, s)
