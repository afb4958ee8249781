"""Torch datasets over the clip cache, with the paper's sampling.

Train item ``(clip, label)``: clip is uint8 (3, T, crop, crop), T = clip_len frames ``frame_stride`` apart from a
random start, a random crop (spatial jitter) and a random horizontal flip.  Val/test item
``(views, label, video_id)``: views is uint8 (V, 3, T, crop, crop), the detector's ``test_view``
(:data:`dfsearch.models.registry.TEST_VIEWS`):

- ``trunks`` (3D ResNet): the video cut into trunks of T = min(test_trunk, n_frames) frames, the last trunk
  ending at the last frame, centre crop;
- ``middle_clip_3crops`` (TimeSformer): the middle clip (clip_len frames at frame_stride), crops top-left,
  centre, bottom-right;
- ``frames`` (frame detectors): every frame as a one-frame view (T = 1), centre crop.

Short videos: when ``(clip_len - 1) * stride + 1`` frames do not fit, the stride shrinks to the largest that
fits, and below one frame per step the indices wrap around (a looped video).
Frames are read at the JPEG scale ``size / r`` (r in 1, 2, 4, 8) nearest above crop / (7/8) and resized to it, so
a crop is 7/8 of its frame at any crop size (112 of 128 as in Hara et al.; 224 of 256).  No normalisation here (the train loop does it).
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import cv2
import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset, get_worker_info

from dfsearch.data.cache import REDUCTIONS, ClipFile, entry_path
from dfsearch.data.layout import VideoEntry
from dfsearch.errors import DataError
from dfsearch.models.registry import TEST_VIEWS


def clip_indices(n: int, clip_len: int, stride: int, start: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """``clip_len`` frame indices ``stride`` apart; start random (rng), given, or the middle clip (both None)."""
    stride = max(1, int(stride))
    if (clip_len - 1) * stride + 1 > n:
        stride = max(1, (n - 1) // max(1, clip_len - 1))
    span = (clip_len - 1) * stride + 1
    if span > n:  # fewer frames than clip_len: loop the video
        first = 0 if rng is None else int(rng.integers(0, n))
        return (first + np.arange(clip_len)) % n
    last_start = n - span
    if start is None:
        start = last_start // 2 if rng is None else int(rng.integers(0, last_start + 1))
    start = min(max(0, start), last_start)
    return start + stride * np.arange(clip_len)


def frame_indices(n: int, most: int) -> np.ndarray:
    """Every frame of an n-frame video, or ``most`` of them evenly spaced from the first to the last (0 = all)."""
    if not most or most >= n:
        return np.arange(n)
    return np.linspace(0, n - 1, most).round().astype(np.int64)


def trunk_starts(n: int, trunk: int) -> tuple[int, list[int]]:
    """(T, starts): trunks of T = min(trunk, n) frames covering the video, the last one ending at the last frame."""
    t = min(trunk, n)
    k = -(-n // t)
    starts = [i * t for i in range(k - 1)] + [n - t]
    return t, starts


# A crop is 7/8 of the side it is cut from (Hara's 112 of 128), so it covers the same part of the face box at any
# crop size: a 64-px crop cut from the 128-px decode would show only the central half of the face.
CROP_FRACTION = 7 / 8


def pick_reduction(size: int, crop: int) -> tuple[int, int]:
    """(r, side): frames are decoded at JPEG scale 1/r, the smallest decode still >= side = crop / CROP_FRACTION,
    and resized to ``side`` when that decode differs (r = 1, upscaled, when even the full size is smaller)."""
    side = round(crop / CROP_FRACTION)
    r = max((r for r in REDUCTIONS if size % r == 0 and size // r >= side), default=1)
    return r, side


# Decoded frames are kept in memory per dataset: every epoch scores the same validation videos and reads the training
# videos again, and on a CPU JPEG decoding is a large part of a small model's epoch (3.2 s of the 18 s of a 3D ResNet
# --smoke trial).  A dataset is memoised only when *all* its frames fit in what is left of this process's budget
# (a memo smaller than its dataset would be refilled every epoch and save nothing); DataLoader workers decode as
# before; the budget comes back when the dataset is freed.
MEMO_ENV = "DFSEARCH_FRAME_MEMO_MB"  # the budget per process, MiB (default 512; 0 turns the memo off)
_memo_left: list[int] = []  # bytes of the budget not yet claimed (a list: set on first use, changed in place)


def claim_frame_memo(owner: object, nbytes: int) -> dict | None:
    """An empty memo for ``owner``'s frames if ``nbytes`` fit in the budget left, else None."""
    if not _memo_left:
        try:
            _memo_left.append(int(float(os.environ.get(MEMO_ENV, "512")) * 2**20))
        except ValueError:
            raise DataError(f"{MEMO_ENV}={os.environ[MEMO_ENV]!r} is not a number of MiB (0 turns the frame memo off)") from None
    if nbytes <= 0 or nbytes > _memo_left[0]:
        return None
    _memo_left[0] -= nbytes
    weakref.finalize(owner, _release_frame_memo, nbytes)
    return {}


def _release_frame_memo(nbytes: int) -> None:
    _memo_left[0] += nbytes


class _CacheReader:
    def __init__(self, videos: list[VideoEntry], cache_dir: str | Path, compression: str, crop: int):
        self.videos = list(videos)
        self.paths = [entry_path(cache_dir, compression, v.video_id) for v in self.videos]
        self.crop = int(crop)
        self._files: dict[int, ClipFile] = {}
        self.n_frames = []
        self.size = None
        for p in self.paths:
            f = ClipFile(p)
            self.n_frames.append(f.n_frames)
            self.size = f.size if self.size is None else self.size
        self.reduce, self.side = pick_reduction(self.size or 256, self.crop)
        self._memo = claim_frame_memo(self, sum(self.n_frames) * self.side * self.side * 3)

    def __len__(self) -> int:
        return len(self.videos)

    def file(self, i: int) -> ClipFile:
        f = self._files.get(i)
        if f is None:
            if len(self._files) > 256:  # keep the number of open files bounded
                for old in list(self._files)[:128]:
                    self._files.pop(old).close()
            f = self._files[i] = ClipFile(self.paths[i])
        return f

    def decode(self, i: int, idx) -> np.ndarray:
        arr = self.file(i).frames(idx, self.reduce)
        if arr.shape[1] != self.side:
            arr = np.stack([cv2.resize(a, (self.side, self.side), interpolation=cv2.INTER_LINEAR) for a in arr])
        return arr

    def frames(self, i: int, idx) -> np.ndarray:
        """Frames ``idx`` of video ``i``, (T, side, side, 3) uint8: a new array, safe to change."""
        memo = self._memo
        if memo is None or get_worker_info() is not None:  # a loader worker would fill a copy of its own
            return self.decode(i, idx)
        missing = sorted({int(j) for j in idx if (i, int(j)) not in memo})
        if missing:
            memo.update(((i, j), a) for j, a in zip(missing, self.decode(i, missing)))
        return np.stack([memo[i, int(j)] for j in idx])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"], state["_memo"] = {}, None
        return state


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(rearrange(arr, "t h w c -> c t h w")))


class _CacheDataset(Dataset):
    """One item per prepared video; ``self.r`` reads its frames from the cache."""

    r: "_CacheReader"

    def __len__(self) -> int:
        return len(self.r)


class TrainClips(_CacheDataset):
    """One random clip per video per epoch (random start, random crop, random horizontal flip)."""

    def __init__(self, videos, cache_dir, compression, *, clip_len=16, frame_stride=1, crop_size=112, hflip=True):
        self.r = _CacheReader(videos, cache_dir, compression, crop_size)
        self.clip_len, self.stride, self.crop, self.hflip = clip_len, frame_stride, crop_size, hflip

    def __getitem__(self, i: int):
        # torch seeds its own generator per DataLoader worker, so draw the randomness from it
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        rng = np.random.default_rng(seed)
        idx = clip_indices(self.r.n_frames[i], self.clip_len, self.stride, rng=rng)
        arr = self.r.frames(i, idx)
        room = arr.shape[1] - self.crop
        y, x = (int(rng.integers(0, room + 1)), int(rng.integers(0, room + 1))) if room > 0 else (0, 0)
        arr = arr[:, y : y + self.crop, x : x + self.crop]
        if self.hflip and rng.random() < 0.5:
            arr = arr[:, :, ::-1]
        return _to_tensor(arr), self.r.videos[i].label


class EvalClips(_CacheDataset):
    """Test-time views of each video: ``trunks``, ``middle_clip_3crops`` or ``frames`` (see the module docstring)."""

    def __init__(self, videos, cache_dir, compression, *, mode="trunks", clip_len=16, frame_stride=1, crop_size=112, test_trunk=250,
                 max_frames=0):
        if mode not in TEST_VIEWS:
            raise ValueError(f"test view {mode!r} not in {TEST_VIEWS}")
        self.r = _CacheReader(videos, cache_dir, compression, crop_size)
        self.mode, self.clip_len, self.stride, self.crop, self.trunk = mode, clip_len, frame_stride, crop_size, test_trunk
        self.max_frames = max_frames  # `frames` view: at most this many evenly spaced frames a video (0 = all)

    def __getitem__(self, i: int):
        v = self.r.videos[i]
        n = self.r.n_frames[i]
        side, c = self.r.side, self.crop
        if self.mode in ("trunks", "frames"):
            arr = self.r.frames(i, frame_indices(n, self.max_frames) if self.mode == "frames" else np.arange(n))
            o = (side - c) // 2
            arr = arr[:, o : o + c, o : o + c]
            if self.mode == "frames":
                views = arr[:, None]  # (n, 1, c, c, 3): each frame a view
            else:
                t, starts = trunk_starts(n, self.trunk)
                views = np.stack([arr[s : s + t] for s in starts])
        else:
            idx = clip_indices(n, self.clip_len, self.stride)
            arr = self.r.frames(i, idx)
            o, e = (side - c) // 2, side - c
            views = np.stack([arr[:, 0:c, 0:c], arr[:, o : o + c, o : o + c], arr[:, e : e + c, e : e + c]])
        return torch.from_numpy(np.ascontiguousarray(rearrange(views, "v t h w c -> v c t h w"))), v.label, v.video_id
