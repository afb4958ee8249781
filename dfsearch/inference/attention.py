"""Attention maps of a trained detector on one video, as PNGs (``python -m dfsearch.predict VIDEO --explain DIR``,
and under ``explain/`` of a sweep's best model, :func:`maps_for_run`).

What each detector family shows (the paper's attention mechanisms, section III):

* 3D ResNet + non-local blocks: for every block, the attention weights softmax(θ(q)ᵀφ(k)) of ONE query, the
  position at the centre of the face crop in the middle frame of the clip, over all space-time positions k,
  drawn over the clip's frames (``<video>.nonlocal.png``);
* 3D ResNet + SE blocks: each block's channel weights (the excitation, paper eq. 2: σ, or 2·σ for an SE block
  that starts as the identity) on this clip, as sorted bars, so a flat profile (every channel kept) and a peaked
  one read at a glance (``<video>.se.png``);
* TimeSformer: attention rollout (Abnar & Zuidema 2020) of the CLS token through every block, averaged over
  heads with the residual as 0.5·I, for joint and divided space-time attention alike (divided: each block is
  its temporal step, then its spatial step), drawn over the frames (``<video>.rollout.png``).

The clip is the one the model saw in training: ``clip_len`` frames at ``frame_stride`` from the middle of the
video, centre crop.  Everything is read with forward hooks; the models are not changed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def middle_clip(det, views: torch.Tensor) -> torch.Tensor:
    """(1, 3, T, H, W) uint8: the training clip shape from the middle of the first test view (the centre crop
    for 3 crops)."""
    from dfsearch.data.clips import clip_indices

    view = views[1] if views.shape[0] == 3 and views.shape[2] == det.cfg.data.clip_len else views[0]
    n = view.shape[1]
    if n == 1:  # a frame model: one frame
        return view[None]
    idx = clip_indices(n, det.cfg.data.clip_len, det.cfg.data.frame_stride)
    return view[:, torch.as_tensor(idx)][None]


class _Inputs:
    """Records the input of every module of some types during one forward pass."""

    def __init__(self, model: torch.nn.Module, types: tuple):
        self.seen: list[tuple[str, torch.nn.Module, torch.Tensor]] = []
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in model.named_modules() if isinstance(m, types)]

    def _hook(self, name):
        def hook(module, inputs, output):
            self.seen.append((name, module, inputs[0].detach()))

        return hook

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _forward(det, clip: torch.Tensor, types: tuple) -> tuple[list, float]:
    from dfsearch.train.loop import Normalizer

    norm = Normalizer(det.cfg, det.device)
    with torch.no_grad(), _Inputs(det.model, types) as rec:
        prob = float(torch.softmax(det.model(norm(clip)).float(), 1)[0, 1])
    return rec.seen, prob


# ------------------------------------------------------------------------------------------------- maps


@torch.no_grad()
def nonlocal_maps(det, clip: torch.Tensor) -> tuple[list[tuple[str, np.ndarray]], float]:
    """Per non-local block: (name, attention (T', H', W') of the face-centre query of the middle frame)."""
    from dfsearch.models.attention import NonLocal3d

    seen, prob = _forward(det, clip, (NonLocal3d,))
    out = []
    for name, block, x in seen:
        q, k, _ = block.qkv(x[:1])
        t, h, w = x.shape[2:]
        query = (t // 2) * h * w + (h // 2) * w + (w // 2)
        weights = torch.softmax((q[0, 0, query] @ k[0, 0].T) * block.softmax_scale, dim=0)
        kh, kw = (h // 2, w // 2) if block.pool is not None else (h, w)
        out.append((name, weights.reshape(t, kh, kw).float().cpu().numpy()))
    return out, prob


@torch.no_grad()
def se_weights(det, clip: torch.Tensor) -> tuple[list[tuple[str, np.ndarray]], float]:
    """Per SE block: (name, the channel weights it applied to this clip: in (0, block.gain), 1 keeps a channel)."""
    from dfsearch.models.attention import SE3d

    seen, prob = _forward(det, clip, (SE3d,))
    out = []
    for name, block, x in seen:
        out.append((name, block.gate(x[:1])[0].float().cpu().numpy()))
    return out, prob


# ------------------------------------------------------------------------------------------------ drawing


def _frames(det, clip: torch.Tensor) -> np.ndarray:
    return clip[0].permute(1, 2, 3, 0).cpu().numpy()  # (T, H, W, 3) uint8


def _overlay_rows(frames: np.ndarray, rows: list[tuple[str, np.ndarray]], title: str, path: Path, query: bool) -> Path:
    """One row per map: up to 8 frames, each with the map (T', h, w) of the nearest time step over it."""
    import matplotlib

    matplotlib.use("Agg")
    import cv2
    import matplotlib.pyplot as plt

    t = len(frames)
    cols = min(8, t)
    picks = np.linspace(0, t - 1, cols).round().astype(int)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.4 * cols, 1.5 * len(rows) + 0.4), squeeze=False, dpi=100)
    size = frames.shape[1]
    for r, (label, amap) in enumerate(rows):
        vmin, vmax = float(amap.min()), float(amap.max())  # colours span this map's own range (blue low, red high)
        vmax = vmax if vmax > vmin else vmin + 1e-12
        for c, f in enumerate(picks):
            ax = axes[r][c]
            ti = min(len(amap) - 1, int(f * len(amap) / t))
            heat = cv2.resize(amap[ti].astype(np.float32), (size, size), interpolation=cv2.INTER_NEAREST)
            ax.imshow(frames[f])
            ax.imshow(heat, cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
            if query and ti == len(amap) // 2 and c == cols // 2:
                ax.plot([size / 2], [size / 2], "w+", ms=10, mew=2)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=6)
            if r == 0:
                ax.set_title(f"frame {f}", fontsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _se_bars(rows: list[tuple[str, np.ndarray]], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(6, 1.3 * len(rows) + 0.5), squeeze=False, dpi=100)
    for ax, (label, w) in zip(axes[:, 0], rows):
        ax.bar(np.arange(len(w)), np.sort(w)[::-1], width=1.0)
        ax.set_ylim(0, max(1.0, float(w.max())))  # an identity-start SE gate spans (0, 2); 1 keeps a channel as it is
        ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.set_ylabel(label, fontsize=6)
        ax.set_title(f"{len(w)} channels: mean {w.mean():.2f}, min {w.min():.2f}, max {w.max():.2f}", fontsize=6)
        ax.set_xticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def explain_clip(det, clip: torch.Tensor, out_dir: str | Path, stem: str) -> list[Path]:
    """The PNGs of one clip (uint8 (1, 3, T, H, W)) for the detector's attention kind; [] when it has none."""
    from dfsearch.models.attention import NonLocal3d, SE3d

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = {type(m) for m in det.model.modules()}
    frames = _frames(det, clip)
    written = []
    if NonLocal3d in kinds:
        maps, prob = nonlocal_maps(det, clip)
        rows = [(f"{name}\n{m.shape[0]}x{m.shape[1]}x{m.shape[2]}", m) for name, m in maps]
        written.append(_overlay_rows(frames, rows, f"non-local attention of the face-centre query (+), middle frame · {stem} · clip P(fake) {prob:.3f}",
                                     out_dir / f"{stem}.nonlocal.png", query=True))
    if SE3d in kinds:
        weights, prob = se_weights(det, clip)
        written.append(_se_bars(weights, f"SE channel weights per block, sorted · {stem} · clip P(fake) {prob:.3f}", out_dir / f"{stem}.se.png"))
    from dfsearch.models import registry
    from dfsearch.train.loop import Normalizer

    maps = registry.get(det.cfg.model.name).attention_maps  # the family's own maps (TimeSformer: CLS rollout)
    if maps is not None:
        rows, prob = maps.compute(det.model, Normalizer(det.cfg, det.device)(clip))
        written.append(_overlay_rows(frames, rows, f"{maps.title} · {stem} · clip P(fake) {prob:.3f}",
                                     out_dir / f"{stem}.{maps.suffix}.png", query=False))
    return written


def explain_videos(det, videos: list[str], out_dir: str | Path) -> dict[str, list[Path]]:
    """Track each (already scored) video again and write its attention PNGs into ``out_dir``."""
    import tempfile

    from dfsearch.inference.scoring import face_views

    out = {}
    with tempfile.TemporaryDirectory(prefix="dfsearch-explain-") as tmp:
        for video in videos:
            views, _ = face_views(det, video, Path(tmp))
            clip = middle_clip(det, views)
            out[video] = explain_clip(det, clip, out_dir, Path(video).stem)
            if not out[video]:
                log.warning("%s: a %s has no attention blocks to draw", video, det.cfg.model.name)
    return out


def maps_for_run(cfg, model, folder: Path) -> list[Path]:
    """The PNGs of a trial's first fake test video (its first test video if none is fake) into ``folder``: what a
    logged best model shows under ``explain/`` (:func:`dfsearch.tracking.best_model.log_best_models`'s ``draw_maps``)."""
    from dfsearch import data as dfdata
    from dfsearch.data.protocols import protocol_videos
    from dfsearch.inference.detector import Detector

    _, info, videos = dfdata.load_prepared(cfg.data)
    test = protocol_videos(videos, cfg.protocol.name)["test"]
    video = next((v for v in test if v.label == 1), test[0] if test else None)
    if video is None:
        return []
    clips = dfdata.eval_clips(cfg, [video], info.cache_dir)
    det = Detector(cfg, model.eval(), {}, "", torch.device("cpu"))
    return explain_clip(det, middle_clip(det, clips[0][0]), folder, video.video_id.replace("/", "_"))
