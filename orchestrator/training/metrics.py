"""Quality measures of the reference models on the held-out split."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from splitseal.errors import InvalidInputError


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows of ``scores`` (N, K) whose argmax equals the label."""
    if scores.shape[0] != labels.shape[0]:
        raise InvalidInputError(f"{scores.shape[0]} score rows for {labels.shape[0]} labels")
    return float((scores.argmax(axis=1) == labels).mean())


def cosine_similarity_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities of the rows of ``vectors`` (float64)."""
    v = vectors.astype(np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v @ v.T


@dataclass(frozen=True)
class VerificationMetrics:
    """Verification quality over all held-out pairs (i < j), scored by cosine similarity.

    ``threshold``: similarity at the equal error rate; accept a pair as "same" when its cosine
    similarity is >= threshold. ``far``/``frr``: false accept / reject rates at that threshold.
    """

    roc_auc: float
    eer: float
    threshold: float
    far: float
    frr: float
    genuine_pairs: int
    impostor_pairs: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def verification_metrics(vectors: np.ndarray, labels: np.ndarray) -> VerificationMetrics:
    """ROC AUC, equal error rate and its threshold for all pairs of ``vectors``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(vectors) < 2 or len(np.unique(labels)) < 2:
        raise InvalidInputError("verification needs at least two vectors of at least two classes")
    sims = cosine_similarity_matrix(vectors)
    iu = np.triu_indices(len(labels), k=1)
    scores = sims[iu]
    same = (labels[:, None] == labels[None, :])[iu]
    auc = float(roc_auc_score(same, scores))
    fpr, tpr, thresholds = roc_curve(same, scores)
    fnr = 1.0 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    threshold = float(min(thresholds[i], 1.0))
    far = float((scores[~same] >= threshold).mean())
    frr = float((scores[same] < threshold).mean())
    return VerificationMetrics(roc_auc=auc, eer=float((fpr[i] + fnr[i]) / 2.0), threshold=threshold,
                               far=far, frr=frr, genuine_pairs=int(same.sum()),
                               impostor_pairs=int((~same).sum()))
