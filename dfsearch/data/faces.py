"""Face detectors, face boxes and face tracks.

Two detector backends share one interface, ``detect(rgb) -> (K, 4) float boxes [x0, y0, x1, y1]``:

- ``face_alignment`` (the paper's: Bulat & Tzimiropoulos 2D landmarks; the box spans the 68 landmarks).  Its
  weights live in the torch hub cache (``torch.hub.get_dir()/checkpoints``); with internet face-alignment
  fetches them itself, offline a missing file is one :class:`DataError` saying where to put it.  On a CPU
  ``compile=False`` (torch.compile costs minutes there), on CUDA ``compile=True``.
- ``opencv``: OpenCV's frontal-face Haar cascade, whose XML ships inside the opencv-python 4.x wheel
  (5.x dropped it), so it works offline; the synthetic data, the smoke sweep and the tests use it.

A *track* gives every frame one square box: detection on every k-th frame (and the last), the largest face,
linear interpolation between detections, the nearest box for frames before the first / after the last face,
a moving-average over time, then the paper's enlargement (x1.3), squared and kept inside the frame.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from dfsearch.config import FACE_DETECTORS
from dfsearch.errors import DataError

log = logging.getLogger(__name__)

DETECTORS = tuple(d for d in FACE_DETECTORS if d != "auto")  # ("opencv", "face_alignment")


class NoFaceError(DataError):
    """No face was found in a video (it is recorded as failed and left out)."""
BOX_SCALE = 1.3  # the paper: "we enlarge the detected region by a factor of 1.3"


# ------------------------------------------------------------------------------------------------ boxes


def box_iou(a, b) -> np.ndarray:
    """IoU of two arrays of [x0, y0, x1, y1] boxes, row by row: ``a`` (N, 4) with ``b`` (N, 4) or (1, 4)."""
    import torch  # torchvision only here: the Ray trial driver must not pay for it
    from torchvision.ops import box_iou as pairwise_iou

    a = torch.as_tensor(np.asarray(a, np.float64)).reshape(-1, 4)
    b = torch.as_tensor(np.asarray(b, np.float64)).reshape(-1, 4)
    iou = pairwise_iou(a, b)  # (N, M)
    return (iou[:, 0] if len(b) == 1 else iou.diagonal()).numpy()


def square_box(box, width: int, height: int, scale: float = BOX_SCALE) -> np.ndarray:
    """Enlarge ``box`` by ``scale`` about its centre, make it square (side = scale x longer side), move it inside
    the frame where it sticks out, and clip it (the side never exceeds the shorter frame side)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = min(max(x1 - x0, y1 - y0) * scale, float(width), float(height))
    side = max(side, 2.0)
    nx0 = min(max(cx - side / 2, 0.0), width - side)
    ny0 = min(max(cy - side / 2, 0.0), height - side)
    return np.array([nx0, ny0, nx0 + side, ny0 + side], np.float32)


def crop_square(frame: np.ndarray, box, size: int) -> np.ndarray:
    """Cut ``box`` (a square inside the frame) out of ``frame`` and resize it to ``size`` x ``size``."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0 = max(0, min(x0, w - 1)), max(0, min(y0, h - 1))
    x1, y1 = max(x0 + 1, min(x1, w)), max(y0 + 1, min(y1, h))
    patch = frame[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


# ------------------------------------------------------------------------------------------------ detectors


class OpenCVDetector:
    """Haar cascade (haarcascade_frontalface_default.xml from the opencv-python wheel)."""

    name = "opencv"

    def __init__(self, max_side: int = 640, min_face_frac: float = 0.08):
        path = self.cascade_path()
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise DataError(f"{path}: OpenCV could not load the Haar cascade")
        self.max_side = max_side
        self.min_face_frac = min_face_frac

    @staticmethod
    def cascade_path() -> str:
        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        path = os.path.join(folder, "haarcascade_frontalface_default.xml") if folder else ""
        if not path or not os.path.isfile(path):
            raise DataError(
                f"OpenCV {cv2.__version__} ships no Haar cascades (cv2.data.haarcascades); install opencv-python>=4.8,<5 "
                "(5.x dropped them; do not install opencv-python-headless beside it, that breaks cv2)"
            )
        return path

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        f = min(1.0, self.max_side / max(h, w))
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if f < 1.0:
            gray = cv2.resize(gray, (int(round(w * f)), int(round(h * f))), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        m = max(16, int(self.min_face_frac * min(gray.shape)))
        found = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(m, m))
        if len(found) == 0:
            return np.zeros((0, 4), np.float32)
        boxes = np.asarray(found, np.float32)
        boxes[:, 2:] += boxes[:, :2]
        return boxes / f


def face_alignment_weight_files() -> list[tuple[str, str]]:
    """``[(path in the torch hub cache, url), ...]`` for the 2D-FAN and S3FD weights face-alignment loads."""
    import torch.hub
    from face_alignment import api
    from face_alignment.detection.sfd import sfd_detector

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    urls = [sfd_detector.models_urls["s3fd"], api.models_urls["2DFAN-4"]]
    return [(str(folder / os.path.basename(u)), u) for u in urls]


class FaceAlignmentDetector:
    """face-alignment 2D landmarks (S3FD face detector + 2D-FAN); the box spans the landmarks."""

    name = "face_alignment"

    def __init__(self, device: str = "auto"):
        import torch

        try:
            import face_alignment
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise DataError(f"the face_alignment detector needs the face-alignment package ({exc})") from None
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        files = face_alignment_weight_files()
        missing = [(p, u) for p, u in files if not os.path.isfile(p)]
        try:
            self.fa = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D, device=device, flip_input=False, compile=device.startswith("cuda")
            )
        except Exception as exc:
            if missing:
                where = "; ".join(f"{p} (from {u})" for p, u in missing)
                raise DataError(
                    f"face-alignment weights are missing and could not be downloaded ({type(exc).__name__}: {exc}); "
                    f"put these files there: {where}, or use --detector opencv"
                ) from None
            raise DataError(f"face-alignment failed to load its models on {device}: {type(exc).__name__}: {exc}") from None

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        landmarks = self.fa.get_landmarks_from_image(rgb)
        if not landmarks:
            return np.zeros((0, 4), np.float32)
        return np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in landmarks], np.float32)


_DETECTOR_CACHE: dict[tuple[str, str], object] = {}


def get_detector(name: str, device: str = "auto"):
    """A detector by name, built once per process."""
    if name not in DETECTORS:
        raise DataError(f"detector {name!r} is not one of {', '.join(DETECTORS)}")
    key = (name, device)
    if key not in _DETECTOR_CACHE:
        _DETECTOR_CACHE[key] = OpenCVDetector() if name == "opencv" else FaceAlignmentDetector(device)
    return _DETECTOR_CACHE[key]


# ------------------------------------------------------------------------------------------------ tracks


def largest(boxes: np.ndarray) -> np.ndarray | None:
    if len(boxes) == 0:
        return None
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[int(np.argmax(areas))]


@dataclass
class Track:
    boxes: np.ndarray  # (N, 4) float32 square boxes in upright-frame pixels, enlarged x scale
    detected: np.ndarray  # (N,) bool: a face was detected on this frame
    keyframes: int  # frames the detector ran on


def interpolate_boxes(n: int, known: dict[int, np.ndarray]) -> np.ndarray:
    """Boxes for frames 0..n-1 from detections at some frames: linear in between, nearest outside."""
    idx = np.array(sorted(known))
    vals = np.stack([known[i] for i in idx]).astype(np.float64)
    t = np.arange(n)
    return np.stack([np.interp(t, idx, vals[:, j]) for j in range(4)], axis=1)


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of box centre and size over ``window`` frames (edges padded)."""
    if window <= 1 or len(boxes) < 3:
        return boxes
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    s = boxes[:, 2:] - boxes[:, :2]
    k = np.ones(window) / window
    pad = window // 2

    def ma(x):
        xp = np.pad(x, ((pad, window - 1 - pad), (0, 0)), mode="edge")
        return np.stack([np.convolve(xp[:, j], k, mode="valid") for j in range(x.shape[1])], axis=1)

    c, s = ma(c), ma(s)
    return np.concatenate([c - s / 2, c + s / 2], axis=1)


def track_faces(
    frames: Iterable[np.ndarray],
    detect: Callable[[np.ndarray], np.ndarray],
    *,
    every: int = 5,
    smooth: int = 5,
    scale: float = BOX_SCALE,
    keep: Callable[[int, np.ndarray], None] | None = None,
    name: str = "video",
) -> Track:
    """One square face box per frame.  ``detect`` runs on frames 0, k, 2k, ... and the last frame.
    ``keep(i, frame)`` sees every decoded frame (to reuse them without decoding twice).
    Raises DataError when none of the searched frames has a face."""
    every = max(1, int(every))
    known: dict[int, np.ndarray] = {}
    n = 0
    runs = 0
    last = None
    width = height = 0
    for i, frame in enumerate(frames):
        n = i + 1
        height, width = frame.shape[:2]
        if keep is not None:
            keep(i, frame)
        if i % every == 0:
            runs += 1
            b = largest(detect(frame))
            if b is not None:
                known[i] = b
            last = None
        else:
            last = (i, frame)  # the last frame gets a detection too, so the tail is not extrapolated
    if n == 0:
        raise DataError(f"{name}: no frames")
    if last is not None:
        runs += 1
        b = largest(detect(last[1]))
        if b is not None:
            known[last[0]] = b
    detected = np.zeros(n, bool)
    if not known:
        raise NoFaceError(f"{name}: no face found in any of the {runs} frame(s) searched ({n} frames)")
    detected[list(known)] = True
    raw = smooth_boxes(interpolate_boxes(n, known), smooth)
    boxes = np.stack([square_box(b, width, height, scale) for b in raw])
    return Track(boxes.astype(np.float32), detected, runs)
