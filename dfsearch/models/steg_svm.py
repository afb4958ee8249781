"""Steganalysis features + linear SVM (Fridrich & Kodovský, TIFS 2012, "Rich models for steganalysis of digital
images"), the FaceForensics++ baseline; registers ``steg_svm`` (per frame, like :mod:`.frame`).

* **Features** (:mod:`.residuals`): six residuals of the spatial rich model (SRM) on the face crop's luma: the 1st-,
  2nd- and 3rd-order linear residuals and the 3×3 SQUARE, 3×3 EDGE and 5×5 SQUARE kernels, each quantised with
  its q and truncated to T = 2, then the 4th-order co-occurrence along rows plus the one along columns (SRM merges
  the two scans): 6 × 625 = 3,750 features per frame.  A subset of the full SRM (34,671 features, 39 residuals,
  several q each), chosen to stay a few seconds per thousand frames on a CPU; the kernels and the recipe are SRM's.
* **Classifier**: scikit-learn's ``LinearSVC`` (C = ``model.svm_c``) on standardised features.
* **Fit in one pass** (``DetectorSpec.one_pass``): the train loop draws ``model.svm_frames`` random frames of each
  training video (one per pass over the videos, with the training crop and flip), computes their features and
  fits once; the config's ``train.epochs`` is always 1 (another value, e.g. a sweep's ``--set train.epochs=3`` for
  its SGD models, is canonicalised to 1 by :func:`dfsearch.config.validate`).  The fitted standardisation and
  hyperplane are buffers of the module, so the checkpoint, validation, test and ``predict`` are those of any
  detector: a frame's logits are (−d/2, d/2) with d the SVM's decision value, so P(fake) = sigmoid(d) and the 0.5
  threshold is the SVM's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dfsearch.errors import ConfigError
from dfsearch.models import residuals as R
from dfsearch.models.frame import PerFrame
from dfsearch.models.registry import Clip, Cost, DetectorSpec, OnePassFit, register

T, ORDER = 2, 4
RESIDUALS = ["first", "second", "third", "square3", "edge3", "square5"]


class SRMSVM(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        h, q = R.kernel_bank(RESIDUALS)
        v, _ = R.kernel_bank(RESIDUALS, vertical=True)
        self.register_buffer("kernel_h", h)
        self.register_buffer("kernel_v", v)
        self.register_buffer("q", q)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.features_dim = len(RESIDUALS) * (2 * T + 1) ** ORDER
        # the fitted model: standardisation, then the hyperplane (zero until fitted: every frame scores 0.5)
        self.register_buffer("feat_mean", torch.zeros(self.features_dim))
        self.register_buffer("feat_scale", torch.ones(self.features_dim))
        # the hyperplane: parameters (what the model has that was fitted), never trained by SGD
        self.coef = nn.Parameter(torch.zeros(self.features_dim), requires_grad=False)
        self.intercept = nn.Parameter(torch.zeros(()), requires_grad=False)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, 3750) SRM co-occurrence features (row scan + column scan)."""
        y = R.luma255(x.float(), self.mean, self.std)
        hist = 0
        for kernel, vertical in ((self.kernel_h, False), (self.kernel_v, True)):
            codes = R.quantise(R.residuals(y, kernel), self.q, T)
            hist = hist + R.cooccurrence(codes, 2 * T + 1, ORDER, vertical)
        return (hist / 2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = ((self.features(x) - self.feat_mean) / self.feat_scale) @ self.coef + self.intercept
        return torch.stack([-d / 2, d / 2], dim=1)


@dataclass
class StegSVMConfig:
    """``model.*`` settings of the SRM + linear SVM baseline."""

    svm_c: float = 0.01  # LinearSVC's C (features standardised)
    svm_frames: int = 16  # random frames per training video the SVM is fitted on

    def __post_init__(self):
        if self.svm_c <= 0:
            raise ConfigError(f"model.svm_c: expected a positive number, got {self.svm_c!r}")
        if self.svm_frames <= 0:
            raise ConfigError(f"model.svm_frames: expected a positive number, got {self.svm_frames!r}")


def fit(model: PerFrame, batches, cfg) -> dict[str, float]:
    """Features of every training frame of ``batches`` ((normalised clips (B, 3, 1, H, W), labels) pairs), then the
    SVM; writes the fitted standardisation and hyperplane into the model."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    net: SRMSVM = model.net
    t0 = time.monotonic()
    feats, labels = [], []
    for x, y in batches:
        feats.append(net.features(x.flatten(0, 1) if x.dim() == 4 else x.transpose(1, 2).flatten(0, 1)).cpu().numpy())
        labels.append(np.repeat(y.cpu().numpy(), x.shape[2] if x.dim() == 5 else 1))
    X, Y = np.concatenate(feats), np.concatenate(labels)
    t1 = time.monotonic()
    scaler = StandardScaler().fit(X)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    # balanced classes: the 4:1 imbalance of protocol `all` weighs like the loop's weighted cross-entropy
    svm = LinearSVC(C=cfg.model.arch.svm_c, class_weight="balanced" if cfg.protocol.weighted_loss else None, random_state=cfg.train.seed,
                    max_iter=5000, dual="auto")
    svm.fit((X - scaler.mean_) / scale, Y)
    dev = net.coef.device
    net.feat_mean.copy_(torch.as_tensor(scaler.mean_, dtype=torch.float32, device=dev))
    net.feat_scale.copy_(torch.as_tensor(scale, dtype=torch.float32, device=dev))
    net.coef.copy_(torch.as_tensor(svm.coef_[0], dtype=torch.float32, device=dev))
    net.intercept.fill_(float(svm.intercept_[0]))
    return {"train/acc": 100.0 * float(svm.score((X - scaler.mean_) / scale, Y)), "train/frames": float(len(Y)),
            "train/features": float(X.shape[1]), "time/features_s": t1 - t0, "time/fit_s": time.monotonic() - t1}


def build(cfg, sd=None) -> PerFrame:
    from dfsearch.models import registry

    mean, std = registry.get("steg_svm").input_stats(cfg.model.pretrained)
    return PerFrame(SRMSVM(mean, std))


SPEC = register(DetectorSpec(
    name="steg_svm",
    config=StegSVMConfig,
    build=build,
    clip=Clip(clip_len=1, frame_stride=1, crop_size=256),
    test_view="frames",
    description="Steganalysis rich-model (SRM) features + linear SVM (Fridrich & Kodovsky 2012), per frame",
    one_pass=OnePassFit(fit, frames_key="svm_frames"),
    # features: 12 small convolutions and histograms of one 256² frame; no backward pass.  A training "epoch" is
    # svm_frames frames of each video, which the estimate does not model (it prices one frame per video per epoch).
    cost=Cost(gflops=0.05, side=256, tflops=1.0),
    smoke={"data.crop_size": 64, "train.epochs": 1, "model.svm_frames": 8, "eval.batch_size": 32},
))
