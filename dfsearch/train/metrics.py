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
    """ROC AUC (``sklearn.metrics.roc_auc_score``, ties count half); NaN when only one class is present or a
    score is NaN (a diverged model), where sklearn would raise."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2 or np.isnan(scores).any():
        return float("nan")
    from sklearn.metrics import roc_auc_score  # ~1 s to import: only when a split is scored, not at trial start

    return float(roc_auc_score(labels, scores))


def summarize(scores, labels, prefix: str) -> dict[str, float]:
    labels = np.asarray(labels, dtype=int)
    return {
        f"{prefix}/tcr": tcr(scores, labels),
        f"{prefix}/auc": auc(scores, labels),
        f"{prefix}/tcr_real": tcr(np.asarray(scores)[labels == 0], labels[labels == 0]),
        f"{prefix}/tcr_fake": tcr(np.asarray(scores)[labels == 1], labels[labels == 1]),
        f"{prefix}/videos": float(len(labels)),
    }
