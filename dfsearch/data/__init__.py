"""FaceForensics++ data: layout + official splits + protocols, face tracks, the clip cache, datasets, synthetic.

The two entry points the rest of the system uses:

- :func:`ensure_prepared` (the sweep driver, once, before any trial): for ``data.root: synthetic`` generate the
  stand-in tree and its cache (skipping what exists); for a real root check the tree and that its cache is
  complete, else a :class:`DataError` saying to run ``python -m dfsearch.prepare ROOT``.
- :func:`build_datasets` (each training worker): train / val / test torch datasets of one protocol from the
  prepared cache; it never generates or prepares anything.

No Ray here; torch is imported only by the dataset code.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfsearch.data import cache as C
from dfsearch.data.layout import TreeIndex, VideoEntry, index_tree
from dfsearch.data.synthetic import MARKER, SyntheticParams, ensure_synthetic_tree, is_synthetic, synthetic_root
from dfsearch.errors import DataError, DfsearchError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from dfsearch.config import DataConfig, TrialConfig

log = logging.getLogger(__name__)

__all__ = ["DatasetInfo", "Datasets", "ensure_prepared", "build_datasets", "build_test_sets", "resolve_detector", "prepare_command"]


@dataclass
class DatasetInfo:
    root: str  # resolved tree (for synthetic: the generated tree)
    cache_dir: str
    compression: str
    synthetic: bool
    fingerprint: str  # short stable hash of the split lists + cache metadata (for MLflow tags)
    n_videos: int  # videos with a cache entry
    failed: list[str] = field(default_factory=list)  # "video_id: reason" of videos left out (no face, unreadable)
    detector: str = ""  # the face detector the cache was built with (opencv | face_alignment)
    notes: list[str] = field(default_factory=list)  # what the tree index reported (missing videos, ...) and warnings
    missing: int = 0  # videos the split files list that are not on disk
    test_sets: dict[str, str] = field(default_factory=dict)  # data.test_sets: name -> "prepared/listed" videos


@dataclass
class Datasets:
    train: Any  # TrainClips
    val: Any  # EvalClips
    test: Any  # EvalClips
    info: DatasetInfo
    class_weights: "torch.Tensor"  # (2,) inverse frequency over train, mean 1 (ones if not weighted)
    # Videos val / test should have under the protocol by the split files (FF++ test: 140 real + 140 per method);
    # len(val) / len(test) fall short when videos are missing, had no face, or eval.max_videos caps them.
    expected: dict[str, int] = field(default_factory=dict)


def prepare_command(root: str | Path, compression: str) -> str:
    return f"python -m dfsearch.prepare {root} --compression {compression}"


def resolve_detector(detector: str, synthetic: bool) -> str:
    if detector == "auto":
        return "opencv" if synthetic else "face_alignment"
    return detector


def _synthetic_params(d: "DataConfig") -> SyntheticParams:
    return SyntheticParams(d.synthetic_pairs, d.synthetic_frames, d.synthetic_size, d.synthetic_seed, d.compression)


def _locate(d: "DataConfig") -> tuple[Path, bool]:
    """(tree root, synthetic?) without generating anything."""
    if d.root == "synthetic":
        return synthetic_root(_synthetic_params(d)), True
    root = Path(d.root).expanduser()
    return root, is_synthetic(root)


def _cache_dir(d: "DataConfig", root: Path) -> Path:
    return Path(d.cache_dir).expanduser() if d.cache_dir else C.default_cache_dir(root)


def _cache_info(cache_dir: Path, compression: str) -> dict:
    p = C.compression_dir(cache_dir, compression) / "cache_info.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _info(index: TreeIndex, cache_dir: Path, synthetic: bool, status: C.CacheStatus) -> DatasetInfo:
    meta = _cache_info(cache_dir, index.compression)
    detector = str(meta.get("detector", ""))
    notes = index.report()
    if not synthetic and detector == "opencv":
        notes.append(f"{cache_dir / index.compression}: face crops made with the offline OpenCV detector, not face-alignment "
                     "landmarks as the paper; accepted, and recorded on every run (dfsearch.face_detector=opencv)")
        log.warning("%s", notes[-1])
    blob = json.dumps(
        {"splits": index.splits, "videos": sorted(status.done), "failed": sorted(status.failed), "cache": meta, "compression": index.compression},
        sort_keys=True,
    )
    return DatasetInfo(
        root=str(index.root),
        cache_dir=str(cache_dir),
        compression=index.compression,
        synthetic=synthetic,
        fingerprint=hashlib.sha1(blob.encode()).hexdigest()[:12],
        n_videos=len(status.done),
        failed=[f"{vid}: {why}" for vid, why in sorted(status.failed.items())],
        detector=detector,
        notes=notes,
        missing=len(index.missing),
    )


def _check_detector(d: "DataConfig", cache_dir: Path, synthetic: bool) -> None:
    if d.detector == "auto":
        return
    have = _cache_info(cache_dir, d.compression).get("detector")
    if have and have != d.detector:
        raise DataError(f"{cache_dir / d.compression}: the cache was made with the {have} detector but data.detector is {d.detector!r}")


def ensure_prepared(data_cfg: "DataConfig", *, progress: bool = False) -> DatasetInfo:
    """Make sure the data of ``data_cfg`` is ready for trials (see the module docstring); returns its info."""
    d = data_cfg
    if d.root == "synthetic":
        from dfsearch.data.cache_builder import TrackSettings, prepare_tree

        root = ensure_synthetic_tree(_synthetic_params(d), progress=progress)
        settings = TrackSettings(detector=resolve_detector(d.detector, True))
        summary = prepare_tree(root, d.compression, cache_dir=_cache_dir(d, root), settings=settings,
                               workers=1, progress=progress)  # in-process: no pool in the driver
        if summary.done:
            log.info("synthetic data: %s", summary.lines()[0])
    _, info, videos = load_prepared(d)
    if not videos:
        example = f" (e.g. {info.failed[0]})" if info.failed else ""
        raise DataError(f"{Path(info.cache_dir) / d.compression}: every video failed to prepare{example}")
    if d.test_sets:  # test-only sets: roots, layouts and caches checked here, before any trial
        from dfsearch.data.testsets import check_test_sets

        for s in check_test_sets(d, prepare=d.root == "synthetic", progress=progress):
            info.notes += s.notes
            info.test_sets[s.name] = f"{s.prepared}/{s.expected}"
    return info


def load_prepared(data_cfg: "DataConfig") -> tuple[TreeIndex, DatasetInfo, list[VideoEntry]]:
    """The index, the info and the prepared videos, reading only what exists (no generation, no preparing)."""
    d = data_cfg
    root, synthetic = _locate(d)
    if d.root == "synthetic" and not (root / MARKER).is_file():
        raise DataError(f"{root}: the synthetic data has not been generated; call dfsearch.data.ensure_prepared(cfg.data) first (the sweep driver does)")
    index = index_tree(root, d.compression)
    cache_dir = _cache_dir(d, index.root)
    _check_detector(d, cache_dir, synthetic)
    status = C.cache_status(cache_dir, d.compression, [v.video_id for v in index.videos])
    if status.todo:
        what = "no clip cache" if len(status.todo) == len(index.videos) else (
            f"{len(status.todo)} of {len(index.videos)} videos are not prepared (e.g. {status.todo[0]})")
        raise DataError(f"{cache_dir / d.compression}: {what}; run: {prepare_command(index.root, d.compression)}"
                        + (f" --cache-dir {cache_dir}" if d.cache_dir else ""))
    done = set(status.done)
    return index, _info(index, cache_dir, synthetic, status), [v for v in index.videos if v.video_id in done]


def build_datasets(cfg: "TrialConfig") -> Datasets:
    """Train / val / test datasets of ``cfg.protocol`` from the prepared cache (cheap; no generation)."""
    from dfsearch.data.clips import TrainClips
    from dfsearch.data.protocols import cap_videos, class_weights, expected_counts, protocol_videos

    d = cfg.data
    index, info, videos = load_prepared(d)
    lists = protocol_videos(videos, cfg.protocol.name)
    common = dict(cache_dir=info.cache_dir, compression=d.compression)
    train = TrainClips(lists["train"], clip_len=d.clip_len, frame_stride=d.frame_stride, crop_size=d.crop_size, hflip=d.hflip, **common)
    evals = {split: eval_clips(cfg, cap_videos(lists[split], cfg.eval.max_videos), info.cache_dir,
                               max_frames=cfg.eval.val_frames if split == "val" else 0) for split in ("val", "test")}
    weights = class_weights(lists["train"], cfg.protocol.weighted_loss)
    expected = expected_counts(index.splits, cfg.protocol.name)
    for split in ("val", "test"):
        if len(evals[split]) < expected[split]:
            log.warning("%s split of %s: %d of the %d videos of the split files (missing on disk: %d, failed to prepare: %d "
                        "in the whole tree%s)", split, cfg.protocol.name, len(evals[split]), expected[split], info.missing,
                        len(info.failed), f"; eval.max_videos={cfg.eval.max_videos}" if cfg.eval.max_videos else "")
    return Datasets(train, evals["val"], evals["test"], info, weights, expected)


def build_test_sets(cfg: "TrialConfig") -> dict:
    """``{name: (EvalClips, videos listed)}`` of ``cfg.data.test_sets`` (empty when none); see :mod:`.testsets`."""
    if not cfg.data.test_sets:
        return {}
    from dfsearch.data.testsets import build_test_sets as build

    return build(cfg)


def eval_clips(cfg: "TrialConfig", videos: list[VideoEntry], cache_dir: str | Path, compression: str | None = None,
               max_frames: int = 0):
    """The test views of ``videos`` (from the clip cache at ``cache_dir``, sub-folder ``compression``, default
    ``cfg.data.compression``) as the detector of ``cfg`` is tested on them: its family's test view, with
    ``cfg.data``'s clip length, stride, crop and trunk (``max_frames``: the validation's ``eval.val_frames``)."""
    from dfsearch.data.clips import EvalClips
    from dfsearch.models import registry

    d = cfg.data
    return EvalClips(videos, cache_dir, compression or d.compression, mode=registry.get(cfg.model.name).test_view, clip_len=d.clip_len,
                     frame_stride=d.frame_stride, crop_size=d.crop_size, test_trunk=d.test_trunk, max_frames=max_frames)


def face_settings(data_cfg: "DataConfig") -> dict:
    """How the cache of ``data_cfg`` tracked faces (from a cache entry's header: detector, keyframe step, smoothing,
    box scale, crop size, quality), or prepare's defaults for its detector when the cache is not on this machine.
    A logged model carries these, so predict tracks a new video's face as its training videos were."""
    from dataclasses import asdict

    from dfsearch.data.cache_builder import TrackSettings

    defaults = asdict(TrackSettings(detector=resolve_detector(data_cfg.detector, data_cfg.root == "synthetic")))
    try:
        _, info, videos = load_prepared(data_cfg)
        header, _ = C.read_header(C.entry_path(info.cache_dir, data_cfg.compression, videos[0].video_id))
    except (DfsearchError, IndexError):
        return defaults
    keys = ("detector", "every", "smooth", "scale", "size", "quality")
    return {**defaults, **{k: header[k] for k in keys if k in header}}
