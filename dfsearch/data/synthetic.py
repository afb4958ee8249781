"""A synthetic stand-in for FaceForensics++: a real tree of H.264 mp4 files in the official layout.

Deterministic from (pairs, frames, size, seed, compression).  Identities are built from two real face photos
(:mod:`dfsearch.data._faces`), varied per identity by colour, scale, small warps and mirroring, moving and
"talking" over a textured background, so OpenCV's Haar detector finds them.  The four manipulations of video
``T_S`` (target T's video, source S) leave traces like the real ones:

- FaceSwap: the inner face of S pasted on T with a feathered blend and no colour correction (colour mismatch);
- Deepfakes: the face of S squeezed through a low-resolution bottleneck (autoencoder-like resampling), colour
  matched to T and blended;
- Face2Face: T's own face with S's expression (mouth and brow motion) warped in and the face region re-rendered;
- NeuralTextures: only T's mouth region re-rendered (blurred texture, noise, colour shift) following S's mouth.

This data is for plumbing and speed checks only; every run on it is tagged synthetic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from dfsearch.config import METHODS
from dfsearch.data._faces import face_photos
from dfsearch.data.layout import method_dir, original_dir
from dfsearch.errors import DataError

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MARKER = "SYNTHETIC.json"
# x264 CRF per FF++ compression level.  FF++ c40 is CRF 40 at >= 480p; at the stand-in's 128 px that
# leaves too little of a face for the Haar detector, so the synthetic levels are one step milder (same order).
CRF = {"raw": 0, "c23": 18, "c40": 28}
FPS = 25
PATCH = 112  # side of the face photos
MOUTH = (56.0, 71.0)  # mouth centre in the 112-px face photos
EYES_Y = 45.0


@dataclass(frozen=True)
class SyntheticParams:
    pairs: int = 12
    frames: int = 40
    size: int = 128
    seed: int = 0
    compression: str = "c40"

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "generator": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def synthetic_home() -> Path:
    base = os.environ.get("DFSEARCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "dfsearch") / "synthetic"


def synthetic_root(params: SyntheticParams) -> Path:
    return synthetic_home() / params.key()


def is_synthetic(root: str | Path) -> bool:
    return (Path(root) / MARKER).is_file()


# ------------------------------------------------------------------------------------------------ identities


@dataclass
class Identity:
    face: np.ndarray  # (112, 112, 3) uint8, this identity's appearance
    background: np.ndarray  # (2S, 2S, 3) uint8 texture, panned over time
    face_frac: float  # face side / frame side
    amp: tuple[float, float]  # motion amplitude (x, y) as a fraction of the frame
    freq: tuple[float, float]  # motion frequency (cycles per video)
    phase: tuple[float, float]
    talk_freq: float  # mouth opening frequency (cycles per second)
    talk_phase: float
    brow_freq: float


def _texture(rng: np.random.Generator, side: int) -> np.ndarray:
    """Low-frequency colour noise plus stripes: a background the detector will not mistake for a face."""
    small = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
    tex = cv2.resize(small, (side, side), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    stripes = 25 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * rng.uniform(0.15, 0.4))
    tex = tex * 0.5 + 60 + 0.6 * stripes[..., None] + rng.normal(0, 6, (side, side, 3))
    return np.clip(tex, 0, 255).astype(np.uint8)


def make_identity(index: int, rng: np.random.Generator, size: int, photos: list[np.ndarray]) -> Identity:
    face = photos[index % len(photos)].astype(np.float32)
    # colour: per-channel tint and a brightness gain
    face = face * rng.uniform(0.8, 1.15, 3)[None, None, :] * rng.uniform(0.85, 1.1)
    face = np.clip(face, 0, 255).astype(np.uint8)
    # small warp: rotation, anisotropic scale, shear
    ang = rng.uniform(-5, 5)
    sx, sy = rng.uniform(0.92, 1.08), rng.uniform(0.95, 1.05)
    m = cv2.getRotationMatrix2D((PATCH / 2, PATCH / 2), ang, 1.0)
    m[:, :2] = m[:, :2] @ np.diag([sx, sy])
    m[:, 2] += (np.array([PATCH / 2, PATCH / 2]) - m[:, :2] @ np.array([PATCH / 2, PATCH / 2]))
    face = cv2.warpAffine(face, m, (PATCH, PATCH), borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        face = face[:, ::-1].copy()
    return Identity(
        face=face,
        background=_texture(rng, 2 * size),
        face_frac=float(rng.uniform(0.72, 0.85)),
        amp=(float(rng.uniform(0.02, 0.06)), float(rng.uniform(0.01, 0.04))),
        freq=(float(rng.uniform(0.5, 1.5)), float(rng.uniform(0.5, 1.5))),
        phase=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
        talk_freq=float(rng.uniform(1.5, 3.0)),
        talk_phase=float(rng.uniform(0, 2 * np.pi)),
        brow_freq=float(rng.uniform(0.3, 0.8)),
    )


# ------------------------------------------------------------------------------------------------ rendering

_yy, _xx = np.mgrid[0:PATCH, 0:PATCH].astype(np.float32)


def _ellipse_mask(cx, cy, rx, ry, feather: float) -> np.ndarray:
    d = np.sqrt(((_xx - cx) / rx) ** 2 + ((_yy - cy) / ry) ** 2)
    return np.clip((1.0 - d) / feather + 0.5, 0.0, 1.0).astype(np.float32)


OUTER_MASK = _ellipse_mask(56, 58, 46, 54, 0.15)  # the whole head patch pasted into the frame
INNER_MASK = _ellipse_mask(56, 62, 30, 38, 0.25)  # the inner face that swaps replace
MOUTH_MASK = _ellipse_mask(MOUTH[0], MOUTH[1] + 2, 17, 11, 0.35)


def _gauss(cx, cy, r) -> np.ndarray:
    return np.exp(-(((_xx - cx) ** 2 + (_yy - cy) ** 2) / (2 * r * r))).astype(np.float32)


_MOUTH_BUMP = _gauss(MOUTH[0], MOUTH[1], 10)
_BROW_BUMP = _gauss(56, EYES_Y - 8, 16)


def express(face: np.ndarray, mouth_open: float, brow: float) -> np.ndarray:
    """Warp a face photo: stretch the mouth region vertically (talking) and lift the brows."""
    dy = -(_yy - MOUTH[1]) * 0.35 * mouth_open * _MOUTH_BUMP + brow * 2.5 * _BROW_BUMP
    return cv2.remap(face, _xx, _yy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _blend(base: np.ndarray, top: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    return (top.astype(np.float32) * m + base.astype(np.float32) * (1 - m)).astype(np.uint8)


def _expression(ident: Identity, t: float) -> tuple[float, float]:
    mouth = 0.5 + 0.5 * np.sin(2 * np.pi * ident.talk_freq * t + ident.talk_phase)
    brow = np.sin(2 * np.pi * ident.brow_freq * t)
    return float(mouth), float(brow)


def face_patch(target: Identity, source: Identity | None, method: str, t: float, rng: np.random.Generator) -> np.ndarray:
    """The 112-px head patch of frame time ``t`` for a real video (source None) or one manipulation."""
    mouth, brow = _expression(target, t)
    own = express(target.face, mouth, brow)
    if method == "original":
        return own
    s_mouth, s_brow = _expression(source, t)
    if method == "FaceSwap":
        swapped = express(source.face, mouth, brow).astype(np.float32) * 1.06  # no colour correction, a gain
        return _blend(own, np.clip(swapped, 0, 255).astype(np.uint8), INNER_MASK)
    if method == "Deepfakes":
        src = express(source.face, mouth, brow)
        small = cv2.resize(src, (56, 56), interpolation=cv2.INTER_AREA)  # the "latent" resolution
        fake = cv2.resize(small, (PATCH, PATCH), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        m = INNER_MASK > 0.5
        fake += own[m].reshape(-1, 3).mean(0) - fake[m].reshape(-1, 3).mean(0)  # colour matched to the target
        return _blend(own, np.clip(fake, 0, 255).astype(np.uint8), INNER_MASK)
    if method == "Face2Face":
        reenacted = express(target.face, s_mouth, s_brow)
        rerendered = cv2.GaussianBlur(reenacted, (3, 3), 0.8)
        return _blend(own, rerendered, INNER_MASK)
    if method == "NeuralTextures":
        mouth_img = express(target.face, s_mouth, brow).astype(np.float32)
        mouth_img = cv2.GaussianBlur(mouth_img, (5, 5), 1.4) * np.array([1.08, 0.95, 0.95], np.float32)
        mouth_img += rng.normal(0, 5, mouth_img.shape).astype(np.float32)
        return _blend(own, np.clip(mouth_img, 0, 255).astype(np.uint8), MOUTH_MASK)
    raise ValueError(method)


def render_frame(target: Identity, patch: np.ndarray, i: int, n: int, size: int) -> np.ndarray:
    u = i / max(n - 1, 1)
    off = int(round(u * size * 0.3))
    frame = target.background[off : off + size, off // 2 : off // 2 + size].copy()
    side = target.face_frac * size * (1 + 0.04 * np.sin(2 * np.pi * u))
    cx = size / 2 + target.amp[0] * size * np.sin(2 * np.pi * target.freq[0] * u + target.phase[0])
    cy = size / 2 + target.amp[1] * size * np.sin(2 * np.pi * target.freq[1] * u + target.phase[1])
    k = side / PATCH
    m = np.array([[k, 0, cx - k * PATCH / 2], [0, k, cy - k * PATCH / 2]], np.float32)
    warped = cv2.warpAffine(patch, m, (size, size), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(OUTER_MASK, m, (size, size), flags=cv2.INTER_LINEAR)
    return _blend(frame, warped, alpha)


def write_mp4(path: Path, frames: list[np.ndarray], crf: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=FPS, options={"crf": str(crf), "preset": "veryfast", "threads": "1"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for img in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def render_video(target: Identity, source: Identity | None, method: str, n: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render_frame(target, face_patch(target, source, method, i / FPS, rng), i, n, size) for i in range(n)]


# ------------------------------------------------------------------------------------------------ the tree


def split_pairs(pairs: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    n = len(pairs)
    n_test = max(1, round(0.2 * n))
    n_val = max(1, round(0.2 * n))
    return {"train": pairs[: n - n_val - n_test], "val": pairs[n - n_val - n_test : n - n_test], "test": pairs[n - n_test :]}


def generate_tree(out: str | Path, params: SyntheticParams, *, progress: bool = False) -> Path:
    """Write the synthetic tree into ``out`` (which must not exist), atomically (built beside it, then renamed)."""
    out = Path(out)
    if params.pairs < 3:
        raise DataError("synthetic data needs at least 3 identity pairs (one per split)")
    if params.size < 64 or params.size % 2:
        raise DataError(f"synthetic size {params.size}: expected an even number >= 64")
    if params.compression not in CRF:
        raise DataError(f"compression {params.compression!r} is not one of {', '.join(CRF)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        photos = face_photos()
        rng = np.random.default_rng(params.seed)
        n_ids = 2 * params.pairs
        ids = [f"{i:03d}" for i in range(n_ids)]
        people = {ident: make_identity(i, np.random.default_rng([params.seed, i]), params.size, photos) for i, ident in enumerate(ids)}
        order = rng.permutation(n_ids)
        pairs = [(ids[order[2 * k]], ids[order[2 * k + 1]]) for k in range(params.pairs)]
        splits = split_pairs(pairs)
        (tmp / "splits").mkdir()
        for name, ps in splits.items():
            (tmp / "splits" / f"{name}.json").write_text(json.dumps([list(p) for p in ps], indent=1))
        crf = CRF[params.compression]
        jobs = [("original", ident, None) for ident in ids]
        jobs += [(m, a, b) for m in METHODS for a, b in pairs] + [(m, b, a) for m in METHODS for a, b in pairs]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="synthetic FF++", unit="video")
        for j, (method, tgt, src) in enumerate(jobs):
            frames = render_video(people[tgt], people.get(src), method, params.frames, params.size, seed=params.seed * 100003 + j)
            if method == "original":
                path = original_dir(tmp, params.compression) / f"{tgt}.mp4"
            else:
                path = method_dir(tmp, method, params.compression) / f"{tgt}_{src}.mp4"
            write_mp4(path, frames, crf)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        (tmp / MARKER).write_text(json.dumps({**asdict(params), "generator": GENERATOR_VERSION, "note": "synthetic stand-in, not FaceForensics++"}, indent=1))
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / MARKER).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def ensure_synthetic_tree(params: SyntheticParams, *, progress: bool = False) -> Path:
    """The generated tree for ``params`` (made once under the user cache; later calls just return it)."""
    root = synthetic_root(params)
    if (root / MARKER).is_file():
        return root
    if root.exists():  # a foreign or broken folder where our tree should be
        shutil.rmtree(root)
    log.info("generating synthetic FaceForensics++ stand-in in %s", root)
    return generate_tree(root, params, progress=progress)
