"""Video-level metrics: TCR (the paper's true classification rate = accuracy) and ROC AUC.

Scores are the probability of "fake" (label 1), one per video, already averaged over its views.
"""

from __future__ import annotations

import numpy as np


def tcr(scores, labels, threshold: float = 0.5) -> float:
    """True classification rate in percent, as the paper reports it."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    if len(scores) == 0:
        return float("nan")
    return float(100.0 * np.mean((scores >= threshold).astype(int) == labels))


def auc(scores, labels) -> float:
    """ROC AUC: the chance that a random fake video scores above a random real one, ties counting half (the
    Mann-Whitney U statistic over midranks).  Equal to ``sklearn.metrics.roc_auc_score``, which
    ``tests/test_train.py`` checks, without the ~1.2 s import of scikit-learn that every trial's fresh Ray worker
    paid before its first validation.  NaN when only one class is present or a score is NaN (a diverged model)."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    n_fake = int(labels.sum())
    n_real = len(labels) - n_fake
    if n_fake == 0 or n_real == 0 or np.isnan(scores).any():
        return float("nan")
    # Midranks, 1-based: a group of equal scores shares the mean of the positions it spans in sorted order.
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    ranks = (last - (counts - 1) / 2.0)[group.ravel()]
    return float((ranks[labels == 1].sum() - n_fake * (n_fake + 1) / 2.0) / (n_fake * n_real))


def summarize(scores, labels, prefix: str) -> dict[str, float]:
    labels = np.asarray(labels, dtype=int)
    return {
        f"{prefix}/tcr": tcr(scores, labels),
        f"{prefix}/auc": auc(scores, labels),
        f"{prefix}/tcr_real": tcr(np.asarray(scores)[labels == 0], labels[labels == 0]),
        f"{prefix}/tcr_fake": tcr(np.asarray(scores)[labels == 1], labels[labels == 1]),
        f"{prefix}/videos": float(len(labels)),
        f"{prefix}/videos_fake": float(labels.sum()),  # each class's N: the report's intervals of a balanced TCR and an AUC
    }
