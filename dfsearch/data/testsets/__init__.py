"""Test-only datasets beyond FaceForensics++: Celeb-DF v2, DFDC, DeeperForensics-1.0, and FF++'s own FaceShifter
and DeepFakeDetection folders.  One adapter per dataset (its own module) lists ``(video, label, group)`` from the
dataset's published label files; this module finds each set's root, prepares and reads its clip cache, and
builds the test views a trial scores after its FaceForensics++ test.

``data.test_sets`` names the sets, each ``NAME`` (root from ``$CELEBDF_ROOT``, ``$DFDC_ROOT``,
``$DEEPERFORENSICS_ROOT``; FaceShifter and DFD live in the FF++ root, ``data.root``) or ``NAME=/path``.  The
clip cache of a set goes to ``<root>/.dfsearch_cache/<name>/`` (FaceShifter and DFD: the FF++ cache, per
compression), made by ``python -m dfsearch.prepare ROOT --dataset NAME``.

These sets never train and never select: a trial scores them once, with the weights it tested on FF++.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from dfsearch.config import TEST_SETS
from dfsearch.data import cache as C
from dfsearch.data.testsets import celebdf, deeperforensics, dfdc, ffpp_extra
from dfsearch.data.testsets.base import Listing, TestVideo
from dfsearch.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from dfsearch.config import DataConfig, TrialConfig
    from dfsearch.data.cache_builder import PrepareSummary, TrackSettings

log = logging.getLogger(__name__)

__all__ = ["ADAPTERS", "ENV", "Listing", "SetInfo", "TestSet", "TestVideo", "build_test_sets", "check_test_sets", "index_set",
           "parse_entry", "plan_test_set", "prepare_command", "prepare_test_set", "resolve"]

ADAPTERS: dict[str, Callable[..., Listing]] = {
    "celebdf": celebdf.index,
    "dfdc": dfdc.index,
    "deeperforensics": deeperforensics.index,
    "faceshifter": ffpp_extra.index_faceshifter,
    "dfd": ffpp_extra.index_dfd,
}
ENV = {"celebdf": "CELEBDF_ROOT", "dfdc": "DFDC_ROOT", "deeperforensics": "DEEPERFORENSICS_ROOT"}
IN_FFPP = ("faceshifter", "dfd")  # folders of the FaceForensics++ root itself
assert tuple(ADAPTERS) == TEST_SETS


@dataclass
class TestSet:
    """Where one set lives: its root, its clip cache (``cache_dir`` / ``key``), and the FF++ root it borrows from."""

    name: str
    root: Path
    cache_dir: Path
    key: str  # the cache's sub-folder (the set's name; the compression for the sets inside FF++)
    compression: str
    targets: Path | None = None  # DeeperForensics' real part (an FF++ root)

    def index(self) -> Listing:
        return index_set(self.name, self.root, compression=self.compression, targets=self.targets)


@dataclass
class SetInfo:
    name: str
    root: str
    prepared: int
    expected: int  # videos the label files name
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def parse_entry(item: str) -> tuple[str, str]:
    """``"celebdf"`` -> ``("celebdf", "")``; ``"dfdc=/data/dfdc"`` -> ``("dfdc", "/data/dfdc")``."""
    name, _, root = str(item).partition("=")
    return name.strip().lower(), root.strip()


def prepare_command(ts: TestSet) -> str:
    return f"python -m dfsearch.prepare {ts.root} --dataset {ts.name}" + (f" --compression {ts.compression}" if ts.name in IN_FFPP else "")


def index_set(name: str, root: str | Path, *, compression: str = "c40", targets: str | Path | None = None) -> Listing:
    """The videos of test set ``name`` under ``root`` (its adapter), the odd things logged as warnings."""
    if name not in ADAPTERS:
        raise DataError(f"unknown test set {name!r} (known: {', '.join(TEST_SETS)})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: no such folder (the {name} root)")
    listing = ADAPTERS[name](path.resolve(), compression=compression, targets=Path(targets).expanduser() if targets else None)
    for line in listing.report():
        log.warning("%s", line)
    if not listing.videos:
        raise DataError(f"{path}: none of the {listing.listed} video(s) the {name} label files name exist"
                        + (f" (e.g. {listing.missing[0]})" if listing.missing else ""))
    return listing


def _real_ffpp(data_cfg: "DataConfig") -> Path | None:
    from dfsearch.data.synthetic import is_synthetic

    if data_cfg.root == "synthetic":
        return None
    root = Path(data_cfg.root).expanduser()
    return None if is_synthetic(root) else root


def resolve(data_cfg: "DataConfig", item: str) -> TestSet:
    """Where the set ``item`` of ``data.test_sets`` lives (DataError, naming the key and the variable, if nowhere)."""
    name, root = parse_entry(item)
    if name not in ADAPTERS:
        raise DataError(f"data.test_sets: unknown test set {name!r} (known: {', '.join(TEST_SETS)})")
    if name in IN_FFPP:
        ffpp = _real_ffpp(data_cfg)
        if not root and ffpp is None:
            raise DataError(f"data.test_sets: {name} lives in a FaceForensics++ root and data.root is {data_cfg.root!r}; "
                            f"write {name}=/path/to/FaceForensics++")
        path = Path(root).expanduser() if root else ffpp
        if data_cfg.cache_dir and ffpp is not None and path.resolve() == ffpp.resolve():
            cache_dir = Path(data_cfg.cache_dir).expanduser()
        else:
            cache_dir = C.default_cache_dir(path)
        return TestSet(name, path, cache_dir, data_cfg.compression, data_cfg.compression)
    env = ENV[name]
    root = root or os.environ.get(env, "")
    if not root:
        raise DataError(f"data.test_sets: no root for {name}: set ${env} or write {name}=/path/to/{name} in data.test_sets")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data.test_sets: {name} root {path} does not exist" + ("" if "=" in str(item) else f" (from ${env})"))
    targets = None
    if name == "deeperforensics":
        env_t = os.environ.get(deeperforensics.TARGETS_ENV, "")
        targets = Path(env_t).expanduser() if env_t else _real_ffpp(data_cfg)
    return TestSet(name, path, C.default_cache_dir(path), name, data_cfg.compression, targets)


def plan_test_set(ts: TestSet, settings: "TrackSettings", *, retry_failed: bool = False) -> tuple[list[tuple], "PrepareSummary"]:
    """The prepare jobs of ``ts``'s listed videos that have no cache entry yet, and their summary."""
    from dfsearch.data.cache_builder import check_cache_settings, plan_jobs

    listing = ts.index()
    check_cache_settings(ts.cache_dir, ts.key, settings)
    return plan_jobs([v.video_id for v in listing.videos], {v.video_id: v.path for v in listing.videos}, ts.cache_dir, ts.key,
                     settings, root=ts.root, notes=listing.report(), retry_failed=retry_failed)


def prepare_test_set(ts: TestSet, settings: "TrackSettings", *, workers: int = 1, progress: bool = False,
                     retry_failed: bool = False) -> "PrepareSummary":
    """Face-track every listed video of ``ts`` that has no cache entry yet (resumable, atomic, as for FF++)."""
    from dfsearch.data.cache_builder import run_jobs

    jobs, summary = plan_test_set(ts, settings, retry_failed=retry_failed)
    return run_jobs(jobs, summary, settings, workers=workers, progress=progress, desc=f"prepare {ts.name}")


def _ffpp_settings(data_cfg: "DataConfig") -> "TrackSettings":
    from dfsearch.data import face_settings
    from dfsearch.data.cache_builder import TrackSettings

    s = face_settings(data_cfg)
    return TrackSettings(detector=s["detector"], every=s["every"], smooth=s["smooth"], scale=s["scale"], size=s["size"],
                         quality=s["quality"])


def _load(data_cfg: "DataConfig", item: str) -> tuple[TestSet, Listing, C.CacheStatus]:
    ts = resolve(data_cfg, item)
    listing = ts.index()
    return ts, listing, C.cache_status(ts.cache_dir, ts.key, [v.video_id for v in listing.videos])


def check_test_sets(data_cfg: "DataConfig", *, prepare: bool = False, progress: bool = False) -> list[SetInfo]:
    """The sweep driver's check, before any trial: every set of ``data.test_sets`` has a root of the right layout
    and a complete clip cache (``prepare``: make what is missing here, in this process, with the FF++ cache's
    face settings: the synthetic smoke path), else one DataError naming the set and the command to run."""
    infos = []
    for item in data_cfg.test_sets:
        ts, listing, status = _load(data_cfg, item)
        if status.todo and prepare:
            prepare_test_set(ts, _ffpp_settings(data_cfg), progress=progress)
            status = C.cache_status(ts.cache_dir, ts.key, [v.video_id for v in listing.videos])
        if status.todo:
            raise DataError(f"{ts.cache_dir / ts.key}: {len(status.todo)} of the {len(listing.videos)} {ts.name} videos are not "
                            f"prepared (e.g. {status.todo[0]}); run: {prepare_command(ts)}")
        if not status.done:
            raise DataError(f"{ts.cache_dir / ts.key}: every {ts.name} video failed to prepare (e.g. {next(iter(status.failed.items()))})")
        notes = listing.report() + [f"{ts.name}: {vid} left out: {why}" for vid, why in sorted(status.failed.items())]
        infos.append(SetInfo(ts.name, str(ts.root), len(status.done), listing.listed, dict(status.failed), notes))
    return infos


def build_test_sets(cfg: "TrialConfig") -> dict[str, tuple[object, int]]:
    """``{set name: (EvalClips of its prepared videos, videos its label files name)}`` for every set of
    ``data.test_sets``, with the detector's test view (as :func:`dfsearch.data.eval_clips` for FF++)."""
    from dfsearch.data import eval_clips
    from dfsearch.data.protocols import cap_videos

    out = {}
    for item in cfg.data.test_sets:
        ts, listing, status = _load(cfg.data, item)
        done = set(status.done)
        videos = cap_videos([v for v in listing.videos if v.video_id in done], cfg.eval.max_videos)
        if not videos:
            raise DataError(f"{ts.cache_dir / ts.key}: no prepared {ts.name} video; run: {prepare_command(ts)}")
        if status.todo:
            log.warning("%s: %d of %d videos not prepared, left out (run: %s)", ts.name, len(status.todo), len(listing.videos), prepare_command(ts))
        out[ts.name] = (eval_clips(cfg, videos, ts.cache_dir, compression=ts.key), listing.listed)
    return out
