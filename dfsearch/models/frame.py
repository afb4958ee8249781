"""Frame baselines of Tables I / IV: XceptionNet (timm) and MesoNet (Meso4, MesoInception4); registers
``xception``, ``meso4`` and ``mesoinception4`` (tested frame by frame: ``test_view="frames"``).

Each frame model scores single frames; :class:`PerFrame` folds T into the batch and returns the mean of
the per-frame logits over T, so a clip (or a whole trunk of frames) gets its video-level average:
(B, 3, T, H, W) → (B, 2).

* XceptionNet: ``timm.create_model('legacy_xception')`` — Chollet's Xception as ported by Cadene, the
  network FaceForensics++ used (ImageNet weights: ``legacy_xception.tf_in1k``); never built with
  ``pretrained=True`` (no downloads): weights come from :mod:`dfsearch.models.weights`.
* MesoNet after Afchar et al. (WIFS 2018, DariusAf/MesoNet ``classifiers.py``): Keras order conv(+bias) →
  ReLU → BN → max-pool; head Flatten → Dropout(0.5) → Dense(16) → LeakyReLU(0.1) → Dropout(0.5) →
  Dense. Differences from the Keras original, on purpose: the last Dense has 2 logits (not 1 sigmoid) to
  fit the 2-class contract, and an adaptive average pool to 8×8 before Flatten lets any input size in
  (at the original 256×256 input the feature map is already 8×8, so it is the identity there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, reduce
from torch import nn

from dfsearch.models import weights as W
from dfsearch.models.registry import Clip, Cost, DetectorSpec, Weights, register


class PerFrame(nn.Module):
    """Wrap a 2D classifier ``net`` ((N, 3, H, W) → (N, C)) for clips: mean of per-frame logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(rearrange(x, "b c t h w -> (b t) c h w"))
        return reduce(logits, "(b t) k -> b k", "mean", b=x.shape[0])


def _conv_relu_bn(cin: int, cout: int, k: int, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation), nn.ReLU(inplace=True), nn.BatchNorm2d(cout)]


class _MesoHead(nn.Sequential):
    def __init__(self, channels: int = 16, num_classes: int = 2, dropout: float = 0.5):
        super().__init__(
            nn.AdaptiveAvgPool2d((8, 8)), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels * 64, 16),
            nn.LeakyReLU(0.1), nn.Dropout(dropout), nn.Linear(16, num_classes),
        )


class Meso4(nn.Module):
    """Meso-4 (Afchar et al. 2018): 4 conv blocks (8, 8, 16, 16 channels; 3×3, 5×5, 5×5, 5×5)."""

    def __init__(self, num_classes: int = 2, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_relu_bn(3, 8, 3), nn.MaxPool2d(2, 2, ceil_mode=True),
            *_conv_relu_bn(8, 8, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
            *_conv_relu_bn(8, 16, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
            *_conv_relu_bn(16, 16, 5), nn.MaxPool2d(4, 4, ceil_mode=True),
        )
        self.head = _MesoHead(16, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class InceptionLayer(nn.Module):
    """MesoInception's inception module: 1×1 | 1×1→3×3 | 1×1→3×3 dil 2 | 1×1→3×3 dil 3, concatenated."""

    def __init__(self, cin: int, a: int, b: int, c: int, d: int):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, a, 1), nn.ReLU(inplace=True))
        self.b2 = nn.Sequential(nn.Conv2d(cin, b, 1), nn.ReLU(inplace=True), nn.Conv2d(b, b, 3, padding=1), nn.ReLU(inplace=True))
        self.b3 = nn.Sequential(nn.Conv2d(cin, c, 1), nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, padding=2, dilation=2), nn.ReLU(inplace=True))
        self.b4 = nn.Sequential(nn.Conv2d(cin, d, 1), nn.ReLU(inplace=True), nn.Conv2d(d, d, 3, padding=3, dilation=3), nn.ReLU(inplace=True))
        self.out_channels = a + b + c + d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.b1(x), self.b2(x), self.b3(x), self.b4(x)), dim=1)


class MesoInception4(nn.Module):
    """MesoInception-4 (Afchar et al. 2018): inception(1,4,4,2), inception(2,4,4,2), conv 16 5×5 ×2."""

    def __init__(self, num_classes: int = 2, dropout: float = 0.5):
        super().__init__()
        inc1 = InceptionLayer(3, 1, 4, 4, 2)
        inc2 = InceptionLayer(inc1.out_channels, 2, 4, 4, 2)
        self.features = nn.Sequential(
            inc1, nn.BatchNorm2d(inc1.out_channels), nn.MaxPool2d(2, 2, ceil_mode=True),
            inc2, nn.BatchNorm2d(inc2.out_channels), nn.MaxPool2d(2, 2, ceil_mode=True),
            *_conv_relu_bn(inc2.out_channels, 16, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
            *_conv_relu_bn(16, 16, 5), nn.MaxPool2d(4, 4, ceil_mode=True),
        )
        self.head = _MesoHead(16, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def xception(num_classes: int = 2, dropout: float = 0.0) -> nn.Module:
    """timm's ``legacy_xception`` with a ``num_classes`` head (random init; weights loaded separately)."""
    import timm  # only when the model is built (keeps the trial driver light)

    return timm.create_model("legacy_xception", pretrained=False, num_classes=num_classes, drop_rate=dropout)


# ------------------------------------------------------------------------------------ the detector specs


@dataclass
class FrameConfig:
    """The frame baselines have no settings of their own beyond model.name / pretrained / dropout."""


def _load_into_net(head: str):
    """Load a 2D classifier checkpoint (timm names, or our own ``net.``-prefixed PerFrame) with a new head."""

    def load(model: PerFrame, sd: dict, path) -> W.LoadResult:
        sd, notes = W.strip_prefix(sd, "net.")  # a checkpoint of our own PerFrame wrapper
        sd, more = W.map_timm_head(sd, head)
        sd = {f"net.{k}": v for k, v in sd.items()}
        return W.load_into(model, sd, path, lambda k: k.startswith(f"net.{head}."), notes + more)

    return load


HALF = (0.5, 0.5, 0.5)

register(DetectorSpec(
    name="xception",
    config=FrameConfig,
    build=lambda cfg, sd=None: PerFrame(xception(2, cfg.model.dropout)),
    load=_load_into_net("fc"),
    clip=Clip(clip_len=1, frame_stride=1, crop_size=299),
    test_view="frames",
    mean=HALF, std=HALF,
    weights={"imagenet": Weights("legacy_xception.tf_in1k.safetensors", "https://huggingface.co/timm/{stem} (file model.safetensors)")},
    head="net.fc.",
    description="XceptionNet (timm legacy_xception, as FaceForensics++), per frame",
    cost=Cost(gflops=16.7, side=299, tflops=30.0),  # an H200 trained it at 31.4 TFLOP/s (AMP bf16, batch 32)
    # --smoke: Xception is 21 M parameters whatever the input: a 32-px crop keeps an epoch (15 steps, then scoring
    # 320 validation frames) near 8 s of one core
    smoke={"data.crop_size": 32, "train.batch_size": 8, "train.epochs": 5, "optim.lr": 1.0e-3, "eval.batch_size": 32,
           "eval.val_frames": 8},  # validation on 8 of 32 frames a video, as SMOKE_FRAME
))

for _name, _cls, _gflops in (("meso4", Meso4, 0.1), ("mesoinception4", MesoInception4, 0.2)):
    register(DetectorSpec(
        name=_name,
        config=FrameConfig,
        build=lambda cfg, sd=None, _cls=_cls: PerFrame(_cls(2)),
        load=_load_into_net("head.6"),
        clip=Clip(clip_len=1, frame_stride=1, crop_size=256),  # Afchar et al.: 256 x 256 faces
        test_view="frames",
        # Afchar et al. rescale pixels by 1/255: the default mean 0 / std 1 in 0-1 units
        head="net.head.6.",
        description=f"{_cls.__name__} (Afchar et al. 2018), per frame",
        cost=Cost(gflops=_gflops, side=256, tflops=30.0),
        # --smoke: dfsearch.sweeps' per-frame default budget (64-px crops, 8 epochs)
    ))
