"""Celeb-DF v2 (Li et al., CVPR 2020; github.com/yuezunli/celeb-deepfakeforensics), test split only.

Published layout::

    ROOT/Celeb-real/id0_0000.mp4            real, celebrity id0
    ROOT/YouTube-real/00170.mp4             real, extra YouTube videos
    ROOT/Celeb-synthesis/id0_id16_0000.mp4  fake: id16's face on id0's video 0000
    ROOT/List_of_testing_videos.txt         the 518 test videos, one per line: "<1 real | 0 fake> <path under ROOT>"

The label is the file's (1 = real, 0 = fake: the opposite of dfsearch's), not the folder's; the group is the
person of the video (``id0`` for ``id0_0000`` and ``id0_id16_0000``; ``yt00170`` for a YouTube-real video).
"""

from __future__ import annotations

from pathlib import Path

from dfsearch.data.testsets.base import Listing
from dfsearch.errors import DataError

NAME = "celebdf"
LIST_FILE = "List_of_testing_videos.txt"
FOLDERS = ("Celeb-real", "Celeb-synthesis", "YouTube-real")


def group_of(folder: str, stem: str) -> str:
    if folder == "YouTube-real":
        return f"yt{stem}"
    return stem.split("_", 1)[0]


def index(root: Path, **_) -> Listing:
    list_file = root / LIST_FILE
    if not list_file.is_file():
        have = ", ".join(sorted(p.name for p in root.iterdir())[:6]) if root.is_dir() else "nothing"
        raise DataError(f"{root}: not a Celeb-DF v2 root: expected {LIST_FILE} beside {', '.join(FOLDERS)}/ (found: {have})")
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{list_file}: unreadable ({exc})") from None
    out = Listing(NAME, root, [])
    seen = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            out.notes.append(f"{list_file}:{n}: expected '<0|1> <video path>', got {line.strip()[:80]!r}; line skipped")
            continue
        rel = Path(parts[1])
        if rel in seen:
            out.notes.append(f"{list_file}:{n}: {rel} listed twice; counted once")
            continue
        seen.add(rel)
        folder = rel.parts[0] if len(rel.parts) > 1 else ""
        out.add(str(rel), root / rel, kind=folder or "root", fake=parts[0] == "0", group=group_of(folder, rel.stem))
    if not out.listed:
        raise DataError(f"{list_file}: names no video (expected lines '<0|1> <video path>')")
    return out
