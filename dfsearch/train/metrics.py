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
    """ROC AUC by the rank-sum (Mann-Whitney) formula, with ties shared; NaN when only one class is present."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=float)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def summarize(scores, labels, prefix: str) -> dict[str, float]:
    labels = np.asarray(labels, dtype=int)
    return {
        f"{prefix}/tcr": tcr(scores, labels),
        f"{prefix}/auc": auc(scores, labels),
        f"{prefix}/tcr_real": tcr(np.asarray(scores)[labels == 0], labels[labels == 0]),
        f"{prefix}/tcr_fake": tcr(np.asarray(scores)[labels == 1], labels[labels == 1]),
        f"{prefix}/videos": float(len(labels)),
    }
