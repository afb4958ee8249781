"""Pretrained weights: the weights folder, named files, safe loading and key mapping.

Nothing is ever downloaded: a named weight (``model.pretrained``) resolves to a file the user put in the
weights folder — ``$DFSEARCH_WEIGHTS`` or, unset, ``~/.cache/dfsearch/weights``. A missing file raises ONE
:class:`~dfsearch.errors.WeightsError` that says which file, where to put it and where it is published.

The named weights of each detector are listed in its :class:`~dfsearch.models.registry.DetectorSpec`
(``weights=``, in the family's module); today:

=========================  ==========================================  ==================================
``model.pretrained``       file in the weights folder                  published at
=========================  ==========================================  ==================================
kinetics400 (resnet3d)     ``resnet-{depth}-kinetics.pth``             Hara et al. CVPR-2018 release
                           (DataParallel keys ``module.*``, 400 cls,    (github.com/kenshohara/
                           shortcut A for 18/34, B for 50+)             3D-ResNets-PyTorch, "CVPR2018"
                                                                        branch README → Google Drive)
kinetics700 (resnet3d)     ``r3d{depth}_K_200ep.pth`` (700 classes,     same repo, master README →
                           shortcut B for every depth)                  "Pretrained models" (Google Drive)
kinetics400 (timesformer)  ``TimeSformer_divST_8x32_224_K400.pyth``     github.com/facebookresearch/
                           (divided); ``..._jointST_...`` (joint);       TimeSformer README "Model Zoo"
                           ``..._spaceOnly_...``; ViT-B/16, 400 cls,     (divST; jointST/spaceOnly: train
                           ``{'model_state': {'model.*': ...}}``         its configs/Kinetics/*.yaml)
imagenet (timesformer)     ``vit_{size}_patch16_224.augreg2_in21k_      huggingface.co/timm/<name>/
                           ft_in1k.safetensors`` for base;              model.safetensors (rename to the
                           ``..._224.augreg_in21k_ft_in1k.safetensors`` file name on the left)
                           for tiny / small
imagenet (xception)        ``legacy_xception.tf_in1k.safetensors``      huggingface.co/timm/
                                                                        legacy_xception.tf_in1k
<path>                     that file (.pth/.pt via torch.load(weights_only=True), .safetensors)
=========================  ==========================================  ==================================

Loading goes: :func:`read_state_dict` (weights_only / safetensors; a corrupt file → WeightsError naming
it) → a key-mapping function (:func:`map_hara`, :func:`map_timesformer_k400`, :func:`map_vit_to_timesformer`,
:func:`map_timm_head`) that returns the new dict plus a list of human-readable notes saying what it changed →
:func:`load_into`, which raises WeightsError unless every missing key is one the caller declares new (the
head; attention blocks absent from a Hara file; from an ImageNet ViT also TimeSformer's time embedding and
temporal parts — from a TimeSformer K-400 file only the head) and nothing is unexpected or of another shape.
The outcome is a :class:`LoadResult`, also logged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dfsearch.errors import WeightsError

log = logging.getLogger(__name__)

ENV_VAR = "DFSEARCH_WEIGHTS"
HARA_CVPR2018_URL = "https://github.com/kenshohara/3D-ResNets-PyTorch/tree/CVPR2018 (README: pretrained models, Google Drive)"
HARA_NEW_URL = "https://github.com/kenshohara/3D-ResNets-PyTorch (README: 'Pre-trained models', Google Drive)"
VIT_FILES = {  # timesformer "imagenet": timm augreg ViT files per model.vit_size
    "tiny": "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    "small": "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "base": "vit_base_patch16_224.augreg2_in21k_ft_in1k",
}


def weights_dir() -> Path:
    """The weights folder: ``$DFSEARCH_WEIGHTS``, else ``~/.cache/dfsearch/weights``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dfsearch" / "weights"


def resolve(spec, model_cfg) -> Path | None:
    """``model.pretrained`` of a detector (its :class:`~dfsearch.models.registry.DetectorSpec`) -> an existing
    file, or None for 'none'. Never touches the network."""
    pretrained = model_cfg.pretrained
    if pretrained in ("", "none", None):
        return None
    named = spec.weights.get(pretrained)
    if named is not None:
        folder = weights_dir()
        filename = named.filename(model_cfg.arch)
        path = folder / filename
        if not path.is_file():
            raise WeightsError(
                f"pretrained weights {pretrained!r} for {spec.name}: file {path} not found. Put '{filename}' in "
                f"{folder} (set ${ENV_VAR} to use another folder); it is published at {named.source(model_cfg.arch)}. "
                "Nothing is downloaded at run time; use model.pretrained=none to train from scratch."
            )
        return path
    path = Path(pretrained).expanduser()
    if not path.is_file():
        offered = ", ".join(spec.weights) or "none"
        raise WeightsError(
            f"model.pretrained: {pretrained!r} is neither a named weight of model {spec.name!r} ({offered}), 'none', "
            "nor an existing file"
        )
    return path


# ------------------------------------------------------------------------------------------------ reading


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely and return its flat tensor state dict.

    ``.safetensors`` via safetensors; anything else via ``torch.load(weights_only=True)``. Checkpoint dicts
    are unwrapped: ``{'state_dict': ...}`` (Hara), ``{'model': ...}`` / ``{'model_state': ...}``.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"weights file {path} not found") from None
    except Exception as e:  # noqa: BLE001 - any failure to parse is 'corrupt'
        raise WeightsError(
            f"weights file {path} could not be read ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'no detail'}); "
            "it may be truncated or corrupt, or not a PyTorch/safetensors state dict — download it again"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors (got {type(obj).__name__})")
    return dict(obj)


# --------------------------------------------------------------------------------------------- key mapping

Notes = list[str]


def strip_prefix(sd: dict[str, torch.Tensor], prefix: str = "module.") -> tuple[dict[str, torch.Tensor], Notes]:
    """Drop a DataParallel/DDP prefix from every key that has it."""
    n = sum(k.startswith(prefix) for k in sd)
    if not n:
        return sd, []
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}, [f"stripped '{prefix}' from {n} keys"]


def drop_keys(sd: dict[str, torch.Tensor], prefixes: tuple[str, ...], why: str) -> tuple[dict[str, torch.Tensor], Notes]:
    dropped = sorted(k for k in sd if k.startswith(prefixes))
    if not dropped:
        return sd, []
    return {k: v for k, v in sd.items() if k not in dropped}, [f"dropped {', '.join(dropped)} ({why})"]


def map_hara(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Notes]:
    """Hara's checkpoints (either release) → :class:`~dfsearch.models.resnet3d.ResNet3d` keys.

    Changes: strips ``module.``; drops the Kinetics ``fc`` (the 2-class head is new); adds BN
    ``num_batches_tracked`` = 0 where the file predates PyTorch 0.4.1 (the CVPR-2018 release). Nothing else
    is renamed: the module names are Hara's.
    """
    sd, notes = strip_prefix(dict(sd), "module.")
    sd, more = drop_keys(sd, ("fc.",), "Kinetics classifier; replaced by the 2-class head")
    notes += more
    added = 0
    for k in [k for k in sd if k.endswith(".running_mean")]:
        nbt = k[: -len("running_mean")] + "num_batches_tracked"
        if nbt not in sd:
            sd[nbt] = torch.zeros((), dtype=torch.long, device=sd[k].device)
            added += 1
    if added:
        notes.append(f"added num_batches_tracked=0 to {added} BatchNorm layers (file predates PyTorch 0.4.1)")
    return sd, notes


def hara_shortcut(sd: dict[str, torch.Tensor]) -> str:
    """Which shortcut a Hara state dict was trained with: B has ``layer2.0.downsample.0.weight``."""
    return "B" if any(k.endswith("layer2.0.downsample.0.weight") for k in sd) else "A"


def map_timm_head(sd: dict[str, torch.Tensor], head: str) -> tuple[dict[str, torch.Tensor], Notes]:
    """A timm classifier checkpoint → same model with a new head: drops ``{head}.*``."""
    sd, notes = strip_prefix(sd, "module.")
    sd, more = drop_keys(sd, (f"{head}.",), "ImageNet classifier; replaced by the 2-class head")
    return sd, notes + more


def map_vit_to_timesformer(sd: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], Notes]:
    """A timm ViT state dict (``timm.create_model('vit_base_patch16_224').state_dict()`` names) → TimeSformer.

    Changes: drops ``head.*`` (1000-way) and the ViT-only ``fc_norm``/``pre_logits`` if present; resamples
    ``pos_embed`` (bicubic, timm's resample_abs_pos_embed) to the model's patch grid; resamples the
    patch-embedding kernel if the patch size differs; for divided attention copies each block's spatial
    ``attn.*`` → ``temporal_attn.*`` and ``norm1.*`` → ``temporal_norm1.*`` (as facebookresearch/TimeSformer
    does). ``time_embed`` and ``temporal_fc`` stay at their zero init (reported missing).
    """
    sd, notes = strip_prefix(dict(sd), "module.")
    sd, more = drop_keys(sd, ("head.", "fc_norm.", "head_drop.", "pre_logits."), "ImageNet classifier; replaced by the 2-class head")
    notes += more + _resample_patch_grid(sd, model)
    own = model.state_dict()
    if any(".temporal_attn." in k for k in own):
        copied = 0
        for k in list(sd):
            if k.startswith("blocks.") and (".attn." in k or ".norm1." in k):
                new = k.replace(".attn.", ".temporal_attn.").replace(".norm1.", ".temporal_norm1.")
                if new in own and new not in sd:
                    sd[new] = sd[k].clone()
                    copied += 1
        if copied:
            notes.append(f"initialised {copied} temporal_attn/temporal_norm1 tensors by copying the spatial attn/norm1 (as TimeSformer)")
    return sd, notes


# ------------------------------------------------------------------------------------ TimeSformer (K-400)

# facebookresearch/TimeSformer's Kinetics-400 checkpoints, one per attention scheme of its configs/Kinetics/
# (the model zoo publishes divST; jointST / spaceOnly are what those configs write when trained).
TIMESFORMER_K400_FILES = {
    "divided": "TimeSformer_divST_8x32_224_K400.pyth",
    "joint": "TimeSformer_jointST_8x32_224_K400.pyth",
    "space_only": "TimeSformer_spaceOnly_8x32_224_K400.pyth",
}
TIMESFORMER_K400_PUBLISHED = (
    "https://github.com/facebookresearch/TimeSformer (README 'Model Zoo': TimeSformer K400 8x224 = divST; "
    "the jointST / spaceOnly files come from training its configs/Kinetics/TimeSformer_{jointST,spaceOnly}_8x32_224.yaml)"
)
# The K-400 files were trained on (x - 0.45) / 0.225 in 0-1 pixel units (TimeSformer's DATA.MEAN / DATA.STD defaults).
TIMESFORMER_K400_MEAN = (0.45, 0.45, 0.45)
TIMESFORMER_K400_STD = (0.225, 0.225, 0.225)
_FB_PREFIX = "model."  # the checkpoint holds the state of TimeSformer's wrapper module, whose ``.model`` is the ViT


def timesformer_k400_file(arch) -> str:
    """The K-400 file name for TimeSformer settings ``arch`` (``space_time``, ``vit_size``): every file is ViT-B/16."""
    if getattr(arch, "vit_size", "base") != "base":
        raise WeightsError(
            f"model.pretrained: kinetics400 TimeSformer files are ViT-Base/16, but model.vit_size is {arch.vit_size!r}; "
            "set model.vit_size=base, or use imagenet / a path / none"
        )
    return TIMESFORMER_K400_FILES[arch.space_time]


def is_facebook_timesformer(sd: dict[str, torch.Tensor]) -> bool:
    """True for a facebookresearch/TimeSformer ``model_state``: its ViT keys carry the ``model.`` prefix."""
    return f"{_FB_PREFIX}pos_embed" in sd and f"{_FB_PREFIX}patch_embed.proj.weight" in sd


def timesformer_attention(sd: dict[str, torch.Tensor], prefix: str = "") -> str:
    """Which space-time attention a TimeSformer state dict was trained with: divided / joint / space_only."""
    if any(k.startswith(prefix + "blocks.") and ".temporal_attn." in k for k in sd):
        return "divided"
    return "joint" if prefix + "time_embed" in sd else "space_only"


def map_timesformer_k400(sd: dict[str, torch.Tensor], model: nn.Module, file: str | os.PathLike = "") -> tuple[dict[str, torch.Tensor], Notes]:
    """facebookresearch/TimeSformer checkpoint (``model_state``) → :class:`~dfsearch.models.timesformer.TimeSformer`.

    The two models share module names (``blocks.N.{norm1,attn,temporal_norm1,temporal_attn,temporal_fc,norm2,mlp}``,
    ``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``time_embed``, ``norm``, ``head``), so the mapping is:
    strip ``model.``; drop the 400-way ``head``; interpolate ``time_embed`` to ``model.num_frames`` (nearest, as
    TimeSformer does); resample ``pos_embed`` to the model's patch grid (bicubic, timm) and the patch kernel if
    the sizes differ. A file of another attention scheme or width than the model raises WeightsError.
    """
    name = Path(file).name or "the checkpoint"
    has = timesformer_attention(sd, _FB_PREFIX)
    want = getattr(model, "space_time", has)
    if has != want:
        raise WeightsError(
            f"weights file {file}: {name} is a TimeSformer with {has} space-time attention but model.space_time is "
            f"{want!r}; use {TIMESFORMER_K400_FILES[want]} (or set model.space_time={has})"
        )
    dim = sd[f"{_FB_PREFIX}pos_embed"].shape[-1]
    if dim != getattr(model, "embed_dim", dim):
        raise WeightsError(
            f"weights file {file}: {name} has embedding width {dim} (ViT-Base = 768) but the model has {model.embed_dim}; "
            "set model.vit_size=base"
        )
    sd, notes = strip_prefix(dict(sd), _FB_PREFIX)
    head = sd.get("head.weight")
    sd, more = drop_keys(sd, ("head.",), f"Kinetics-400 classifier{f', {head.shape[0]} classes' if head is not None else ''}; replaced by the 2-class head")
    notes += more
    own = model.state_dict()
    if "time_embed" in sd and "time_embed" in own and sd["time_embed"].shape != own["time_embed"].shape:
        old = sd["time_embed"].shape
        sd["time_embed"] = interpolate_time(sd["time_embed"], own["time_embed"].shape[1])
        notes.append(f"interpolated time_embed {tuple(old)} -> {tuple(sd['time_embed'].shape)} (nearest, as TimeSformer)")
    notes += _resample_patch_grid(sd, model)
    return sd, notes


def _resample_patch_grid(sd: dict[str, torch.Tensor], model: nn.Module) -> Notes:
    """Resample ``pos_embed`` and ``patch_embed.proj.weight`` of a ViT-style state dict in place to the model's."""
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    own, notes = model.state_dict(), []
    if "pos_embed" in sd and "pos_embed" in own and sd["pos_embed"].shape != own["pos_embed"].shape:
        old = sd["pos_embed"].shape
        sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], new_size=list(model.patch_embed.grid_size), num_prefix_tokens=1)
        notes.append(f"resampled pos_embed {tuple(old)} -> {tuple(sd['pos_embed'].shape)}")
    key = "patch_embed.proj.weight"
    if key in sd and key in own and sd[key].shape[-2:] != own[key].shape[-2:]:
        old = sd[key].shape
        sd[key] = resample_patch_embed(sd[key], new_size=list(own[key].shape[-2:]))
        notes.append(f"resampled {key} {tuple(old)} -> {tuple(sd[key].shape)}")
    return notes


def load_timesformer(model: nn.Module, sd: dict[str, torch.Tensor], file: str | os.PathLike) -> "LoadResult":
    """Load any TimeSformer-family file into ``model``, by what the file holds:

    * a facebookresearch/TimeSformer checkpoint (Kinetics-400 ``.pyth``; keys ``model.*``): strict — every
      tensor but the 2-class ``head`` comes from the file (:func:`map_timesformer_k400`);
    * a dfsearch TimeSformer checkpoint (``time_embed`` / ``blocks.N.temporal_*`` without prefix): strict but
      for the head; ``time_embed`` interpolated to the clip length;
    * a timm ImageNet ViT: :func:`map_vit_to_timesformer`; the time embedding and temporal parts are new.
    """
    hint = "model.space_time / vit_size / patch_size"
    if is_facebook_timesformer(sd):
        sd, notes = map_timesformer_k400(sd, model, file)
        return load_into(model, sd, file, lambda k: k.startswith("head."), ["facebookresearch TimeSformer checkpoint"] + notes,
                         hint=hint + " (keys shown without the file's 'model.' prefix)")
    if "time_embed" in sd or any(".temporal_" in k for k in sd):
        sd, notes = strip_prefix(dict(sd))
        sd, more = drop_keys(sd, ("head.",), "classifier; replaced by the 2-class head")
        own = model.state_dict()
        if "time_embed" in sd and "time_embed" in own and sd["time_embed"].shape != own["time_embed"].shape:
            old = sd["time_embed"].shape
            sd["time_embed"] = interpolate_time(sd["time_embed"], own["time_embed"].shape[1])
            more.append(f"interpolated time_embed {tuple(old)} -> {tuple(sd['time_embed'].shape)}")
        return load_into(model, sd, file, lambda k: k.startswith("head."), notes + more, hint=hint)
    sd, notes = map_vit_to_timesformer(sd, model)
    return load_into(model, sd, file, model.is_new_key, notes, hint=hint)


# ------------------------------------------------------------------------------------------------ loading


@dataclass
class LoadResult:
    """What happened when pretrained weights were loaded."""

    file: str
    missing: list[str] = field(default_factory=list)  # model keys not in the file (allowed: new parts only)
    unexpected: list[str] = field(default_factory=list)  # always empty on success
    notes: list[str] = field(default_factory=list)  # what the key mapping changed

    def __str__(self) -> str:
        return (
            f"loaded {self.file}: {len(self.missing)} new (missing) keys"
            + (f" [{', '.join(self.missing[:8])}{', ...' if len(self.missing) > 8 else ''}]" if self.missing else "")
            + ("; " + "; ".join(self.notes) if self.notes else "")
        )


def load_into(
    model: nn.Module,
    sd: dict[str, torch.Tensor],
    file: str | os.PathLike,
    is_new_key: Callable[[str], bool],
    notes: Notes | None = None,
    hint: str = "model.depth / shortcut / conv1_t_size / widen_factor / vit_size",
) -> LoadResult:
    """Load ``sd`` into ``model``; only keys for which ``is_new_key`` is true may be missing.

    Shape mismatches, unexpected keys or other missing keys raise WeightsError naming the file and keys.
    """
    own = model.state_dict()
    bad_shape = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in sd.items() if k in own and own[k].shape != v.shape]
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    not_allowed = [k for k in missing if not is_new_key(k)]
    if bad_shape or unexpected or not_allowed:
        parts = []
        if bad_shape:
            parts.append(f"shape mismatch: {'; '.join(bad_shape[:5])}{' ...' if len(bad_shape) > 5 else ''}")
        if not_allowed:
            parts.append(f"missing {len(not_allowed)} keys the file should provide: {', '.join(not_allowed[:5])}{' ...' if len(not_allowed) > 5 else ''}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        raise WeightsError(
            f"weights file {file} does not fit the model ({'; '.join(parts)}); check {hint} against the checkpoint"
        )
    model.load_state_dict(sd, strict=False)
    result = LoadResult(file=str(file), missing=missing, unexpected=unexpected, notes=list(notes or []))
    log.info("%s", result)
    return result


def interpolate_time(embed: torch.Tensor, t: int) -> torch.Tensor:
    """(1, T0, D) time embedding → (1, t, D), nearest neighbour (as TimeSformer)."""
    if embed.shape[1] == t:
        return embed
    return rearrange(F.interpolate(rearrange(embed, "1 t d -> 1 d t"), size=t, mode="nearest"), "1 d t -> 1 t d")
