"""Build the clip cache of a FaceForensics++ tree: face tracks -> square face crops -> one cache file per video.

Resumable (videos with a cache entry or a failure record are skipped), atomic (temp name, then rename),
parallel over videos (``workers`` processes), with an optional progress bar and a summary.  A video that
cannot be used (no face, corrupt file, ...) is recorded as failed with the reason and left out; the run goes on.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfsearch.data import cache as C
from dfsearch.data.faces import BOX_SCALE, NoFaceError, crop_square, get_detector, track_faces
from dfsearch.data.layout import index_tree
from dfsearch.data.video import iter_frames, probe
from dfsearch.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_EVERY = 10  # detect on every 10th frame: carphone (real face) 5.0x faster than every frame at box IoU 0.90 (bench data)
DEFAULT_SMOOTH = 5  # moving average of the boxes over 5 frames
KEEP_FRAMES_BYTES = 384 << 20  # keep decoded frames in memory up to this size instead of decoding twice


@dataclass
class TrackSettings:
    detector: str = "opencv"
    device: str = "auto"
    every: int = DEFAULT_EVERY
    smooth: int = DEFAULT_SMOOTH
    scale: float = BOX_SCALE
    size: int = C.DEFAULT_SIZE
    quality: int = C.DEFAULT_QUALITY


@dataclass
class VideoResult:
    video_id: str
    status: str  # done | failed
    reason: str = ""
    frames: int = 0
    seconds: float = 0.0


@dataclass
class PrepareSummary:
    root: str
    cache_dir: str
    compression: str
    total: int
    done: int = 0  # prepared in this run
    skipped: int = 0  # already prepared (or already recorded as failed)
    failed: dict[str, str] = field(default_factory=dict)  # video_id -> reason (this run and earlier ones)
    frames: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the tree index reported (missing videos, ...)
    unfinished: dict[str, str] = field(default_factory=dict)  # video_id -> why it has no result (e.g. its node lost)

    def record(self, res: VideoResult) -> None:
        """Count one video's result (a failure is logged: the video is left out)."""
        if res.status == "done":
            self.done += 1
            self.frames += res.frames
        else:
            self.failed[res.video_id] = res.reason
            log.warning("left out %s: %s", res.video_id, res.reason)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [
            f"{self.done} prepared, {self.skipped} skipped (already done), {len(self.failed)} failed, of {self.total} videos "
            f"({self.frames} frames in {self.seconds:.1f} s, {self.fps:.1f} frames/s)",
            f"cache: {Path(self.cache_dir) / self.compression}",
        ]
        out += [f"failed: {vid}: {why}" for vid, why in sorted(self.failed.items())]
        if self.unfinished:
            out.append(f"{len(self.unfinished)} video(s) not finished (no failure recorded); run the same command again to prepare them")
            out += [f"unfinished: {vid}: {why}" for vid, why in sorted(self.unfinished.items())]
        out += [f"note: {n}" for n in self.notes]
        return out


def prepare_video(video_id: str, src: str | Path, dst: str | Path, settings: TrackSettings) -> VideoResult:
    """Track the face in ``src`` and write its cache entry ``dst`` (or ``dst``'s failure record)."""
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    fail_path = dst.with_name(dst.name[: -len(C.SUFFIX)] + C.FAILED_SUFFIX)
    try:
        meta = probe(src)
        detector = get_detector(settings.detector, settings.device)
        budget = KEEP_FRAMES_BYTES // max(1, meta.width * meta.height * 3)
        kept: list[np.ndarray] = []

        def keep(i, frame):
            if i < budget:
                kept.append(frame)
            elif kept:
                kept.clear()

        try:
            track = track_faces(iter_frames(src), detector.detect, every=settings.every, smooth=settings.smooth,
                                scale=settings.scale, keep=keep, name=str(src))
        except NoFaceError:
            if settings.every <= 1:
                raise
            # None of the keyframes had a face: search every frame before giving up.
            track = track_faces(iter_frames(src), detector.detect, every=1, smooth=settings.smooth,
                                scale=settings.scale, name=str(src))
            kept.clear()
        n = len(track.boxes)
        frames = kept if len(kept) == n else iter_frames(src)
        jpegs = []
        for frame, box in zip(frames, track.boxes):
            jpegs.append(C.encode_frame(crop_square(frame, box, settings.size), settings.quality))
        if len(jpegs) != n:
            raise DataError(f"{src}: decoded {len(jpegs)} frames on the second pass but {n} on the first")
        header = {
            "video_id": video_id,
            "source": str(src),
            "n_frames": n,
            "fps": meta.fps,
            "width": meta.width,
            "height": meta.height,
            "rotation": meta.rotation,
            "has_audio": meta.has_audio,
            "size": settings.size,
            "format": "jpeg",
            "quality": settings.quality,
            "detector": settings.detector,
            "every": settings.every,
            "smooth": settings.smooth,
            "scale": settings.scale,
            "keyframes": track.keyframes,
            "detected_frames": int(track.detected.sum()),
            "boxes": np.round(track.boxes, 1).tolist(),
        }
        C.write_entry(dst, header, jpegs)
        if fail_path.exists():
            fail_path.unlink()
        return VideoResult(video_id, "done", frames=n, seconds=time.perf_counter() - t0)
    except DataError as exc:
        reason = str(exc)
    except Exception as exc:  # a bug or an odd file: record it, keep the run going
        log.exception("unexpected error preparing %s", src)
        reason = f"unexpected {type(exc).__name__}: {exc}"
    C.atomic_write_json(fail_path, {"video_id": video_id, "source": str(src), "reason": reason, "detector": settings.detector})
    return VideoResult(video_id, "failed", reason=reason, seconds=time.perf_counter() - t0)


def limit_threads() -> None:
    """One video per process: no thread pools of OpenCV / torch fighting over the node's cores."""
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def _run_one(args) -> VideoResult:
    return prepare_video(*args)


def check_cache_settings(cache_dir: Path, compression: str, settings: TrackSettings) -> None:
    """One cache folder holds one kind of crop: refuse to mix detectors / sizes in it."""
    info_path = C.compression_dir(cache_dir, compression) / "cache_info.json"
    info = {"version": C.CACHE_VERSION, "detector": settings.detector, "size": settings.size, "scale": settings.scale}
    if info_path.is_file():
        import json

        try:
            old = json.loads(info_path.read_text())
        except ValueError:
            old = {}
        diff = {k: (old.get(k), v) for k, v in info.items() if old.get(k) != v}
        if diff:
            what = ", ".join(f"{k}: cache has {a!r}, asked for {b!r}" for k, (a, b) in diff.items())
            raise DataError(f"{info_path.parent}: this cache was made with other settings ({what}); use another --cache-dir or delete it")
    else:
        C.atomic_write_json(info_path, info)


def plan_tree(
    root: str | Path,
    compression: str = "c40",
    *,
    cache_dir: str | Path | None = None,
    settings: TrackSettings | None = None,
    retry_failed: bool = False,
) -> tuple[list[tuple], PrepareSummary]:
    """What :func:`prepare_tree` would do: the ``(video_id, src, dst, settings)`` jobs of the videos not prepared yet,
    and the summary that counts the rest (a runner, in this process or on a Ray cluster, records the jobs' results)."""
    settings = settings or TrackSettings()
    index = index_tree(root, compression)
    cache_dir = Path(cache_dir) if cache_dir else C.default_cache_dir(index.root)
    check_cache_settings(cache_dir, compression, settings)
    ids = [v.video_id for v in index.videos]
    by_id = index.by_id()
    return plan_jobs(ids, {vid: by_id[vid].path for vid in ids}, cache_dir, compression, settings,
                     root=index.root, notes=index.report(), retry_failed=retry_failed)


def plan_jobs(ids: list[str], sources: dict, cache_dir: Path, key: str, settings: TrackSettings, *, root, notes: list[str],
              retry_failed: bool = False) -> tuple[list[tuple], PrepareSummary]:
    """The jobs of the videos ``ids`` that have no cache entry (nor failure record, unless ``retry_failed``) under
    ``cache_dir/key``, and their summary (the FF++ tree and the test-only datasets share this)."""
    status = C.cache_status(cache_dir, key, ids)
    todo = status.todo + (list(status.failed) if retry_failed else [])
    summary = PrepareSummary(str(root), str(cache_dir), key, total=len(ids), notes=list(notes))
    summary.skipped = len(ids) - len(todo)
    if not retry_failed:
        summary.failed.update(status.failed)
    jobs = [(vid, str(sources[vid]), str(C.entry_path(cache_dir, key, vid)), settings) for vid in todo]
    return jobs, summary


def prepare_tree(
    root: str | Path,
    compression: str = "c40",
    *,
    cache_dir: str | Path | None = None,
    settings: TrackSettings | None = None,
    workers: int = 1,
    progress: bool = False,
    retry_failed: bool = False,
) -> PrepareSummary:
    """Prepare every official-split video of ``root`` that is not prepared yet; returns the summary."""
    settings = settings or TrackSettings()
    jobs, summary = plan_tree(root, compression, cache_dir=cache_dir, settings=settings, retry_failed=retry_failed)
    return run_jobs(jobs, summary, settings, workers=workers, progress=progress, desc=f"prepare {compression}")


def run_jobs(jobs: list[tuple], summary: PrepareSummary, settings: TrackSettings, *, workers: int = 1, progress: bool = False,
             desc: str = "prepare") -> PrepareSummary:
    """Run :func:`prepare_video` ``jobs`` ((video_id, src, dst, settings) tuples) in ``workers`` processes, recording
    each result in ``summary`` (the FF++ tree and the test-only datasets share this)."""
    if not jobs:
        return summary
    get_detector(settings.detector, settings.device)  # fail once, clearly, before any video (e.g. missing weights)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=desc, unit="video")
    t0 = time.perf_counter()

    def record(res: VideoResult) -> None:
        summary.record(res)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=len(summary.failed))

    try:
        workers = max(1, min(int(workers), len(jobs)))
        if workers == 1:
            for job in jobs:
                record(_run_one(job))
        else:
            # spawn, not fork: a forked child of a process that already ran torch / OpenCV thread pools can hang
            ctx = multiprocessing.get_context("spawn")
            pending = {job[0]: job for job in jobs}
            try:
                with ProcessPoolExecutor(workers, mp_context=ctx, initializer=limit_threads) as pool:
                    futures = [pool.submit(_run_one, job) for job in jobs]
                    for fut in as_completed(futures):
                        res = fut.result()
                        pending.pop(res.video_id, None)
                        record(res)
            except (BrokenProcessPool, RuntimeError) as exc:
                # e.g. called from a script without an ``if __name__ == "__main__":`` guard
                log.warning("worker processes failed (%s); preparing the remaining %d videos in this process", exc, len(pending))
                for job in pending.values():
                    record(_run_one(job))
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary
