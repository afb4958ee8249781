"""FaceForensics++'s own extra folders, test-only: FaceShifter and DeepFakeDetection (the layout of FF++'s
download script, ``-d FaceShifter`` / ``-d DeepFakeDetection`` / ``-d DeepFakeDetection_original``)::

    ROOT/manipulated_sequences/FaceShifter/<c>/videos/071_054.mp4           the official split's pairs, as the four
    ROOT/original_sequences/youtube/<c>/videos/071.mp4                      methods: the test split (test.json) is used
    ROOT/manipulated_sequences/DeepFakeDetection/<c>/videos/01_02__meeting_serious__YVGY8LOK.mp4   fakes (actor 01's scene)
    ROOT/original_sequences/actors/<c>/videos/01__meeting_serious.mp4                              reals

FaceShifter's labels come from the split file (its pairs name the real and the fake videos); DeepFakeDetection ships
no split, so all of it is the test set, real = ``original_sequences/actors`` as the download script names it.
Groups: the identity pair (FaceShifter; both originals and both fakes of a pair share it), the actor (DFD).
"""

from __future__ import annotations

from pathlib import Path

from dfsearch.data.layout import ORIGINAL, method_dir, original_dir
from dfsearch.data.splits import load_splits
from dfsearch.data.testsets.base import Listing, video
from dfsearch.errors import DataError

FACESHIFTER, DFD = "faceshifter", "dfd"


def index_faceshifter(root: Path, *, compression: str = "c40", **_) -> Listing:
    fakes = method_dir(root, "FaceShifter", compression)
    reals = original_dir(root, compression)
    if not fakes.is_dir():
        raise DataError(f"{root}: no {fakes.relative_to(root) if fakes.is_relative_to(root) else fakes}/ "
                        f"(FaceShifter at {compression}: download it with FF++'s script, -d FaceShifter -c {compression})")
    splits = load_splits(root)
    out = Listing(FACESHIFTER, root, [])
    for a, b in splits["test"]:
        pair = "_".join(sorted((a, b)))
        for kind, name, folder, fake in ((ORIGINAL, a, reals, False), (ORIGINAL, b, reals, False),
                                         ("FaceShifter", f"{a}_{b}", fakes, True), ("FaceShifter", f"{b}_{a}", fakes, True)):
            out.add(f"{kind}/{name}", folder / f"{name}.mp4", kind=kind, fake=fake, group=pair)
    return out


def index_dfd(root: Path, *, compression: str = "c40", **_) -> Listing:
    fakes = method_dir(root, "DeepFakeDetection", compression)
    reals = root / "original_sequences" / "actors" / compression / "videos"
    if not fakes.is_dir() or not reals.is_dir():
        raise DataError(f"{root}: DeepFakeDetection at {compression} needs {fakes.relative_to(root)}/ and "
                        f"{reals.relative_to(root)}/ (FF++'s script: -d DeepFakeDetection and -d DeepFakeDetection_original)")
    out = Listing(DFD, root, [])
    for kind, folder, fake in (("actors", reals, False), ("DeepFakeDetection", fakes, True)):
        for path in sorted(folder.glob("*.mp4")):
            out.listed += 1
            out.videos.append(video(kind, path, fake=fake, group=path.name.split("_", 1)[0]))
    if not out.videos:
        raise DataError(f"{fakes}: empty: no .mp4 videos (is the download complete?)")
    return out
