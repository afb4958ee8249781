"""DeeperForensics-1.0 (Jiang et al., CVPR 2020; github.com/EndlessSora/DeeperForensics-1.0, dataset/README.md).

Published layout (after its ``unzip.sh``)::

    ROOT/lists/splits/{train,val,test}.txt          one manipulated ('fake') video name per line, e.g. 000_M101.mp4
    ROOT/manipulated_videos/end_to_end/000_M101.mp4 <target id>_<source actor id>.mp4 (the raw DF-VAE swaps)

The 'real' part is not in the download: the dataset's README names FaceForensics++'s 1,000 YouTube *target* videos
at c23 (``FF++/original_sequences/youtube/c23/videos/000.mp4``), found from a fake's first three digits.  So
this adapter needs a FaceForensics++ root too (``$DEEPERFORENSICS_TARGETS``, else ``data.root`` when it is a real
FF++ tree).  The test set is ``test.txt``'s fakes and their targets; the group is the target id.
"""

from __future__ import annotations

from pathlib import Path

from dfsearch.data.layout import original_dir
from dfsearch.data.testsets.base import Listing
from dfsearch.errors import DataError

NAME = "deeperforensics"
SPLIT_FILE = Path("lists") / "splits" / "test.txt"
VARIANT = "end_to_end"  # the 1,000 raw manipulated videos of the paper's standard set
TARGETS_ENV = "DEEPERFORENSICS_TARGETS"
TARGET_COMPRESSION = "c23"  # the README: "download the target videos from FaceForensics++ with C23 compression rate"


def index(root: Path, *, targets: Path | None = None, **_) -> Listing:
    split_file = root / SPLIT_FILE
    fakes_dir = root / "manipulated_videos" / VARIANT
    if not split_file.is_file() or not (root / "manipulated_videos").is_dir():
        raise DataError(f"{root}: not a DeeperForensics-1.0 root: expected {SPLIT_FILE} and manipulated_videos/{VARIANT}/ "
                        "(the layout its unzip.sh writes)")
    if targets is None:
        raise DataError(f"{root}: DeeperForensics-1.0's real videos are FaceForensics++'s c23 target videos, which it does "
                        f"not ship: set ${TARGETS_ENV} to a FaceForensics++ root (or use a real data.root)")
    reals_dir = original_dir(targets, TARGET_COMPRESSION)
    if not reals_dir.is_dir():
        raise DataError(f"{targets}: no {reals_dir.relative_to(targets)}/ (DeeperForensics-1.0's real part is FaceForensics++ "
                        f"at {TARGET_COMPRESSION}); set ${TARGETS_ENV} to a FaceForensics++ root that has it")
    try:
        lines = split_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{split_file}: unreadable ({exc})") from None
    out = Listing(NAME, root, [])
    targets_seen: list[str] = []
    for n, line in enumerate(lines, 1):
        name = Path(line.strip()).name
        if not name:
            continue
        stem = Path(name).stem
        target, _, source = stem.partition("_")
        if not (len(target) == 3 and target.isdigit() and source):
            out.notes.append(f"{split_file}:{n}: expected '<3-digit target>_<actor>.mp4', got {line.strip()[:80]!r}; line skipped")
            continue
        out.add(stem, fakes_dir / f"{stem}.mp4", kind=VARIANT, fake=True, group=target)
        if target not in targets_seen:
            targets_seen.append(target)
    for target in targets_seen:
        out.add(f"original/{target}", reals_dir / f"{target}.mp4", kind="original", fake=False, group=target)
    if not out.listed:
        raise DataError(f"{split_file}: names no video (expected one '<target>_<actor>.mp4' per line)")
    return out
