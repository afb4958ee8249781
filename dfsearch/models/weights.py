"""Pretrained weights: the weights folder, named files, safe loading and key mapping.

Nothing is ever downloaded: a named weight (``model.pretrained``) resolves to a file the user put in the
weights folder — ``$DFSEARCH_WEIGHTS`` or, unset, ``~/.cache/dfsearch/weights``. A missing file raises ONE
:class:`~dfsearch.errors.WeightsError` that says which file, where to put it and where it is published.

=========================  ==========================================  ==================================
``model.pretrained``       file in the weights folder                  published at
=========================  ==========================================  ==================================
kinetics400 (resnet3d)     ``resnet-{depth}-kinetics.pth``             Hara et al. CVPR-2018 release
                           (DataParallel keys ``module.*``, 400 cls,    (github.com/kenshohara/
                           shortcut A for 18/34, B for 50+)             3D-ResNets-PyTorch, "CVPR2018"
                                                                        branch README → Google Drive)
kinetics700 (resnet3d)     ``r3d{depth}_K_200ep.pth`` (700 classes,     same repo, master README →
                           shortcut B for every depth)                  "Pretrained models" (Google Drive)
imagenet (timesformer)     ``vit_{size}_patch16_224.augreg2_in21k_      huggingface.co/timm/<name>/
                           ft_in1k.safetensors`` for base;              model.safetensors (rename to the
                           ``..._224.augreg_in21k_ft_in1k.safetensors`` file name on the left)
                           for tiny / small
imagenet (xception)        ``legacy_xception.tf_in1k.safetensors``      huggingface.co/timm/
                                                                        legacy_xception.tf_in1k
<path>                     that file (.pth/.pt via torch.load(weights_only=True), .safetensors)
=========================  ==========================================  ==================================

Loading goes: :func:`read_state_dict` (weights_only / safetensors; a corrupt file → WeightsError naming
it) → a key-mapping function (:func:`map_hara`, :func:`map_vit_to_timesformer`, :func:`map_timm_head`)
that returns the new dict plus a list of human-readable notes saying what it changed → :func:`load_into`,
which loads non-strictly, then raises WeightsError unless every missing key is one the model says is new
(head, attention blocks, TimeSformer's temporal parts) and nothing is unexpected. The outcome is a
:class:`LoadResult`, also logged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dfsearch.errors import WeightsError

log = logging.getLogger(__name__)

ENV_VAR = "DFSEARCH_WEIGHTS"
HARA_CVPR2018_URL = "https://github.com/kenshohara/3D-ResNets-PyTorch/tree/CVPR2018 (README: pretrained models, Google Drive)"
HARA_NEW_URL = "https://github.com/kenshohara/3D-ResNets-PyTorch (README: 'Pre-trained models', Google Drive)"
VIT_FILES = {
    "tiny": "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    "small": "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "base": "vit_base_patch16_224.augreg2_in21k_ft_in1k",
}
XCEPTION_FILE = "legacy_xception.tf_in1k"


def weights_dir() -> Path:
    """The weights folder: ``$DFSEARCH_WEIGHTS``, else ``~/.cache/dfsearch/weights``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dfsearch" / "weights"


@dataclass(frozen=True)
class NamedWeights:
    filename: str
    published: str


def named_weights(model_name: str, pretrained: str, *, depth: int = 50, vit_size: str = "base") -> NamedWeights:
    """The documented file name and source of a named weight; WeightsError if the model has no such weight."""
    if model_name == "resnet3d" and pretrained == "kinetics400":
        return NamedWeights(f"resnet-{depth}-kinetics.pth", HARA_CVPR2018_URL)
    if model_name == "resnet3d" and pretrained == "kinetics700":
        return NamedWeights(f"r3d{depth}_K_200ep.pth", HARA_NEW_URL)
    if model_name == "timesformer" and pretrained == "imagenet":
        stem = VIT_FILES[vit_size]
        return NamedWeights(f"{stem}.safetensors", f"https://huggingface.co/timm/{stem} (file model.safetensors)")
    if model_name == "xception" and pretrained == "imagenet":
        return NamedWeights(f"{XCEPTION_FILE}.safetensors", f"https://huggingface.co/timm/{XCEPTION_FILE} (file model.safetensors)")
    offered = {
        "resnet3d": "kinetics400, kinetics700",
        "timesformer": "imagenet",
        "xception": "imagenet",
    }.get(model_name, "none")
    raise WeightsError(
        f"model.pretrained: {pretrained!r} is not available for model {model_name!r} "
        f"(named weights: {offered}; or give a path to a state-dict file, or 'none')"
    )


def resolve(model_name: str, pretrained: str, *, depth: int = 50, vit_size: str = "base") -> Path | None:
    """``model.pretrained`` → an existing file, or None for 'none'. Never touches the network."""
    if pretrained in ("", "none", None):
        return None
    if pretrained in ("kinetics400", "kinetics700", "imagenet"):
        nw = named_weights(model_name, pretrained, depth=depth, vit_size=vit_size)
        folder = weights_dir()
        path = folder / nw.filename
        if not path.is_file():
            raise WeightsError(
                f"pretrained weights {pretrained!r} for {model_name}: file {path} not found. Put '{nw.filename}' in "
                f"{folder} (set ${ENV_VAR} to use another folder); it is published at {nw.published}. "
                "Nothing is downloaded at run time; use model.pretrained=none to train from scratch."
            )
        return path
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"model.pretrained: {pretrained!r} is neither none/kinetics400/kinetics700/imagenet nor an existing file"
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
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    sd, notes = strip_prefix(dict(sd), "module.")
    sd, more = drop_keys(sd, ("head.", "fc_norm.", "head_drop.", "pre_logits."), "ImageNet classifier; replaced by the 2-class head")
    notes += more
    own = model.state_dict()
    if "pos_embed" in sd and "pos_embed" in own and sd["pos_embed"].shape != own["pos_embed"].shape:
        grid = model.patch_embed.grid_size
        old = sd["pos_embed"].shape
        sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], new_size=list(grid), num_prefix_tokens=1)
        notes.append(f"resampled pos_embed {tuple(old)} -> {tuple(sd['pos_embed'].shape)}")
    key = "patch_embed.proj.weight"
    if key in sd and key in own and sd[key].shape[-2:] != own[key].shape[-2:]:
        old = sd[key].shape
        sd[key] = resample_patch_embed(sd[key], new_size=list(own[key].shape[-2:]))
        notes.append(f"resampled {key} {tuple(old)} -> {tuple(sd[key].shape)}")
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
            f"weights file {file} does not fit the model ({'; '.join(parts)}); check model.depth / shortcut / "
            "conv1_t_size / widen_factor / vit_size against the checkpoint"
        )
    model.load_state_dict(sd, strict=False)
    result = LoadResult(file=str(file), missing=missing, unexpected=unexpected, notes=list(notes or []))
    log.info("%s", result)
    return result


def interpolate_time(embed: torch.Tensor, t: int) -> torch.Tensor:
    """(1, T0, D) time embedding → (1, t, D), nearest neighbour (as TimeSformer)."""
    if embed.shape[1] == t:
        return embed
    return F.interpolate(embed.transpose(1, 2), size=t, mode="nearest").transpose(1, 2)
