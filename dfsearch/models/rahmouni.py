"""Rahmouni, Nozick, Yamagishi & Echizen (WIFS 2017), "Distinguishing computer graphics from natural images using
convolution neural networks"; registers ``rahmouni`` (per frame, like the frame baselines of :mod:`.frame`).

* **Filtering**: ``model.rahmouni_layers`` convolution layers of 32 filters 3×3 with ReLU (the paper compares 1 to
  3; FaceForensics++ used the best, which we take as the default: 2).
* **The statistical pooling layer** (:class:`StatPool`): for every filter output, four statistics over the whole
  image: mean, variance, maximum and minimum, so 4 × 32 numbers whatever the input size.
* **Classification**: a fully connected layer of 1024 units with ReLU and dropout 0.5, then the 2-class head.
Differences, on purpose: RGB face crops (the paper: the luma of 100×100 patches, patch scores aggregated per image;
here the face crop is the patch and the video averages the frames), 2 logits instead of a sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dfsearch.errors import ConfigError
from dfsearch.models.frame import PerFrame
from dfsearch.models.registry import Clip, Cost, DetectorSpec, register


class StatPool(nn.Module):
    """(N, C, H, W) -> (N, 4C): per channel [mean, variance, max, min] over H x W (stats grouped, C each)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        return torch.cat([flat.mean(-1), flat.var(-1, unbiased=False), flat.amax(-1), flat.amin(-1)], dim=1)


class RahmouniNet(nn.Module):
    def __init__(self, num_classes: int = 2, layers: int = 2, filters: int = 32, hidden: int = 1024, dropout: float = 0.5):
        super().__init__()
        convs: list[nn.Module] = []
        for i in range(layers):
            convs += [nn.Conv2d(3 if i == 0 else filters, filters, 3, padding=1), nn.ReLU(inplace=True)]
        self.filters = nn.Sequential(*convs)
        self.pool = StatPool()
        self.mlp = nn.Sequential(nn.Linear(4 * filters, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(self.pool(self.filters(x))))


@dataclass
class RahmouniConfig:
    """``model.*`` settings of Rahmouni et al.'s CNN."""

    rahmouni_layers: int = 2  # convolution layers before the statistical pooling (the paper: 1-3)

    def __post_init__(self):
        if self.rahmouni_layers not in (1, 2, 3):
            raise ConfigError(f"model.rahmouni_layers: {self.rahmouni_layers!r} is not one of 1, 2, 3")


SPEC = register(DetectorSpec(
    name="rahmouni",
    config=RahmouniConfig,
    build=lambda cfg, sd=None: PerFrame(RahmouniNet(2, cfg.model.arch.rahmouni_layers, dropout=0.5)),
    clip=Clip(clip_len=1, frame_stride=1, crop_size=256),
    test_view="frames",
    head="net.head.",
    description="Rahmouni et al. (2017): conv filters + statistical pooling (mean, variance, max, min), per frame",
    cost=Cost(gflops=1.32, side=256, tflops=30.0),  # FlopCounterMode at one 256² frame, 2 layers
))
