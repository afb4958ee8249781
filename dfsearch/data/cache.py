"""The clip cache: one file per video holding its face crops as JPEG frames plus an offset index.

File ``<cache>/<compression>/<method>/<name>.clips``::

    b"DFSCLIP1" | uint32 LE header length | header (UTF-8 JSON) | frame 0 JPEG | frame 1 JPEG | ...

The header holds the metadata (version, source, fps, frame count, size, detector, every-k, the per-frame boxes)
and ``offsets`` (n_frames + 1 byte offsets into the data part).  Any frame is one ``pread`` + one JPEG decode,
so a 16-frame clip anywhere in the video costs 16 small reads (see ``python -m dfsearch.bench data``).

Why this format (measured by the benchmark): raw uint8 crops at 256 px would be ~500 GB for FaceForensics++
(~5,000 videos x ~500 frames x 196 KB); JPEG q90 at 256 px is ~10x smaller and decodes in well under a
millisecond with libjpeg-turbo; JPEG's DCT scaling (``cv2.IMREAD_REDUCED_COLOR_2``) decodes the same file at 128
px about as fast as a 128 px JPEG, so one size (256, > 224 so TimeSformer's three test crops differ) serves
both 3D ResNet (112 crops out of 128) and TimeSformer (224 crops out of 256).  One file per video keeps
writes atomic (temp name, then rename) and the file count at one per video.

A video that could not be used gets ``<name>.failed.json`` (the reason) instead, so a resumed run skips it.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dfsearch.errors import DataError

CACHE_VERSION = 1
MAGIC = b"DFSCLIP1"
SUFFIX = ".clips"
FAILED_SUFFIX = ".failed.json"
DEFAULT_SIZE = 256
DEFAULT_QUALITY = 90
REDUCTIONS = (1, 2, 4, 8)  # JPEG DCT scaling factors cv2 can decode at
_REDUCED_FLAG = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def default_cache_dir(root: str | Path) -> Path:
    return Path(root) / ".dfsearch_cache"


def compression_dir(cache_dir: str | Path, compression: str) -> Path:
    return Path(cache_dir) / compression


def entry_path(cache_dir: str | Path, compression: str, video_id: str) -> Path:
    method, name = video_id.split("/", 1)
    return compression_dir(cache_dir, compression) / method / f"{name}{SUFFIX}"


def failed_path(cache_dir: str | Path, compression: str, video_id: str) -> Path:
    method, name = video_id.split("/", 1)
    return compression_dir(cache_dir, compression) / method / f"{name}{FAILED_SUFFIX}"


def atomic_write_bytes(path: Path, chunks) -> None:
    """Write ``chunks`` to a temp file beside ``path`` and rename it into place (no partial file is ever visible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: Path, data) -> None:
    atomic_write_bytes(path, [json.dumps(data, indent=1).encode()])


def encode_frame(rgb: np.ndarray, quality: int = DEFAULT_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover
        raise DataError("JPEG encoding failed")
    return buf.tobytes()


def write_entry(path: Path, meta: dict, jpegs: list[bytes]) -> None:
    """Write one cache entry atomically; ``meta`` gets ``offsets`` and ``version`` added."""
    offsets = np.concatenate([[0], np.cumsum([len(j) for j in jpegs])]).astype(np.int64).tolist()
    header = json.dumps({**meta, "version": CACHE_VERSION, "offsets": offsets}, separators=(",", ":")).encode()
    atomic_write_bytes(path, [MAGIC, struct.pack("<I", len(header)), header, *jpegs])


def read_header(path: str | Path) -> tuple[dict, int]:
    """(metadata, byte offset of the data part); DataError for a file that is not a complete cache entry."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:8] != MAGIC:
                raise DataError(f"{path}: not a dfsearch clip-cache file (bad magic); delete it and run prepare again")
            (hlen,) = struct.unpack("<I", head[8:])
            raw = f.read(hlen)
            meta = json.loads(raw)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise DataError(f"{path}: cache entry missing; run python -m dfsearch.prepare first") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: unreadable cache entry ({exc}); delete it and run prepare again") from None
    base = 12 + hlen
    if meta.get("version") != CACHE_VERSION:
        raise DataError(f"{path}: cache version {meta.get('version')} but this dfsearch reads {CACHE_VERSION}; run prepare again")
    if base + meta["offsets"][-1] != size:
        raise DataError(f"{path}: truncated cache entry ({size} bytes, expected {base + meta['offsets'][-1]}); delete it and run prepare again")
    return meta, base


class ClipFile:
    """Random access to the frames of one cache entry.  Safe to use from DataLoader workers (the file is
    (re)opened lazily per process)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta, self.base = read_header(self.path)
        self.offsets = np.asarray(self.meta["offsets"], np.int64)
        self.n_frames = int(self.meta["n_frames"])
        self.size = int(self.meta["size"])
        self._fd = None
        self._pid = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fd"], state["_pid"], state["_lock"] = None, None, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _handle(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def jpeg(self, i: int) -> bytes:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return os.pread(self._handle(), end - start, self.base + start)

    def frames(self, indices, reduce: int = 1) -> np.ndarray:
        """Frames ``indices`` as RGB uint8 (T, S/reduce, S/reduce, 3)."""
        flag = _REDUCED_FLAG[reduce]
        out = []
        for i in indices:
            img = cv2.imdecode(np.frombuffer(self.jpeg(int(i)), np.uint8), flag)
            if img is None:
                raise DataError(f"{self.path}: frame {int(i)} does not decode; delete the file and run prepare again")
            out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        return np.stack(out)


@dataclass
class CacheStatus:
    done: list[str]
    failed: dict[str, str]  # video_id -> reason
    todo: list[str]


def cache_status(cache_dir: str | Path, compression: str, video_ids: list[str]) -> CacheStatus:
    """Which videos have a cache entry, a failure record, or neither.  Entries are written under a temp name
    and renamed when complete, so an existing entry is a whole one."""
    done, failed, todo = [], {}, []
    for vid in video_ids:
        p = entry_path(cache_dir, compression, vid)
        if p.is_file():
            done.append(vid)
            continue
        fp = failed_path(cache_dir, compression, vid)
        if fp.is_file():
            try:
                failed[vid] = json.loads(fp.read_text()).get("reason", "unknown")
                continue
            except (ValueError, OSError):
                pass
        todo.append(vid)
    return CacheStatus(done, failed, todo)
