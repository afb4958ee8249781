"""Bayar & Stamm (IH&MMSec 2016), "A deep learning approach to universal image manipulation detection using a
new convolutional layer"; registers ``bayar`` (per frame, like the frame baselines of :mod:`.frame`).

* **The constrained convolutional layer** (``constrained``): 3 filters of 5×5 that are forced to be prediction-error
  filters: the centre weight is −1 and the other 24 weights sum to 1, so the layer outputs the difference between
  a pixel and its prediction from its neighbours (the image content is suppressed, manipulation traces are
  learnt).  The paper enforces it by re-projecting the weights after every optimiser step (centre set to 0, the
  rest divided by their sum, centre set to −1): :meth:`BayarNet.project`, which the train loop calls through the
  spec's ``after_step`` hook after each step (see ``dfsearch.train.loop.train_one_epoch``), and once at init.
  A hook rather than a forward-time reparametrisation, because the paper's update is "SGD step, then project the
  raw weights": a reparametrised weight would get gradients through the projection, a different optimiser.
* **Their CNN**: conv 96 7×7 stride 2 → ReLU → LRN → max-pool 3 stride 2; conv 64 5×5 → ReLU → LRN → max-pool
  3 stride 2; two fully connected layers with ReLU and dropout 0.5; the 2-class head.  Differences, on purpose:
  the input is the RGB face crop (the paper: grayscale patches; FaceForensics++ applied it to face crops), so the
  constrained filters see all three channels, the constraint holding for each (filter, input channel); an adaptive average pool to 6×6 before the first fully connected layer lets any crop size in,
  and the fully connected width is ``model.bayar_fc`` (default 200, the width of the authors' 2018 TIFS
  version; the 2016 paper's 4096 makes a 150 M-parameter layer on a 256² face).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dfsearch.errors import ConfigError
from dfsearch.models.frame import PerFrame
from dfsearch.models.registry import Clip, Cost, DetectorSpec, register


class BayarNet(nn.Module):
    """The constrained conv layer and Bayar & Stamm's CNN: (N, 3, H, W) -> (N, 2)."""

    def __init__(self, num_classes: int = 2, fc: int = 200, dropout: float = 0.5):
        super().__init__()
        self.constrained = nn.Conv2d(3, 3, 5, padding=2, bias=False)
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 7, stride=2, padding=3), nn.ReLU(inplace=True), nn.LocalResponseNorm(5),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(96, 64, 5, padding=2), nn.ReLU(inplace=True), nn.LocalResponseNorm(5),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(),
            nn.Linear(64 * 36, fc), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )
        self.head = nn.Linear(fc, num_classes)
        self.project()

    @torch.no_grad()
    def project(self) -> None:
        """Re-project each constrained filter (for each input channel): centre 0, the rest scaled to sum to 1,
        centre −1.  A filter whose other weights sum to ~0 cannot be scaled; it is re-drawn uniformly first."""
        w = self.constrained.weight  # (out, in, 5, 5)
        c = w.shape[-1] // 2
        w[:, :, c, c] = 0.0
        w.copy_(torch.where(w.sum(dim=(2, 3), keepdim=True).abs() < 1e-8, torch.rand_like(w), w))  # no branch: meta-safe
        w[:, :, c, c] = 0.0
        w.div_(w.sum(dim=(2, 3), keepdim=True))
        w[:, :, c, c] = -1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.constrained(x)))


@dataclass
class BayarConfig:
    """``model.*`` settings of Bayar & Stamm's CNN."""

    bayar_fc: int = 200  # width of the two fully connected layers (2016 paper: 4096; 2018 TIFS version: 200)

    def __post_init__(self):
        if self.bayar_fc <= 0:
            raise ConfigError(f"model.bayar_fc: expected a positive number, got {self.bayar_fc!r}")


def after_step(model: nn.Module) -> None:
    """The train loop's hook after every optimiser step: re-project the constrained filters."""
    model.net.project()


SPEC = register(DetectorSpec(
    name="bayar",
    config=BayarConfig,
    build=lambda cfg, sd=None: PerFrame(BayarNet(2, cfg.model.arch.bayar_fc, 0.5)),
    clip=Clip(clip_len=1, frame_stride=1, crop_size=256),  # a face crop, as the frame baselines
    test_view="frames",
    head="net.head.",
    description="Bayar & Stamm (2016): constrained prediction-error conv layer + CNN, per frame",
    after_step=after_step,
    cost=Cost(gflops=1.75, side=256, tflops=30.0),  # FlopCounterMode at one 256² frame, fc 200
))
