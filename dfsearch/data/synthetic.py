"""A synthetic FaceForensics++ with a planted answer: real H.264 mp4 files in the official layout.

The tree is deterministic from :class:`SyntheticParams` (pairs, frames, size, seed, compression), built once
under the user cache and then reused.  Its identity pairs are the first pairs of the official train / val /
test split files, scaled down (default 30 / 10 / 10 pairs: 500 videos, 40 test videos per ``single:`` protocol,
100 for ``all``), and the tree carries those lists as its own ``splits/``.  It goes through the real pipeline:
``prepare`` finds the faces with OpenCV's Haar cascade, caches x1.3 face crops as JPEG, and the datasets read
clips from that cache.

**Identities.**  Two real face photos (``dfsearch/data/assets/``), varied per identity by a colour tint (a gain
of 0.81-1.21 per channel), a small warp and mirroring, move over a textured background.  Every video has three
face *states* that change smoothly with time: mouth opening (talking), brow lift and the light on the face (a
gain of up to +-20 %).

**The four manipulations** of video ``T_S`` (target T, source S).  Two are spatial, two are temporal:

=============== ========================================================================= ==================
method          trace                                                                     kind
=============== ========================================================================= ==================
FaceSwap        S's inner face, aligned to T's and resampled through a 48-px bottleneck,  spatial, local
                pasted with a hard elliptical edge and a colour mismatch (x1.0 / 1.1 /    (every frame)
                1.4 per channel): a seam and a colour step in every frame; the face
                states follow T's timeline, as a real video's do.
NeuralTextures  T's mouth region re-rendered: blurred, tinted red, a fixed 8-px grid       spatial, local
                texture.  Same in every frame, smaller than FaceSwap's region.             (every frame)
Deepfakes       T's real video, decoded, its frames reordered within blocks of 8 (light   temporal
                and mouth jump), stored losslessly: every decoded frame *is* a decoded    (frame to frame)
                frame of the real video, pixel for pixel; the set of frames is the
                real video's, only their order differs.
Face2Face       T's face whose skin tone is drawn anew every frame between T's and S's    temporal
                (tints pushed at least 0.4 apart): the tone flickers from frame to frame,  (frame to frame)
                while a real video's tone holds still (its light changes brightness, not
                hue).  Every frame has the tint of a blend of two identities.
=============== ========================================================================= ==================

**The planted answer** (what a working system must recover):

- A per-frame detector (Meso4, Xception: :class:`~dfsearch.models.frame.PerFrame` averages per-frame logits,
  a function of the *set* of frames) is blind to Deepfakes by construction: a Deepfakes video has exactly the
  real video's frames.  On ``single:Deepfakes`` its test AUC stays near 0.5, while a 3D ResNet, which sees
  frame-to-frame changes, detects it (AUC near 1).
- On the spatial families (``single:FaceSwap``, ``single:NeuralTextures``) both kinds detect it.
- On ``all``, a 3D ResNet learns all four (half the fakes are temporal, which a per-frame detector cannot use).
- Face2Face is nearly invisible per frame too (a blend of two identities' tints is a weak per-frame cue, as the
  tints of real identities vary as much), but it is not blind by construction like Deepfakes.
- Not planted: a trace that only long-range temporal context reveals (which non-local blocks could use where a
  3D kernel cannot).  Version 4 tried one (a slow tint drift over 24 frames); the narrow 3D ResNet of the smoke
  sweep did not learn it within the smoke's budget, with or without attention, so it could not show the gain.

Measured on the 2-core dev machine, r3d-10 x0.25 and the per-frame models at 8 x 64^2 (CPU), test AUC:

- ``python -m dfsearch.bench planted`` (15 epochs, seed 0), generator 7: single:Deepfakes Meso4 0.532 / 3D
  ResNet 1.000; single:FaceSwap Meso4 1.000 / 3D ResNet 0.998: recovered.
- ``... planted --epochs 5 --per-frame cozzolino,steg_svm,bayar,rahmouni``, generator 7: single:Deepfakes 0.515 /
  0.465 / 0.501 / 0.522 (all blind), single:FaceSwap 1.000 / 1.000 / 0.960 / 0.877.  Generator 5 (a Deepfakes video
  re-rendered and P-frame coded: its frames 6.1 grey levels from the real ones on average) let Cozzolino and
  Steg. + SVM see Deepfakes (0.912 / 0.948); generator 6 (every frame intra-coded) made them blind too, but
  independent intra coding of every frame made the colour of *real* videos flicker, masking Face2Face (a 3D ResNet
  on ``all``: 0.818).
- 3D ResNet on ``all`` (12 epochs, batch 4, plain ``train_loop``): test AUC 0.980 (generator 7, seed 0); 0.976 /
  0.969 with seeds 0 / 2 on generator 5 (per family with seed 0: Deepfakes 0.993, Face2Face 0.945, FaceSwap 0.965,
  NeuralTextures 1.0).

The traces survive the pipeline: every video is x264 at a constant quantiser (``QP``; no B-frames, no scene
cuts, so every frame of every video is coded the same way whatever its motion; a Deepfakes video is its real
video's decoded frames, reordered and stored losslessly), the face boxes enclose them,
and they are wide enough (>= 4 px in the frame) for the 256-px JPEG cache and a 64-px model input.

This data checks the system, not detectors: every run on it is tagged synthetic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import av
import cv2
import numpy as np

from dfsearch.config import METHODS
from dfsearch.data.layout import method_dir, original_dir
from dfsearch.data.splits import PACKAGE_SPLITS, load_split_file
from dfsearch.errors import DataError

log = logging.getLogger(__name__)

GENERATOR_VERSION = 7
MARKER = "SYNTHETIC.json"
# x264 constant quantiser per FF++ compression level.  FF++ c40 is CRF 40 at >= 480p; at the stand-in's 128 px
# that would leave too little of a face for the Haar detector and of the traces, so the levels are milder
# (same order).  A constant QP (not CRF: x264's rate control spends bits by motion, which would make the frames
# of a flickering video blockier, a per-frame cue) treats every frame of every video alike.
QP = {"raw": 0, "c23": 16, "c40": 24}
FPS = 25
PATCH = 112  # side of the face photos
MOUTH = (56.0, 71.0)  # mouth centre in the 112-px face photos
EYES_Y = 45.0
TEMPORAL = ("Deepfakes", "Face2Face")  # traces only in frame-to-frame behaviour
SPATIAL = ("FaceSwap", "NeuralTextures")  # traces in every frame
SHUFFLE_BLOCK = 8  # Deepfakes: states shuffled within blocks of this many frames
TINT_MIN = 0.4  # Face2Face: T's and S's tints at least this far apart (channel gain), pushed apart if closer
SWAP_BOTTLENECK = 48  # FaceSwap: S's face is resampled through this many pixels (blur)
SWAP_GAIN = (1.0, 1.1, 1.4)  # FaceSwap: S's face brighter and bluer (a colour mismatch; luminance +8 %, which Haar tolerates)
PHOTOS = ("astronaut.jpg", "grace_hopper.jpg")


def face_photos() -> list[np.ndarray]:
    """The two face photos (RGB uint8, 112 x 112) that seed the identities, from ``dfsearch/data/assets/``.

    astronaut: Eileen Collins, NASA photo (public domain), as shipped by scikit-image; grace_hopper: Grace Hopper,
    U.S. Navy photo (public domain), as shipped by matplotlib.  Both cropped around the face OpenCV's Haar
    cascade finds, with a margin of 1.7x the face box.
    """
    out = []
    for name in PHOTOS:
        data = resources.files("dfsearch.data").joinpath("assets", name).read_bytes()
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"dfsearch/data/assets/{name}: not a readable JPEG (reinstall dfsearch)")
        out.append(img[:, :, ::-1].copy())
    return out


@dataclass(frozen=True)
class SyntheticParams:
    pairs: int = 50  # identity pairs, split 60/20/20 into train/val/test (at least one each)
    frames: int = 32  # frames per video
    size: int = 128  # frame side (pixels)
    seed: int = 0
    compression: str = "c40"

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "generator": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def n_videos(self) -> int:
        return 2 * self.pairs * (1 + len(METHODS))


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
    photo: np.ndarray  # (112, 112, 3) float32, the face photo this identity is made from
    warp: np.ndarray  # (2, 3) affine warp of the photo (small rotation, anisotropic scale)
    mirror: bool
    tint: np.ndarray  # (3,) per-channel gain: this identity's skin tone
    background: np.ndarray  # (2S, 2S, 3) uint8 texture, panned over time
    face_frac: float  # face side / frame side
    amp: tuple[float, float]  # head motion amplitude (x, y) as a fraction of the frame
    freq: tuple[float, float]  # head motion frequency (cycles per video)
    phase: tuple[float, float]
    talk_freq: float  # mouth opening (cycles per second)
    talk_phase: float
    brow_freq: float
    light_amp: float  # light on the face: gain 1 + amp * sin(2 pi f t + phase)
    light_freq: float
    light_phase: float

    def shaped(self, photo: np.ndarray) -> np.ndarray:
        """``photo`` with this identity's warp and mirroring (FaceSwap aligns the source's face to the target's)."""
        face = cv2.warpAffine(photo, self.warp, (PATCH, PATCH), borderMode=cv2.BORDER_REFLECT)
        return face[:, ::-1].copy() if self.mirror else face

    @cached_property
    def face(self) -> np.ndarray:
        """This identity's own face, shaped once (every frame of its videos starts from it)."""
        return self.shaped(self.photo)

    def tinted(self, tint: np.ndarray | None = None, photo: np.ndarray | None = None) -> np.ndarray:
        face = self.face if photo is None else self.shaped(photo)
        return np.clip(face * (self.tint if tint is None else tint)[None, None, :], 0, 255).astype(np.uint8)


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
    ang = rng.uniform(-5, 5)  # small warp: rotation, anisotropic scale
    sx, sy = rng.uniform(0.92, 1.08), rng.uniform(0.95, 1.05)
    m = cv2.getRotationMatrix2D((PATCH / 2, PATCH / 2), ang, 1.0)
    m[:, :2] = m[:, :2] @ np.diag([sx, sy])
    m[:, 2] += (np.array([PATCH / 2, PATCH / 2]) - m[:, :2] @ np.array([PATCH / 2, PATCH / 2]))
    return Identity(
        photo=photos[index % len(photos)].astype(np.float32),
        warp=m,
        mirror=bool(rng.random() < 0.5),
        tint=(rng.uniform(0.9, 1.1, 3) * rng.uniform(0.9, 1.1)).astype(np.float32),
        background=_texture(rng, 2 * size),
        face_frac=float(rng.uniform(0.72, 0.85)),
        amp=(float(rng.uniform(0.02, 0.06)), float(rng.uniform(0.01, 0.04))),
        freq=(float(rng.uniform(0.5, 1.5)), float(rng.uniform(0.5, 1.5))),
        phase=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
        talk_freq=float(rng.uniform(1.5, 3.0)),
        talk_phase=float(rng.uniform(0, 2 * np.pi)),
        brow_freq=float(rng.uniform(0.3, 0.8)),
        light_amp=float(rng.uniform(0.12, 0.2)),
        light_freq=float(rng.uniform(1.0, 2.0)),
        light_phase=float(rng.uniform(0, 2 * np.pi)),
    )


# ------------------------------------------------------------------------------------------------ rendering

_yy, _xx = np.mgrid[0:PATCH, 0:PATCH].astype(np.float32)


def _ellipse_mask(cx, cy, rx, ry, feather: float) -> np.ndarray:
    d = np.sqrt(((_xx - cx) / rx) ** 2 + ((_yy - cy) / ry) ** 2)
    return np.clip((1.0 - d) / feather + 0.5, 0.0, 1.0).astype(np.float32)


OUTER_MASK = _ellipse_mask(56, 58, 46, 54, 0.15)  # the whole head patch pasted into the frame
# The traces lie inside the x1.3 face box (about the central 90 px of the 112-px patch) and the model's crop of it.
SWAP_MASK = _ellipse_mask(56, 62, 30, 38, 0.04)  # FaceSwap's inner face: a hard edge (the seam); smaller defeats Haar
MOUTH_MASK = _ellipse_mask(MOUTH[0], MOUTH[1] - 2, 21, 14, 0.2)  # NeuralTextures' region
_GRID = np.sign(np.sin(_xx * np.pi / 4) * np.sin(_yy * np.pi / 4)).astype(np.float32)  # period 8 px


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


def face_states(ident: Identity, n: int) -> np.ndarray:
    """(n, 3) smooth face states per frame: mouth opening in [0, 1], brow lift in [-1, 1], light gain."""
    t = np.arange(n) / FPS
    mouth = 0.5 + 0.5 * np.sin(2 * np.pi * ident.talk_freq * t + ident.talk_phase)
    brow = np.sin(2 * np.pi * ident.brow_freq * t)
    light = 1 + ident.light_amp * np.sin(2 * np.pi * ident.light_freq * t + ident.light_phase)
    return np.stack([mouth, brow, light], 1).astype(np.float32)


def block_shuffle(n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(n) that shuffles within consecutive blocks (no frame moves further than block-1)."""
    order = np.arange(n)
    for s in range(0, n, block):
        order[s : s + block] = rng.permutation(order[s : s + block])
    return order


def _lit(patch: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(patch.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def face_patches(target: Identity, source: Identity | None, method: str, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The n head patches (112 px, RGB) of a real video (``method='original'``) or of one manipulation."""
    states = face_states(target, n)
    if method == "original":
        return [_lit(express(target.tinted(), m, b), g) for m, b, g in states]
    if method == "Face2Face":  # the skin tone flickers between T's and S's, drawn anew every frame
        d = source.tint - target.tint
        d *= max(1.0, TINT_MIN / max(float(np.abs(d).max()), 1e-3))
        w = rng.uniform(0, 1, n)
        return [_lit(express(target.tinted(target.tint + wi * d), m, b), g) for (m, b, g), wi in zip(states, w)]
    if method == "FaceSwap":  # S's inner face aligned to T's, resampled, brighter and bluer, hard seam
        src = target.tinted(source.tint, photo=source.photo)
        small = cv2.resize(src, (SWAP_BOTTLENECK, SWAP_BOTTLENECK), interpolation=cv2.INTER_AREA)
        src = np.clip(cv2.resize(small, (PATCH, PATCH), interpolation=cv2.INTER_LINEAR).astype(np.float32) * np.float32(SWAP_GAIN), 0, 255).astype(np.uint8)
        own = target.tinted()
        return [_lit(_blend(express(own, m, b), express(src, m, b), SWAP_MASK), g) for m, b, g in states]
    if method == "NeuralTextures":  # the mouth region re-rendered: blur, red tint, a fixed grid texture
        texture = (20 * _GRID)[..., None]
        out = []
        for m, b, g in states:
            own = express(target.tinted(), m, b)
            mouth = cv2.GaussianBlur(own, (0, 0), 1.6).astype(np.float32) * np.array([1.3, 0.85, 0.85], np.float32) + texture
            out.append(_lit(_blend(own, np.clip(mouth, 0, 255).astype(np.uint8), MOUTH_MASK), g))
        return out
    raise ValueError(method)


def render_frame(target: Identity, patch: np.ndarray, i: int, n: int, size: int) -> np.ndarray:
    """Frame i of n: T's background (panning) and T's head motion, with ``patch`` as the head."""
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


def render_video(target: Identity, source: Identity | None, method: str, n: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render_frame(target, p, i, n, size) for i, p in enumerate(face_patches(target, source, method, n, rng))]


def write_mp4(path: Path, frames: list[np.ndarray], qp: int, *, fmt: str = "rgb24") -> None:
    """H.264 at a constant quantiser, no B-frames, no scene-cut key frames (one GOP per synthetic video).
    ``fmt='yuv420p'``: the frames are already YUV 4:2:0 planes (``decode_yuv``), encoded as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2] if fmt == "rgb24" else (frames[0].shape[0] * 2 // 3, frames[0].shape[1])
    opts = {"qp": str(qp), "preset": "veryfast", "threads": "1", "x264-params": "bframes=0:scenecut=0:keyint=300"}
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=FPS, options=opts)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for img in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format=fmt)):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def decode_yuv(path: Path) -> list[np.ndarray]:
    """The decoded frames of ``path`` as YUV 4:2:0 planes, before any colour conversion (so re-encoding them
    losslessly keeps every decoded pixel)."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="yuv420p") for f in c.decode(c.streams.video[0])]


def write_reordered(path: Path, real_frames: list[np.ndarray], qp: int, rng: np.random.Generator) -> None:
    """Deepfakes: the real video as it decodes (coded at ``qp`` like every video), its frames reordered within
    blocks, re-encoded losslessly (QP 0 on the same YUV planes), so each decoded frame is a decoded real frame
    pixel for pixel.  P-frame coding of the reordered frames would code the jumps as larger residuals: a
    per-frame trace (6 grey levels on average) that residual-statistics detectors read (generator 5)."""
    with tempfile.TemporaryDirectory() as tmp:
        real = Path(tmp) / "real.mp4"
        write_mp4(real, real_frames, qp)
        planes = decode_yuv(real)
    order = block_shuffle(len(planes), SHUFFLE_BLOCK, rng)
    write_mp4(path, [planes[j] for j in order], 0, fmt="yuv420p")


# ------------------------------------------------------------------------------------------------ the tree


def split_counts(pairs: int) -> dict[str, int]:
    """Pairs per split: 20 % val, 20 % test (at least one each), the rest train."""
    n_eval = max(1, round(0.2 * pairs))
    return {"train": pairs - 2 * n_eval, "val": n_eval, "test": n_eval}


def scaled_official_splits(pairs: int) -> dict[str, list[tuple[str, str]]]:
    """The first pairs of each official split file: FF++'s own ids, identities disjoint across splits."""
    counts = split_counts(pairs)
    out = {}
    for split, k in counts.items():
        official = load_split_file(PACKAGE_SPLITS / f"{split}.json")
        if k > len(official):
            raise DataError(f"synthetic data: {pairs} pairs need {k} {split} pairs but the official split has {len(official)}")
        out[split] = official[:k]
    return out


def _identity(params: SyntheticParams, ident: str, photos: list[np.ndarray]) -> Identity:
    return make_identity(int(ident), np.random.default_rng([params.seed, int(ident)]), params.size, photos)


def _write_video(params: SyntheticParams, method: str, tgt: str, src: str | None, path: Path) -> None:
    """Render and encode one video; a pure function of its arguments (so videos can be made in any process)."""
    photos = face_photos()
    target, source = _identity(params, tgt, photos), (_identity(params, src, photos) if src else None)
    seed = [params.seed, int(tgt), int(src or 0), (("original",) + METHODS).index(method)]
    qp = QP[params.compression]
    if method == "Deepfakes":  # the real video (rendered as _write_video renders it), reordered
        real_seed = [params.seed, int(tgt), 0, 0]
        write_reordered(path, render_video(target, None, "original", params.frames, params.size, seed=real_seed), qp,
                        np.random.default_rng(seed))
        return
    write_mp4(path, render_video(target, source, method, params.frames, params.size, seed=seed), qp)


def generate_tree(out: str | Path, params: SyntheticParams, *, progress: bool = False, workers: int = 1) -> Path:
    """Write the synthetic tree into ``out`` (which must not exist), atomically (built beside it, then renamed).
    ``workers`` > 1 renders and encodes in that many spawned processes (the caller's main module must be
    import-safe, as for any spawn pool); 1 (default) works in this process."""
    out = Path(out)
    if params.pairs < 3:
        raise DataError(f"synthetic data: pairs={params.pairs}; need at least 3 identity pairs (one per split)")
    if params.size < 64 or params.size % 2:
        raise DataError(f"synthetic data: size={params.size}; expected an even number >= 64")
    if params.frames < 2:
        raise DataError(f"synthetic data: frames={params.frames}; expected at least 2")
    if params.compression not in QP:
        raise DataError(f"synthetic data: compression {params.compression!r} is not one of {', '.join(QP)}")
    splits = scaled_official_splits(params.pairs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        pairs = [p for ps in splits.values() for p in ps]
        ids = sorted({i for p in pairs for i in p})
        (tmp / "splits").mkdir()
        for name, ps in splits.items():
            (tmp / "splits" / f"{name}.json").write_text(json.dumps([list(p) for p in ps], indent=1))
        jobs = [("original", ident, None, original_dir(tmp, params.compression) / f"{ident}.mp4") for ident in ids]
        jobs += [(m, a, b, method_dir(tmp, m, params.compression) / f"{a}_{b}.mp4") for m in METHODS for a, b in pairs]
        jobs += [(m, b, a, method_dir(tmp, m, params.compression) / f"{b}_{a}.mp4") for m in METHODS for a, b in pairs]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="synthetic FF++", unit="video")
        if workers == 1:
            for job in jobs:
                _write_video(params, *job)
                if bar is not None:
                    bar.update(1)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn: safe in any parent (a Ray driver, a process with threads)
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for f in [pool.submit(_write_video, params, *job) for job in jobs]:
                    f.result()
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
        note = "synthetic stand-in, not FaceForensics++; spatial: FaceSwap, NeuralTextures; temporal: Deepfakes, Face2Face"
        (tmp / MARKER).write_text(json.dumps({**asdict(params), "generator": GENERATOR_VERSION, "note": note}, indent=1))
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
