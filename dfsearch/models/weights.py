"""Pretrained weights: the weights folder, named files, safe loading and key mapping.

Nothing is ever downloaded: a named weight (``model.pretrained``) resolves to a file the user put in the
weights folder — ``$DFSEARCH_WEIGHTS`` or, unset, ``~/.cache/dfsearch/weights``. A missing file raises ONE
:class:`~dfsearch.errors.WeightsError` that says which file, where to put it and where it is published.

The named weights of each detector (file name, where it is published, the input statistics they were trained
with) are listed in its :class:`~dfsearch.models.registry.DetectorSpec` (``weights=``), in the family's own
module, together with its key-mapping loader (e.g. ``dfsearch/models/resnet3d.py``: Hara's Kinetics files).
``model.pretrained`` may also be a path: ``.pth``/``.pt`` via ``torch.load(weights_only=True)``, or ``.safetensors``,
or ``pretext://synthetic-v1`` (what a ``--smoke`` twin says for a pretrained row): a file in the family's published
format made by a short pretext training on synthetic videos, built on first use and cached
(:mod:`dfsearch.data.pretext`), then loaded like any other file.

Loading goes: :func:`read_state_dict` (weights_only / safetensors; a corrupt file → WeightsError naming
it) → the family's key-mapping function (``DetectorSpec.load``; generic parts here: :func:`strip_prefix`,
:func:`drop_keys`, :func:`map_timm_head`) that returns the new dict plus a list of human-readable notes saying what it changed →
:func:`load_into`, which raises WeightsError unless every missing key is one the caller declares new (the
head, and parts the checkpoint cannot have, such as attention blocks added to a pretrained backbone) and
nothing is unexpected or of another shape.
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


def weights_dir() -> Path:
    """The weights folder: ``$DFSEARCH_WEIGHTS``, else ``~/.cache/dfsearch/weights``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dfsearch" / "weights"


MADE_PREFIX = "pretext://"  # weights made on demand (dfsearch.data.pretext), not read from the weights folder


def resolve(spec, model_cfg, makers: dict | None = None) -> Path | None:
    """``model.pretrained`` of a detector (its :class:`~dfsearch.models.registry.DetectorSpec`) -> an existing
    file, or None for 'none'. Never touches the network.  ``makers``: see :func:`dfsearch.models.create`."""
    pretrained = model_cfg.pretrained
    if pretrained in ("", "none", None):
        return None
    if makers and pretrained in makers:
        return makers[pretrained](spec.name, model_cfg.arch)
    if str(pretrained).startswith(MADE_PREFIX):
        raise WeightsError(f"model.pretrained {pretrained!r}: these weights are made by the train loop on first use "
                           "(dfsearch.data.pretext); run the trial through python -m dfsearch.train or a sweep")
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


def map_timm_head(sd: dict[str, torch.Tensor], head: str) -> tuple[dict[str, torch.Tensor], Notes]:
    """A timm classifier checkpoint → same model with a new head: drops ``{head}.*``."""
    sd, notes = strip_prefix(sd, "module.")
    sd, more = drop_keys(sd, (f"{head}.",), "ImageNet classifier; replaced by the 2-class head")
    return sd, notes + more


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
    hint: str = "the detector's model.* settings",
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
