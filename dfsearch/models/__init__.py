"""The detector zoo: :func:`create` builds any registered detector (:mod:`.registry`) for a trial config.

Every model takes a normalised float clip (B, 3, T, H, W) and returns 2-class logits (B, 2).  The families
live one per module and register themselves (``python -c "import dfsearch.models as m; print(m.names())"``):

=================  ================================================================================
``model.name``     model (module)
=================  ================================================================================
resnet3d           Hara's 3D ResNet, SE / non-local blocks per ``model.placement`` (:mod:`.resnet3d`)
timesformer        TimeSformer joint / divided / space_only (:mod:`.timesformer`)
xception           timm ``legacy_xception``, per frame, logits averaged over T (:mod:`.frame`)
meso4              Meso-4, per frame, averaged (:mod:`.frame`)
mesoinception4     MesoInception-4, per frame, averaged (:mod:`.frame`)
=================  ================================================================================

``create`` loads ``model.pretrained`` (see :mod:`.weights`; never downloads) and attaches the outcome as
``model.pretrained_result`` (a :class:`~dfsearch.models.weights.LoadResult`, or None).
Models import no Ray and never print.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from dfsearch.models import registry
from dfsearch.models import weights as W
from dfsearch.models.registry import Clip, DetectorSpec, Weights, get, names, register
from dfsearch.models.weights import LoadResult

__all__ = [
    "create", "build", "input_stats", "complexity", "get", "names", "register", "DetectorSpec", "Weights", "Clip",
    "LoadResult",
]

log = logging.getLogger(__name__)


def build(cfg) -> nn.Module:
    """The architecture of ``cfg`` with random init (no weight loading; used by :func:`complexity`)."""
    return registry.get(cfg.model.name).build(cfg, None)


def create(cfg, makers: dict | None = None) -> nn.Module:
    """Build ``cfg.model`` (2-class head) and load ``cfg.model.pretrained``; the one entry of the zoo.

    ``makers``: weights made on demand rather than read from the weights folder, ``{model.pretrained value:
    make(family, arch) -> file}``; the train loop passes :data:`dfsearch.data.pretext.MAKERS` (the ``--smoke``
    twins' ``pretext://`` weights), so the models never import the data.
    Raises ConfigError for an impossible architecture, WeightsError for a missing / corrupt / unfitting
    weights file. The load outcome is ``model.pretrained_result``.
    """
    spec = registry.get(cfg.model.name)
    path = W.resolve(spec, cfg.model, makers)
    sd = W.read_state_dict(path) if path is not None else None
    model = spec.build(cfg, sd)
    result = None
    if sd is not None:
        if spec.load is not None:
            result = spec.load(model, sd, path)
        else:
            result = W.load_into(model, sd, path, lambda k: k.startswith(spec.head))
    model.pretrained_result = result
    return model


def input_stats(cfg) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) in 0–1 pixel units matching the model's pretrained weights; use ``(x/255 - mean)/std``.

    The detector spec says it: a named weight's own statistics (e.g. Hara's CVPR-2018 Kinetics-400 files,
    trained on 0–255 pixels minus the ActivityNet mean), else the family's (``DetectorSpec.mean/std``).
    """
    return registry.get(cfg.model.name).input_stats(cfg.model.pretrained)


def complexity(model: nn.Module, cfg, frames: int | None = None, size: int | None = None) -> dict:
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
