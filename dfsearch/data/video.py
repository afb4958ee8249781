"""Decode videos with PyAV: RGB frames, upright (the display-matrix rotation of phone videos is applied),
audio ignored, and one clear :class:`DataError` for every way a file can be unusable."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from dfsearch.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class VideoMeta:
    path: Path
    n_frames: int  # from the container header (0 when it does not say); decoding gives the exact count
    fps: float
    width: int  # upright (after rotation)
    height: int
    rotation: int  # degrees counter-clockwise applied to the stored frames to make them upright (0/90/180/270)
    has_audio: bool


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); re-download it")


def _open(path: Path):
    _check_file(path)
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable video ({type(exc).__name__}: {exc}); truncated download or not a video file?") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: has no video stream")
    return container


def upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate a stored frame by ``rotation`` degrees counter-clockwise (FFmpeg's display-matrix convention)."""
    k = (int(round(rotation / 90.0))) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _rotation_of(frame) -> int:
    try:
        return int(round(frame.rotation or 0))
    except (AttributeError, TypeError, ValueError):
        return 0


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 25.0


def probe(path: str | Path) -> VideoMeta:
    """Header facts plus the first frame's rotation (decodes one frame, so a file that cannot decode fails here)."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        try:
            first = next(container.decode(stream), None)
        except (av.error.FFmpegError, OSError) as exc:
            raise DataError(f"{path}: cannot decode the first frame ({exc}); corrupt or truncated file?") from None
        if first is None:
            raise DataError(f"{path}: no decodable video frames; corrupt or truncated file?")
        rot = _rotation_of(first)
        w, h = first.width, first.height
        if rot % 180:
            w, h = h, w
        return VideoMeta(path, int(stream.frames or 0), _fps(stream), w, h, rot % 360, has_audio)


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every frame of ``path`` as upright RGB uint8 (H, W, 3), in order."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        n = 0
        try:
            for frame in container.decode(stream):
                img = frame.to_ndarray(format="rgb24")
                yield upright(img, _rotation_of(frame))
                n += 1
        except (av.error.FFmpegError, OSError) as exc:
            raise DataError(f"{path}: corrupt or truncated after {n} frame(s) ({exc})") from None
        if n == 0:
            raise DataError(f"{path}: no decodable video frames; corrupt or truncated file?")


def read_all(path: str | Path) -> np.ndarray:
    """All frames as one array (N, H, W, 3); fine for short videos only."""
    return np.stack(list(iter_frames(path)))


def read_span(path: str | Path, start: int, count: int) -> np.ndarray:
    """Frames ``start .. start+count-1`` (clamped at the end), seeking to the keyframe before ``start``.

    This is the "decode the mp4 each time" path the benchmark compares the cache against.
    """
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = Fraction(stream.average_rate or 25)
        tb = stream.time_base
        t0 = stream.start_time or 0
        target = t0 + int(Fraction(start) / fps / tb)
        if start > 0:
            container.seek(target, stream=stream, backward=True, any_frame=False)
        out: list[np.ndarray] = []
        last = None
        for frame in container.decode(stream):
            idx = int(round(float((frame.pts - t0) * tb * fps))) if frame.pts is not None else start
            if idx < start:
                continue
            last = upright(frame.to_ndarray(format="rgb24"), _rotation_of(frame))
            out.append(last)
            if len(out) == count:
                break
        if not out:
            raise DataError(f"{path}: no frame at index {start}")
        while len(out) < count:
            out.append(last)
        return np.stack(out)
