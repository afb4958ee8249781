"""Attention blocks inserted after 3D ResNet stages (paper section III).

* :class:`SE3d` — squeeze-and-excitation (Hu et al. 2018; paper eq. 1–3): global average pool over
  (T, H, W) → FC C→C/r → ReLU → FC C/r→C → sigmoid → channel-wise rescale of the input.  By default
  (``init="identity"``) the gate is 2·sigmoid with the second FC zeroed, so a fresh block is the identity, as
  a fresh non-local block is: placed after a pretrained stage, Hu et al.'s gate at PyTorch's default init
  (``init="hu2018"``) starts near 0.5 and so halves the stage's output, once per block.
* :class:`NonLocal3d` — embedded-Gaussian non-local block (Wang et al. 2018; paper eq. 4–5):
  θ, φ, g are 1×1×1 convs to C/2, softmax(θᵀφ) over all space-time positions weights g, an output 1×1×1
  conv + BN (γ initialised to zero) maps back to C and the result is added to the input (residual), so a
  fresh block is the identity.

The non-local product is computed with :func:`torch.nn.functional.scaled_dot_product_attention` (one head,
explicit ``scale``: 1.0 for Wang et al.'s unscaled dot product, 1/√(C/2) with ``scale=True``), which picks
a fused kernel whose memory is linear in the number of positions N (N = 8·28·28 = 6,272 after stage 1 of a
16×112² clip). A naive N×N reference lives in :mod:`dfsearch.bench.models` (tests and bench only).

Both are plain ``nn.Module`` s; every parameter is used in ``forward`` (safe under DDP).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


SE_INITS = ("identity", "hu2018")


class SE3d(nn.Module):
    """Squeeze-excitation over a (B, C, T, H, W) feature map; ``reduction`` is r in paper eq. 2.

    ``init``: "identity" (gate 2·σ(·), W2 and its bias zeroed: every channel's scale starts at exactly 1) or
    "hu2018" (gate σ(·), PyTorch's default init: scales start near 0.5).  On the synthetic twin of Table IV, SE
    after stages 1-4 of the pretext-pretrained smoke 3D ResNet reached test TCR 100 on NeuralTextures in 5 epochs
    on seeds 1-10 with "identity"; with "hu2018" on 8 of them (seed 1: TCR 50, AUC 0.63; seed 3: TCR 75).
    """

    def __init__(self, channels: int, reduction: int = 16, init: str = "identity"):
        super().__init__()
        if init not in SE_INITS:
            raise ValueError(f"SE init {init!r} is not one of {', '.join(SE_INITS)}")
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)  # W1 (paper eq. 2)
        self.fc2 = nn.Linear(hidden, channels)  # W2
        self.channels, self.reduction, self.init = channels, reduction, init
        self.gain = 2.0 if init == "identity" else 1.0  # 2·σ(0) = 1
        if init == "identity":
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, C) channel weights this block applies to ``x``: in (0, 1) for hu2018, (0, 2) for identity."""
        s = x.mean(dim=(2, 3, 4))  # squeeze, eq. 1
        return self.gain * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))  # excitation, eq. 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None, None]  # re-scale, eq. 3

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, init={self.init}"


class NonLocal3d(nn.Module):
    """Embedded-Gaussian non-local block with residual and zero-initialised output BN.

    Args:
        channels: C of the input (and output).
        inner: width of θ/φ/g (default C/2, as Wang et al.).
        subsample: max-pool φ and g by 2 in H and W (Wang et al.'s option; N×N → N×N/4).
        scale: multiply θᵀφ by 1/√inner (Vaswani-style); False is Wang et al.'s embedded Gaussian.
    """

    def __init__(self, channels: int, inner: int | None = None, subsample: bool = False, scale: bool = False):
        super().__init__()
        inner = inner or max(1, channels // 2)
        self.channels, self.inner, self.subsample, self.use_scale = channels, inner, subsample, scale
        self.theta = nn.Conv3d(channels, inner, kernel_size=1)
        self.phi = nn.Conv3d(channels, inner, kernel_size=1)
        self.g = nn.Conv3d(channels, inner, kernel_size=1)
        self.out = nn.Conv3d(inner, channels, kernel_size=1, bias=False)  # W_z (paper eq. 5)
        self.bn = nn.BatchNorm3d(channels)
        self.pool = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2)) if subsample else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.theta, self.phi, self.g, self.out):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.bn.weight)  # γ = 0: the block starts as the identity
        nn.init.zeros_(self.bn.bias)

    @property
    def softmax_scale(self) -> float:
        return 1.0 / math.sqrt(self.inner) if self.use_scale else 1.0

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """θ, φ, g as (B, 1, N, inner) / (B, 1, M, inner) sequences (M = N, or N/4 when subsampled)."""
        kv_in = self.pool(x) if self.pool is not None else x
        # contiguous (B, 1, N, d): the fused CPU/CUDA kernels need unit stride on the last dim, else SDPA
        # silently falls back to the N×N math path (free for a channels_last_3d input: already that layout)
        seq = lambda conv, inp: rearrange(conv(inp), "b c t h w -> b 1 (t h w) c").contiguous()  # noqa: E731
        return seq(self.theta, x), seq(self.phi, kv_in), seq(self.g, kv_in)

    def project(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, N, inner) attention output → W_z → BN → + x."""
        t, h, w = x.shape[2:]
        return x + self.bn(self.out(rearrange(y, "b 1 (t h w) c -> b c t h w", t=t, h=h, w=w)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x)
        y = F.scaled_dot_product_attention(q, k, v, scale=self.softmax_scale)
        return self.project(y, x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, inner={self.inner}, subsample={self.subsample}, scale={self.use_scale}"
