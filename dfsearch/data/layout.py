"""Index a FaceForensics++ tree: which videos of the official split exist for one compression.

Layout (FaceShifter optional)::

    ROOT/original_sequences/youtube/{raw,c23,c40}/videos/071.mp4
    ROOT/manipulated_sequences/{Deepfakes,Face2Face,FaceSwap,NeuralTextures}/{raw,c23,c40}/videos/071_054.mp4

A video id is ``"original/071"`` or ``"<Method>/071_054"`` and is unique over the tree.  Videos the split files
list but the disk lacks, and folders under ``manipulated_sequences`` that name no known method, are *reported*
(``TreeIndex.missing`` / ``TreeIndex.unknown_dirs``), never fatal; a root that is not a FaceForensics++ tree at
all, or holds no video for the compression, is a :class:`DataError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from dfsearch.config import COMPRESSIONS, METHODS, OPTIONAL_METHODS
from dfsearch.data.splits import SPLITS, Pair, load_splits
from dfsearch.errors import DataError

log = logging.getLogger(__name__)

ORIGINAL = "original"
REAL, FAKE = 0, 1  # label convention


@dataclass(frozen=True)
class VideoEntry:
    video_id: str  # "original/071" or "Deepfakes/071_054"
    method: str  # "original" or a manipulation method
    name: str  # "071" or "071_054"
    split: str  # train | val | test
    path: Path

    @property
    def label(self) -> int:
        return REAL if self.method == ORIGINAL else FAKE

    @property
    def identities(self) -> tuple[str, ...]:
        return tuple(self.name.split("_"))


@dataclass
class TreeIndex:
    root: Path
    compression: str
    videos: list[VideoEntry]  # present on disk, in split order
    splits: dict[str, list[Pair]]
    methods: tuple[str, ...]  # manipulation methods found for this compression
    missing: list[str] = field(default_factory=list)  # "video_id (path)" listed by the splits but not on disk
    unknown_dirs: list[str] = field(default_factory=list)  # folders under manipulated_sequences we do not know

    def by_id(self) -> dict[str, VideoEntry]:
        return {v.video_id: v for v in self.videos}

    def report(self) -> list[str]:
        """Human-readable lines about what is odd in the tree (empty when all is well)."""
        lines = []
        if self.missing:
            shown = ", ".join(self.missing[:5]) + (f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else "")
            lines.append(f"{len(self.missing)} video(s) listed in the split files are missing on disk and are left out: {shown}")
        for d in self.unknown_dirs:
            lines.append(f"{d}: unknown method folder, ignored (known: {', '.join(METHODS + OPTIONAL_METHODS)})")
        absent = [m for m in METHODS if m not in self.methods]
        if absent:
            lines.append(f"no {self.compression} videos for method(s) {', '.join(absent)} under {self.root / 'manipulated_sequences'}")
        return lines


def original_dir(root: Path, compression: str) -> Path:
    return root / "original_sequences" / "youtube" / compression / "videos"


def method_dir(root: Path, method: str, compression: str) -> Path:
    return root / "manipulated_sequences" / method / compression / "videos"


def video_path(root: Path, method: str, name: str, compression: str) -> Path:
    folder = original_dir(root, compression) if method == ORIGINAL else method_dir(root, method, compression)
    return folder / f"{name}.mp4"


def check_root(root: str | Path, compression: str) -> Path:
    """Resolve ``root`` and check it looks like a FaceForensics++ tree with ``compression`` videos."""
    if compression not in COMPRESSIONS:
        raise DataError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such folder (expected a FaceForensics++ root holding original_sequences/ and manipulated_sequences/, or data.root: synthetic)")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder (expected a FaceForensics++ root holding original_sequences/ and manipulated_sequences/)")
    path = path.resolve()
    orig = original_dir(path, compression)
    if not orig.is_dir():
        youtube = path / "original_sequences" / "youtube"
        if not youtube.is_dir():
            raise DataError(
                f"{path}: not a FaceForensics++ tree: expected {orig.relative_to(path)}/ "
                "(the layout the official download script writes)"
            )
        have = sorted(c for c in COMPRESSIONS if original_dir(path, c).is_dir())
        raise DataError(
            f"{path}: no {compression} videos ({orig.relative_to(path)}/ is missing)"
            + (f"; this tree has {', '.join(have)} (set data.compression / --compression)" if have else "")
        )
    if not any(orig.glob("*.mp4")):
        raise DataError(f"{orig}: empty: no .mp4 videos (is the download complete?)")
    return path


def index_tree(root: str | Path, compression: str = "c40", *, methods: tuple[str, ...] | None = None) -> TreeIndex:
    """List the official-split videos present under ``root`` for ``compression``.

    ``methods`` restricts the manipulations (default: the four of the paper, plus FaceShifter when present).
    """
    path = check_root(root, compression)
    splits = load_splits(path)
    known = METHODS + OPTIONAL_METHODS
    manip = path / "manipulated_sequences"
    unknown, found = [], []
    if manip.is_dir():
        for d in sorted(p for p in manip.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if d.name not in known:
                unknown.append(str(d))
            elif method_dir(path, d.name, compression).is_dir():
                found.append(d.name)
    wanted = tuple(m for m in (methods or known) if m in found)
    videos, missing = [], []
    for split in SPLITS:
        for a, b in splits[split]:
            names = [(ORIGINAL, a), (ORIGINAL, b)] + [(m, n) for m in wanted for n in (f"{a}_{b}", f"{b}_{a}")]
            for method, name in names:
                p = video_path(path, method, name, compression)
                vid = f"{method}/{name}"
                if p.is_file():
                    videos.append(VideoEntry(vid, method, name, split, p))
                else:
                    missing.append(f"{vid} ({p})")
    # A method folder that exists but holds nothing listed is as good as absent.
    present = tuple(m for m in wanted if any(v.method == m for v in videos))
    index = TreeIndex(path, compression, videos, splits, present, missing, unknown)
    if not videos:
        raise DataError(f"{path}: none of the videos named by the split files exist for {compression} (e.g. {missing[0] if missing else '?'})")
    for line in index.report():
        log.warning(line)
    return index
