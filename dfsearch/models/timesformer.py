"""TimeSformer (Bertasius et al. 2021) from timm's ViT building blocks and einops; registers ``timesformer``.

Mirrors facebookresearch/TimeSformer's ``vit.py`` with timm module names, so a timm ViT state dict
(``timm.create_model('vit_base_patch16_224').state_dict()``) initialises it:

* ``patch_embed`` (timm PatchEmbed) embeds every frame; ``cls_token`` + ``pos_embed`` (spatial, per frame);
  ``time_embed`` (1, T, D), zero at init, added per patch position (not for ``space_only``).
* ``space_time``:
    - ``joint``: every block attends over all T·N patches + CLS (timm ``Block``).
    - ``divided`` ("dissociated", Table III): temporal attention first — ``temporal_norm1`` →
      ``temporal_attn`` over the T frames at each patch position → ``temporal_fc`` (zero-initialised, so a
      fresh temporal path adds nothing) → residual; then spatial attention per frame with the CLS token
      replicated per frame and averaged back; then the MLP.  From an ImageNet checkpoint the temporal
      attention and norm are initialised by COPYING the spatial ``attn`` / ``norm1`` (as TimeSformer does).
    - ``space_only``: per-frame ViT, CLS features averaged over frames.
* ``norm`` → CLS token → dropout → ``head`` (2 classes).

A clip with a different number of frames than ``num_frames`` is accepted: the time embedding is
interpolated (nearest, as TimeSformer). H and W must equal ``img_size``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import nn
from torch.nn.init import trunc_normal_

from dfsearch.errors import ConfigError, WeightsError
from dfsearch.models.registry import AttentionMaps, Clip, Cost, DetectorSpec, Pretext, Weights, register
from dfsearch.models.weights import LoadResult, Notes, drop_keys, interpolate_time, load_into, strip_prefix

SPACE_TIME = ("joint", "divided", "space_only")
VIT_SIZES = {  # embed_dim, depth, heads (timm vit_{tiny,small,base}_patch16_224)
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}


class DividedBlock(nn.Module):
    """TimeSformer's divided space-time block (temporal attention, then spatial, then MLP)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0,
                 proj_drop: float = 0.0, attn_drop: float = 0.0):
        from timm.layers import DropPath, Mlp  # timm only when a model is built (keeps the trial driver light)
        from timm.models.vision_transformer import Attention

        super().__init__()
        norm = lambda: nn.LayerNorm(dim, eps=1e-6)  # noqa: E731
        self.temporal_norm1 = norm()
        self.temporal_attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = norm()
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm()
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        nn.init.zeros_(self.temporal_fc.weight)
        nn.init.zeros_(self.temporal_fc.bias)

    def forward(self, x: torch.Tensor, t: int, h: int, w: int) -> torch.Tensor:
        b = x.shape[0]
        cls, patches = x[:, :1], x[:, 1:]  # patches ordered (h w t)
        # temporal
        xt = rearrange(patches, "b (h w t) m -> (b h w) t m", h=h, w=w, t=t)
        res_t = self.drop_path(self.temporal_attn(self.temporal_norm1(xt)))
        res_t = self.temporal_fc(rearrange(res_t, "(b h w) t m -> b (h w t) m", b=b, h=h, w=w))
        xt = patches + res_t
        # spatial (CLS replicated per frame, averaged back)
        cls_t = rearrange(cls.expand(b, t, cls.shape[-1]), "b t m -> (b t) 1 m")
        xs = torch.cat((cls_t, rearrange(xt, "b (h w t) m -> (b t) (h w) m", h=h, w=w, t=t)), dim=1)
        res_s = self.drop_path(self.attn(self.norm1(xs)))
        res_cls = rearrange(res_s[:, 0], "(b t) m -> b t m", b=b).mean(dim=1, keepdim=True)
        res_s = rearrange(res_s[:, 1:], "(b t) (h w) m -> b (h w t) m", b=b, h=h, w=w)
        x = torch.cat((cls, xt), dim=1) + torch.cat((res_cls, res_s), dim=1)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TimeSformer(nn.Module):
    """TimeSformer for (B, 3, T, H, W) clips → (B, num_classes) logits."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 8,
        num_classes: int = 2,
        space_time: str = "divided",
        vit_size: str = "base",
        dropout: float = 0.0,
        drop_path_rate: float = 0.1,
        in_chans: int = 3,
    ):
        from timm.layers import PatchEmbed  # timm only when a model is built (keeps the trial driver light)
        from timm.models.vision_transformer import Block

        super().__init__()
        if space_time not in SPACE_TIME:
            raise ConfigError(f"model.space_time: {space_time!r} is not one of {', '.join(SPACE_TIME)}")
        if vit_size not in VIT_SIZES:
            raise ConfigError(f"model.vit_size: {vit_size!r} is not one of {', '.join(VIT_SIZES)}")
        if img_size % patch_size:
            raise ConfigError(f"data.crop_size: {img_size} is not a multiple of model.patch_size {patch_size}")
        dim, depth, heads = VIT_SIZES[vit_size]
        self.space_time, self.num_frames, self.img_size, self.embed_dim = space_time, num_frames, img_size, dim
        self.num_features = dim
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        if space_time != "space_only":
            self.time_embed = nn.Parameter(torch.zeros(1, num_frames, dim))  # zero at init (TimeSformer)
        dpr = [drop_path_rate * i / max(1, depth - 1) for i in range(depth)]  # stochastic depth decay rule
        if space_time == "divided":
            self.blocks = nn.ModuleList(DividedBlock(dim, heads, drop_path=dpr[i]) for i in range(depth))
        else:
            self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, drop_path=dpr[i]) for i in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(dim, num_classes)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)
        for blk in self.blocks:  # re-zero after the generic init
            if isinstance(blk, DividedBlock):
                nn.init.zeros_(blk.temporal_fc.weight)
                nn.init.zeros_(blk.temporal_fc.bias)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def is_new_key(self, key: str) -> bool:
        """Keys an ImageNet ViT cannot provide: head, time embedding, temporal parts of divided blocks."""
        return key.startswith("head.") or key == "time_embed" or ".temporal_" in key

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, hh, ww = x.shape
        if (hh, ww) != (self.img_size, self.img_size):
            raise ValueError(f"TimeSformer expects {self.img_size}x{self.img_size} frames, got {hh}x{ww}")
        x = self.patch_embed(rearrange(x, "b c t h w -> (b t) c h w"))  # (b t) n m
        gh, gw = self.patch_embed.grid_size
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        if self.space_time == "space_only":
            for blk in self.blocks:
                x = blk(x)
            x = self.norm(x)
            return rearrange(x[:, 0], "(b t) m -> b t m", b=b).mean(dim=1)
        cls = x[:b * t:t, :1]  # CLS of the first frame of each clip (identical in every frame)
        patches = rearrange(x[:, 1:], "(b t) n m -> (b n) t m", b=b, t=t) + interpolate_time(self.time_embed, t)
        x = torch.cat((cls, rearrange(patches, "(b n) t m -> b (n t) m", b=b)), dim=1)
        for blk in self.blocks:
            x = blk(x, t, gh, gw) if isinstance(blk, DividedBlock) else blk(x)
        return self.norm(x)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(x)))


# ------------------------------------------------------------------------------------ pretrained weights

VIT_FILES = {  # timesformer "imagenet": timm augreg ViT files per model.vit_size
    "tiny": "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    "small": "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "base": "vit_base_patch16_224.augreg2_in21k_ft_in1k",
}


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


def load_timesformer(model: nn.Module, sd: dict[str, torch.Tensor], file: str | os.PathLike) -> LoadResult:
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



# ------------------------------------------------------------------------------------ the detector spec


@dataclass
class TimeSformerConfig:
    """``model.*`` settings of TimeSformer."""

    space_time: str = "divided"  # joint | divided | space_only (Table III: joint vs "dissociated")
    vit_size: str = "base"  # tiny | small | base (ViT-B/16 is the paper's)
    patch_size: int = 16

    def __post_init__(self):
        if self.space_time not in SPACE_TIME:
            raise ConfigError(f"model.space_time: {self.space_time!r} is not one of {', '.join(SPACE_TIME)}")
        if self.vit_size not in VIT_SIZES:
            raise ConfigError(f"model.vit_size: {self.vit_size!r} is not one of {', '.join(VIT_SIZES)}")
        if self.patch_size <= 0:
            raise ConfigError(f"model.patch_size: expected a positive number, got {self.patch_size!r}")


def check(cfg) -> None:
    if cfg.data.crop_size % cfg.model.arch.patch_size:
        raise ConfigError(f"data.crop_size: {cfg.data.crop_size} is not a multiple of model.patch_size {cfg.model.arch.patch_size}")


def build(cfg, sd: dict | None = None) -> TimeSformer:
    a = cfg.model.arch
    return TimeSformer(
        img_size=cfg.data.crop_size, patch_size=a.patch_size, num_frames=cfg.data.clip_len, num_classes=2,
        space_time=a.space_time, vit_size=a.vit_size, dropout=cfg.model.dropout,
    )


def _vit_file(arch: TimeSformerConfig) -> str:
    return f"{VIT_FILES[arch.vit_size]}.safetensors"


# ------------------------------------------------------------------------------------ attention rollout


def _attention(attn_module, x: torch.Tensor) -> torch.Tensor:
    """Head-averaged attention probabilities (B, N, N) of a timm ``Attention`` for its input x (B, N, C)."""
    b, n, _ = x.shape
    qkv = attn_module.qkv(x).reshape(b, n, 3, attn_module.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn_module.q_norm(qkv[0]), attn_module.k_norm(qkv[1])
    return torch.softmax((q * attn_module.scale) @ k.transpose(-2, -1), dim=-1).mean(dim=1)


def _residual(a: torch.Tensor) -> torch.Tensor:
    a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype)
    return a / a.sum(dim=-1, keepdim=True)


@torch.no_grad()
def attention_rollout(model: TimeSformer, x: torch.Tensor) -> tuple[list[tuple[str, "np.ndarray"]], float]:
    """CLS attention rollout (Abnar & Zuidema 2020) over the patches, (T, gh, gw), of a joint / divided / space-only
    TimeSformer for ONE normalised clip x (1, 3, T, H, W): heads averaged, the residual as 0.5·I; a divided block is
    its temporal step, then its spatial step.  Returns ``([(space_time, rollout)], P(fake))``; the attention inputs
    are read with forward hooks (the model is not changed)."""
    from timm.models.vision_transformer import Attention

    inputs: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, args, out, name=name: inputs.__setitem__(name, args[0].detach()))
               for name, m in model.named_modules() if isinstance(m, Attention)]
    try:
        prob = float(torch.softmax(model(x).float(), 1)[0, 1])
    finally:
        for h in handles:
            h.remove()
    t = x.shape[2]
    gh, gw = model.patch_embed.grid_size
    p = gh * gw
    if model.space_time == "space_only":  # per frame ViT: roll out each frame, CLS -> its patches
        maps = []
        for i in range(t):
            r = torch.eye(p + 1)
            for j, blk in enumerate(model.blocks):
                r = _residual(_attention(blk.attn, inputs[f"blocks.{j}.attn"][i : i + 1])[0].float()) @ r
            maps.append(r[0, 1:].reshape(gh, gw))
        return [(model.space_time, torch.stack(maps).numpy())], prob
    n = p * t + 1  # CLS + patches ordered (h w t), as TimeSformer keeps them
    r = torch.eye(n)
    for j, blk in enumerate(model.blocks):
        if isinstance(blk, DividedBlock):
            # temporal step: each patch position attends over its T frames; CLS untouched
            a_t = _attention(blk.temporal_attn, inputs[f"blocks.{j}.temporal_attn"][: p]).float()  # (p, t, t) of clip 0
            m_t = torch.zeros(n, n)
            m_t[0, 0] = 1.0
            for pos in range(p):
                sl = slice(1 + pos * t, 1 + (pos + 1) * t)
                m_t[sl, sl] = a_t[pos]
            # spatial step: in each frame, CLS + that frame's patches attend to each other; CLS rows averaged
            a_s = _attention(blk.attn, inputs[f"blocks.{j}.attn"][: t]).float()  # (t, 1 + p, 1 + p) of clip 0
            m_s = torch.zeros(n, n)
            for f in range(t):
                idx = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.arange(p) * t + f])
                m_s[idx[1:, None], idx[None, :]] = a_s[f, 1:]
                m_s[0, idx] += a_s[f, 0] / t
            r = _residual(m_s) @ _residual(m_t) @ r
        else:
            r = _residual(_attention(blk.attn, inputs[f"blocks.{j}.attn"][:1])[0].float()) @ r
    cls = r[0, 1:].reshape(gh, gw, t)
    return [(model.space_time, cls.permute(2, 0, 1).numpy())], prob


# ------------------------------------------------------------------------------------ the spec's other facts

# The estimate's FLOPs model (dfsearch.estimate): forward GFLOPs of ViT-B/16 TimeSformer at 8 x 224², measured with
# FlopCounterMode (attention through the math SDPA kernel, so it is counted); smaller ViTs relative to base.
GFLOPS = {"joint": 359.1, "divided": 391.7, "space_only": 268.4}
VIT_SCALE = {"tiny": 1 / 16, "small": 1 / 4, "base": 1.0}


def gflops(full: dict) -> float:
    return GFLOPS.get(full.get("model.space_time", "divided"), 391.7) * VIT_SCALE.get(full.get("model.vit_size", "base"), 1.0)


def _pretext_filename(backbone: dict, clip: dict) -> str:
    st = {"divided": "divST", "joint": "jointST", "space_only": "spaceOnly"}[backbone["space_time"]]
    return f"TimeSformer_{st}_{clip['clip_len']}x{clip['frame_stride']}_{clip['crop_size']}_pretext.pyth"  # facebookresearch naming


def _facebook_file(state: dict, backbone: dict, epochs: int) -> dict:
    """facebookresearch/TimeSformer's checkpoint: model_state of the wrapper whose .model is the ViT."""
    return {"epoch": epochs, "model_state": {f"model.{k}": v for k, v in state.items()}, "optimizer_state": None}


HALF = (0.5, 0.5, 0.5)

SPEC = register(DetectorSpec(
    name="timesformer",
    config=TimeSformerConfig,
    build=build,
    load=load_timesformer,  # facebookresearch K-400 .pyth (strict), a dfsearch checkpoint, or a timm ViT
    check=check,
    clip=Clip(clip_len=8, frame_stride=32, crop_size=224),  # the paper: 8 x 224 x 224, sampling rate 1/32
    test_view="middle_clip_3crops",
    mean=HALF, std=HALF,
    weights={
        # the paper pretrains every model on Kinetics-400 (the ImageNet ViT initialisation stays as "imagenet")
        "kinetics400": Weights(timesformer_k400_file, TIMESFORMER_K400_PUBLISHED, TIMESFORMER_K400_MEAN, TIMESFORMER_K400_STD),
        # timm augreg ViT (ImageNet-21k, fine-tuned on 1k); published as model.safetensors, rename to the file name
        "imagenet": Weights(_vit_file, "https://huggingface.co/timm/{stem} (file model.safetensors)"),
    },
    description="TimeSformer, joint / divided / space-only space-time attention (model.space_time)",
    display_name=lambda flat: f"timesformer {flat.get('model.space_time', '')}".strip(),
    cost=Cost(gflops=gflops, frames=8, side=224, tflops=160.0),  # an H200: joint 260, divided 166 TFLOP/s at batch 8
    # --smoke: TimeSformer-tiny at 4 x 64^2, consecutive frames (a shuffled state is a jump from one frame to the next)
    smoke={"model.vit_size": "tiny", "data.clip_len": 4, "data.frame_stride": 1, "data.crop_size": 64,
           "train.batch_size": 8, "train.epochs": 6, "optim.lr": 2.0e-4},
    pretext=Pretext(backbone=("space_time", "vit_size", "patch_size"), recipe={"per_class": 64, "epochs": 8, "batch": 8, "lr": 3e-4},
                    filename=_pretext_filename, pack=_facebook_file, head="head"),
    attention_maps=AttentionMaps(attention_rollout, title="CLS attention rollout", suffix="rollout"),
))
