"""The report's statistics: a cell's mean over seeds with its 95 % interval, and Kendall's tau against the paper.

(The Wilson interval of a TCR on N test videos, which the claims decide on, is here too.)  scipy is imported on use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


@dataclass
class Stat:
    mean: float
    ci95: float | None  # half-width of the seeds' 95 % confidence interval (None for one seed)
    n: int  # seeds
    videos: int | None = None  # N: test videos behind each seed's TCR (None: the runs did not log it)


def mean_ci(values: list[float], videos: list[int | None] | None = None) -> Stat:
    n = len(values)
    mean = sum(values) / n
    known = [v for v in (videos or []) if v]
    size = min(known) if known and len(known) == n else None  # one seed without N: N unknown
    if n < 2:
        return Stat(mean, None, n, size)
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Stat(mean, float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n), n, size)


def kendall(pairs: list[tuple[float, float]]) -> float | None:
    """Kendall's tau, None when it is undefined (our values or the paper's all equal)."""
    from scipy.stats import kendalltau

    tau = kendalltau([a for a, _ in pairs], [b for _, b in pairs]).statistic
    return float(tau) if tau == tau else None


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``p`` (0-1) observed on ``n`` trials."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n)))
    return max(0.0, centre - half), min(1.0, centre + half)
