"""Cozzolino, Poggi & Verdoliva (IH&MMSec 2017), "Recasting residual-based local descriptors as convolutional neural
networks: an application to image forgery detection"; registers ``cozzolino`` (per frame, like :mod:`.frame`).

The hand-crafted rich-model descriptor written as network layers (:mod:`.residuals`), then a trained classifier:

1. **residual**: a fixed convolution with the 3rd-order linear high-pass filter ``[-1, 3, -3, 1]``, along rows and
   along columns, on the face crop's luma (0–255 units);
2. **quantisation and truncation as an activation**: r/q clamped to [-T, T] (q = ``model.cozzolino_q``, T = 2) and
   encoded by triangular memberships of the 5 levels (a differentiable round, the paper's recast of the hard
   quantiser; equal to it on integer values);
3. **co-occurrence histogram**: the mean over positions of the product of the memberships of 4 consecutive residuals
   along the scan (5^4 = 625 bins), for the horizontal and the vertical scan: 1,250 features;
4. **classifier**: signed square root (the descriptor's power normalisation), batch norm, a fully connected layer of
   256 units with ReLU and dropout 0.5, the 2-class head; trained by the train loop like any detector (the paper
   fine-tunes the recast network on the task; the descriptor's own filters and q stay fixed here: they are
   buffers, not parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dfsearch.errors import ConfigError
from dfsearch.models import residuals as R
from dfsearch.models.frame import PerFrame
from dfsearch.models.registry import Clip, Cost, DetectorSpec, register

T, ORDER = 2, 4


class CozzolinoNet(nn.Module):
    def __init__(self, mean, std, q: float = 1.0, num_classes: int = 2, hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        h, _ = R.kernel_bank(["third"])
        v, _ = R.kernel_bank(["third"], vertical=True)
        self.register_buffer("kernel_h", h)
        self.register_buffer("kernel_v", v)
        self.register_buffer("q", torch.tensor([float(q)]))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.features_dim = 2 * (2 * T + 1) ** ORDER
        self.classifier = nn.Sequential(nn.BatchNorm1d(self.features_dim), nn.Linear(self.features_dim, hidden), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_classes)

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, 1250) co-occurrence histograms (horizontal, vertical)."""
        y = R.luma255(x, self.mean, self.std)
        out = []
        for kernel, vertical in ((self.kernel_h, False), (self.kernel_v, True)):
            m = R.soft_levels(R.residuals(y, kernel), self.q, T)
            out.append(R.soft_cooccurrence(m, ORDER, vertical).flatten(1))
        return torch.cat(out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.descriptor(x)
        return self.head(self.classifier(f.sign() * f.abs().sqrt()))


@dataclass
class CozzolinoConfig:
    """``model.*`` settings of Cozzolino et al.'s recast descriptor."""

    cozzolino_q: float = 1.0  # quantisation step of the residual (0-255 units)

    def __post_init__(self):
        if self.cozzolino_q <= 0:
            raise ConfigError(f"model.cozzolino_q: expected a positive number, got {self.cozzolino_q!r}")


def build(cfg, sd=None) -> PerFrame:
    from dfsearch.models import registry

    mean, std = registry.get("cozzolino").input_stats(cfg.model.pretrained)
    return PerFrame(CozzolinoNet(mean, std, cfg.model.arch.cozzolino_q))


SPEC = register(DetectorSpec(
    name="cozzolino",
    config=CozzolinoConfig,
    build=build,
    clip=Clip(clip_len=1, frame_stride=1, crop_size=256),
    test_view="frames",
    head="net.head.",
    description="Cozzolino et al. (2017): residual co-occurrence descriptor recast as a CNN, per frame",
    cost=Cost(gflops=0.16, side=256, tflops=5.0),  # FlopCounterMode at one 256² frame; memory-bound elementwise work: a low TFLOP/s
))
