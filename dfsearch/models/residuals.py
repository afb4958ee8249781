"""Residual-based forensic features shared by :mod:`.cozzolino` and :mod:`.steg_svm` (registers nothing).

Steganalysis rich models (Fridrich & Kodovský, TIFS 2012) describe an image by the statistics of its noise
residuals: a high-pass filter predicts each pixel from its neighbours, the residual (prediction error) is
quantised by a step ``q`` and truncated to ``[-T, T]``, and the joint histogram (co-occurrence) of ``order``
neighbouring residual values along a row (horizontal scan) or a column (vertical scan) is the feature.  With
``T = 2`` a value takes 5 levels and a 4th-order co-occurrence has 5**4 = 625 bins.

All of it runs on the luma of a face crop in 0–255 units (the residuals' ``q`` are in those units), computed from
the normalised input the train loop feeds a model (:func:`luma255` undoes the normalisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Residual kernels (prediction errors), in the orientation of a horizontal scan; a vertical scan uses the transpose.
# name -> (kernel, q): SRM's linear residuals of order 1, 2, 3, and its 3x3 / 5x5 "SQUARE" and 3x3 "EDGE" kernels;
# q = the residual's order c for the 1-D ones (SRM quantises with q in {c, 1.5c, 2c}), 2 for the 2-D ones.
KERNELS: dict[str, tuple[list[list[float]], float]] = {
    "first": ([[1.0, -1.0]], 1.0),
    "second": ([[1.0, -2.0, 1.0]], 2.0),
    "third": ([[-1.0, 3.0, -3.0, 1.0]], 3.0),
    "square3": ([[-0.25, 0.5, -0.25], [0.5, -1.0, 0.5], [-0.25, 0.5, -0.25]], 2.0),
    "edge3": ([[-0.25, 0.5, -0.25], [0.5, -1.0, 0.5], [0.0, 0.0, 0.0]], 2.0),
    "square5": ([[-1 / 12, 2 / 12, -2 / 12, 2 / 12, -1 / 12], [2 / 12, -6 / 12, 8 / 12, -6 / 12, 2 / 12],
                 [-2 / 12, 8 / 12, -1.0, 8 / 12, -2 / 12], [2 / 12, -6 / 12, 8 / 12, -6 / 12, 2 / 12],
                 [-1 / 12, 2 / 12, -2 / 12, 2 / 12, -1 / 12]], 2.0),
}
LUMA = (0.299, 0.587, 0.114)


def luma255(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalised RGB (N, 3, H, W) -> luma (N, 1, H, W) in 0–255 units, given the normalisation's (3,) mean/std."""
    rgb = x * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return 255.0 * (rgb * w).sum(1, keepdim=True)


def kernel_bank(names: list[str], vertical: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights (K, 1, k, k), q (K,)) for ``names``, each kernel zero-padded to the largest odd square, centred."""
    size = max(max(len(KERNELS[n][0]), len(KERNELS[n][0][0])) for n in names)
    size += 1 - size % 2
    bank = torch.zeros(len(names), 1, size, size)
    for i, n in enumerate(names):
        k = torch.tensor(KERNELS[n][0])
        if vertical:
            k = k.T
        h, w = k.shape
        y, x = (size - h) // 2, (size - w) // 2
        bank[i, 0, y : y + h, x : x + w] = k
    return bank, torch.tensor([KERNELS[n][1] for n in names])


def residuals(y: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Luma (N, 1, H, W) -> residuals (N, K, H', W') (valid convolution: no padding artefacts at the border)."""
    return F.conv2d(y, bank)


def cooccurrence(codes: torch.Tensor, levels: int, order: int, vertical: bool) -> torch.Tensor:
    """Normalised histograms (N, K, levels**order) of ``order`` consecutive codes (integers in [0, levels)) of
    (N, K, H, W) along rows (or columns when ``vertical``)."""
    if vertical:
        codes = codes.transpose(2, 3)
    w = codes.shape[-1] - order + 1
    idx = torch.zeros_like(codes[..., :w])
    for j in range(order):
        idx = idx * levels + codes[..., j : j + w]
    n, k = idx.shape[:2]
    bins = levels**order
    flat = idx.reshape(n * k, -1) + torch.arange(n * k, device=idx.device)[:, None] * bins
    hist = torch.bincount(flat.reshape(-1), minlength=n * k * bins).reshape(n, k, bins).float()
    return hist / hist.sum(-1, keepdim=True).clamp_min(1.0)


def quantise(r: torch.Tensor, q: torch.Tensor, t: int) -> torch.Tensor:
    """round(r / q) truncated to [-t, t], as codes 0 .. 2t (per-channel q of shape (K,))."""
    return (torch.round(r / q.view(1, -1, 1, 1)).clamp(-t, t) + t).long()


def soft_levels(r: torch.Tensor, q: torch.Tensor, t: int) -> torch.Tensor:
    """Differentiable quantisation and truncation: (N, K, H, W) -> memberships (N, K, 2t+1, H, W) of r/q (clamped to
    [-t, t]) in each level, triangular (1 at the level, 0 one step away), summing to 1 over the levels."""
    v = (r / q.view(1, -1, 1, 1)).clamp(-t, t)
    levels = torch.arange(-t, t + 1, dtype=r.dtype, device=r.device).view(1, 1, -1, 1, 1)
    return F.relu(1.0 - (v.unsqueeze(2) - levels).abs())


def soft_cooccurrence(m: torch.Tensor, order: int, vertical: bool) -> torch.Tensor:
    """Soft co-occurrence histograms (N, K, L**order) from memberships (N, K, L, H, W): the mean over positions of
    the product of the memberships of ``order`` consecutive values (the hard histogram when memberships are one-hot)."""
    if vertical:
        m = m.transpose(3, 4)
    n, k, lv, h, w = m.shape
    w = w - order + 1
    parts = [m[..., j : j + w].reshape(n, k, lv, h * w) for j in range(order)]
    joint = parts[0]
    for p in parts[1:-1]:  # (N, K, L^j, P) x (N, K, L, P) -> (N, K, L^(j+1), P)
        joint = (joint.unsqueeze(3) * p.unsqueeze(2)).reshape(n, k, -1, h * w)
    hist = torch.einsum("nkap,nkbp->nkab", joint, parts[-1]).reshape(n, k, -1)
    return hist / (h * w)
