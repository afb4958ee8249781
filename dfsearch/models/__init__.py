"""The detector zoo: one entry, :func:`create`, for every model of the paper's Tables I–VI.

Every model takes a normalised float clip (B, 3, T, H, W) and returns 2-class logits (B, 2):

=================  ================================================================================
``model.name``     model
=================  ================================================================================
resnet3d           Hara's 3D ResNet (:mod:`.resnet3d`), SE / non-local blocks per ``model.placement``
timesformer        TimeSformer joint / divided / space_only (:mod:`.timesformer`)
xception           timm ``legacy_xception``, per frame, logits averaged over T (:mod:`.frame`)
meso4              Meso-4, per frame, averaged
mesoinception4     MesoInception-4, per frame, averaged
=================  ================================================================================

``create`` loads ``model.pretrained`` (see :mod:`.weights`; never downloads) and attaches the outcome as
``model.pretrained_result`` (a :class:`~dfsearch.models.weights.LoadResult`, or None).
Models import no Ray and never print.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from dfsearch.config import TrialConfig, parse_placement
from dfsearch.errors import ConfigError
from dfsearch.models import weights as W
from dfsearch.models.attention import NonLocal3d, SE3d
from dfsearch.models.frame import MesoInception4, Meso4, PerFrame, xception
from dfsearch.models.resnet3d import ResNet3d, blocks_per_stage
from dfsearch.models.timesformer import TimeSformer
from dfsearch.models.weights import LoadResult

__all__ = [
    "create", "build", "input_stats", "complexity", "REGISTRY", "ResNet3d", "TimeSformer", "SE3d", "NonLocal3d",
    "Meso4", "MesoInception4", "PerFrame", "LoadResult", "blocks_per_stage",
]

log = logging.getLogger(__name__)
NUM_CLASSES = 2

# Hara's newer repo (Kinetics-700 files, and the default when training from scratch), 0-1 pixel units.
HARA_MEAN, HARA_STD = (0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737)
# Hara's CVPR-2018 files were trained on 0-255 pixels minus the ActivityNet mean, no std division:
# x_255 - mean_255 == (x - mean_255/255) / (1/255), so in 0-1 units:
HARA2018_MEAN = (114.7748 / 255, 107.7354 / 255, 99.4750 / 255)
HARA2018_STD = (1 / 255, 1 / 255, 1 / 255)
HALF = (0.5, 0.5, 0.5)


# ------------------------------------------------------------------------------------------------ builders


def _build_resnet3d(cfg: TrialConfig, sd: dict | None) -> nn.Module:
    m = cfg.model
    shortcut = m.shortcut
    if shortcut == "auto":
        if sd is not None:
            shortcut = W.hara_shortcut(sd)  # what the checkpoint was trained with
        elif m.pretrained == "kinetics700":
            shortcut = "B"
    placement = parse_placement(m.placement) if m.attention != "none" else []
    return ResNet3d(
        depth=m.depth, num_classes=NUM_CLASSES, shortcut=shortcut, conv1_t_size=m.conv1_t_size,
        conv1_t_stride=m.conv1_t_stride, no_max_pool=m.no_max_pool, widen_factor=m.widen_factor,
        attention=m.attention, placement=placement, se_reduction=m.se_reduction, nl_subsample=m.nl_subsample,
        nl_scale=m.nl_scale, dropout=m.dropout,
    )


def _build_timesformer(cfg: TrialConfig, sd: dict | None) -> nn.Module:
    m, d = cfg.model, cfg.data
    return TimeSformer(
        img_size=d.crop_size, patch_size=m.patch_size, num_frames=d.clip_len, num_classes=NUM_CLASSES,
        space_time=m.space_time, vit_size=m.vit_size, dropout=m.dropout,
    )


def _build_xception(cfg: TrialConfig, sd: dict | None) -> nn.Module:
    return PerFrame(xception(NUM_CLASSES, cfg.model.dropout))


def _build_meso4(cfg: TrialConfig, sd: dict | None) -> nn.Module:
    return PerFrame(Meso4(NUM_CLASSES))


def _build_mesoinception4(cfg: TrialConfig, sd: dict | None) -> nn.Module:
    return PerFrame(MesoInception4(NUM_CLASSES))


# ------------------------------------------------------------------------------------------ weight loaders


def _load_resnet3d(model: ResNet3d, sd: dict, path) -> LoadResult:
    sd, notes = W.map_hara(sd)
    return W.load_into(model, sd, path, model.is_new_key, notes)


def _load_timesformer(model: TimeSformer, sd: dict, path) -> LoadResult:
    if "time_embed" in sd or any(".temporal_" in k for k in sd):  # a TimeSformer checkpoint of our own
        sd, notes = W.strip_prefix(sd)
        sd, more = W.drop_keys(sd, ("head.",), "classifier; replaced by the 2-class head")
        if "time_embed" in sd and "time_embed" in model.state_dict():
            old = sd["time_embed"].shape
            sd["time_embed"] = W.interpolate_time(sd["time_embed"], model.num_frames)
            if sd["time_embed"].shape != old:
                more.append(f"interpolated time_embed {tuple(old)} -> {tuple(sd['time_embed'].shape)}")
        return W.load_into(model, sd, path, model.is_new_key, notes + more)
    sd, notes = W.map_vit_to_timesformer(sd, model)
    return W.load_into(model, sd, path, model.is_new_key, notes)


def _load_frame(head: str) -> Callable:
    def load(model: PerFrame, sd: dict, path) -> LoadResult:
        sd, notes = W.strip_prefix(sd, "net.")  # a checkpoint of our own PerFrame wrapper
        sd, more = W.map_timm_head(sd, head)
        notes += more
        sd = {f"net.{k}": v for k, v in sd.items()}
        return W.load_into(model, sd, path, lambda k: k.startswith(f"net.{head}."), notes)

    return load


# name -> (builder(cfg, state_dict_or_None) -> module, loader(model, state_dict, path) -> LoadResult)
REGISTRY: dict[str, tuple[Callable, Callable]] = {
    "resnet3d": (_build_resnet3d, _load_resnet3d),
    "timesformer": (_build_timesformer, _load_timesformer),
    "xception": (_build_xception, _load_frame("fc")),
    "meso4": (_build_meso4, _load_frame("head.6")),
    "mesoinception4": (_build_mesoinception4, _load_frame("head.6")),
}


def build(cfg: TrialConfig) -> nn.Module:
    """The architecture of ``cfg`` with random init (no weight loading; used by :func:`complexity`)."""
    if cfg.model.name not in REGISTRY:
        raise ConfigError(f"model.name: {cfg.model.name!r} is not one of {', '.join(REGISTRY)}")
    return REGISTRY[cfg.model.name][0](cfg, None)


def create(cfg: TrialConfig) -> nn.Module:
    """Build ``cfg.model`` (2-class head) and load ``cfg.model.pretrained``; the one entry of the zoo.

    Reads ``cfg.model`` and ``cfg.data.clip_len`` / ``cfg.data.crop_size`` (TimeSformer's frames and size).
    Raises ConfigError for an impossible architecture, WeightsError for a missing / corrupt / unfitting
    weights file. The load outcome is ``model.pretrained_result``.
    """
    m = cfg.model
    if m.name not in REGISTRY:
        raise ConfigError(f"model.name: {m.name!r} is not one of {', '.join(REGISTRY)}")
    builder, loader = REGISTRY[m.name]
    path = W.resolve(m.name, m.pretrained, depth=m.depth, vit_size=m.vit_size)
    sd = W.read_state_dict(path) if path is not None else None
    model = builder(cfg, sd)
    result = loader(model, sd, path) if sd is not None else None
    model.pretrained_result = result
    return model


def input_stats(cfg: TrialConfig) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) in 0–1 pixel units matching the model's pretrained weights; use ``(x/255 - mean)/std``.

    * resnet3d + kinetics400 (Hara CVPR-2018 files): that release's own preprocessing — 0–255 pixels
      minus the ActivityNet mean (114.77, 107.74, 99.48), no std division — written in 0–1 units as
      mean/255 and std 1/255.
    * resnet3d otherwise (kinetics700, a path, none): Hara's newer repo, mean (0.4345, 0.4051, 0.3775),
      std (0.2768, 0.2713, 0.2737).
    * timesformer (augreg ViT files) and xception (legacy_xception.tf_in1k): (0.5,)*3 / (0.5,)*3.
    * meso4 / mesoinception4: plain 0–1 scaling, (0,)*3 / (1,)*3 (Afchar et al. rescale by 1/255).
    """
    name, pre = cfg.model.name, cfg.model.pretrained
    if name == "resnet3d":
        return (HARA2018_MEAN, HARA2018_STD) if pre == "kinetics400" else (HARA_MEAN, HARA_STD)
    if name in ("timesformer", "xception"):
        return HALF, HALF
    if name in ("meso4", "mesoinception4"):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    raise ConfigError(f"model.name: {name!r} is not one of {', '.join(REGISTRY)}")


def complexity(model: nn.Module, cfg: TrialConfig, frames: int | None = None, size: int | None = None) -> dict:
    """Parameter count of ``model`` and forward FLOPs for ONE clip of ``cfg.data`` (clip_len × crop_size²).

    FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on a copy of the architecture
    built on the meta device (no memory, no compute); a multiply-add counts as 2 FLOPs (``gmacs`` = half).
    ``frames`` / ``size`` override the clip shape (e.g. a 250-frame test trunk).
    """
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    t = frames or cfg.data.clip_len
    s = size or cfg.data.crop_size
    with torch.device("meta"):
        meta = build(cfg)
    meta.eval()
    x = torch.empty(1, 3, t, s, s, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(x)
    flops = counter.get_total_flops()
    return dict(params=params, trainable=trainable, gflops=flops / 1e9, gmacs=flops / 2e9, input=(3, t, s, s))
