"""Scoring videos with a trained detector: each video goes through what a test video of its trial went through.

The same face tracker (detector, keyframe step, smoothing, the x1.3 square box) and crop size as ``prepare``,
then the detector's own test view (250-frame trunks / the middle clip x 3 crops / every frame), and the mean
fake probability over the views, computed by the train loop's own test function.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dfsearch.errors import DataError
from dfsearch.inference.detector import Detector


@dataclass
class VideoScore:
    video: str
    prob_fake: float | None = None
    label: str = ""  # "fake" | "real" | "" (not scored)
    views: int = 0
    frames: int = 0
    seconds: float = 0.0
    error: str = ""


def score_views(det: Detector, views) -> float:
    """Mean P(fake) over a video's views (uint8 (V, 3, T, H, W)): the train loop's own test scoring."""
    from dfsearch.train.loop import Normalizer, video_prob

    return video_prob(det.model, views, Normalizer(det.cfg, det.device), det.cfg)


def face_views(det: Detector, video: str | Path, work: Path):
    """Track the face of ``video`` into a one-video clip cache under ``work`` (as prepare does) and return
    (views uint8 (V, 3, T, H, W), frames).  DataError for a missing / undecodable / faceless video."""
    from dfsearch.data import eval_clips
    from dfsearch.data.cache_builder import TrackSettings, prepare_video
    from dfsearch.data.layout import VideoEntry

    d = det.cfg.data
    entry = VideoEntry(video_id="predict/video", method="predict", name="video", split="test", path=Path(video))
    dst = work / d.compression / "predict" / "video.clips"
    dst.parent.mkdir(parents=True, exist_ok=True)
    for old in dst.parent.iterdir():
        old.unlink()
    settings = TrackSettings(**{k: det.faces[k] for k in ("detector", "every", "smooth", "scale", "size", "quality") if k in det.faces})
    result = prepare_video(entry.video_id, str(video), str(dst), settings)
    if result.status != "done":
        raise DataError(result.reason if str(video) in result.reason else f"{video}: {result.reason}")
    clips = eval_clips(det.cfg, [entry], work)
    views, _, _ = clips[0]
    return views, clips.r.n_frames[0]


def score_video(det: Detector, video: str | Path, work: Path) -> VideoScore:
    t0 = time.perf_counter()
    try:
        views, frames = face_views(det, video, work)
        prob = score_views(det, views)
    except DataError as exc:
        return VideoScore(str(video), error=str(exc), seconds=time.perf_counter() - t0)
    label = "fake" if prob >= det.threshold else "real"
    return VideoScore(str(video), prob, label, int(views.shape[0]), int(frames), time.perf_counter() - t0)


def predict(det: Detector, videos: list[str], progress: bool = False) -> list[VideoScore]:
    """Score every video; bad ones come back with ``error`` set (the rest are still scored)."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(videos), desc="predict", unit="video", file=sys.stderr)
    out = []
    with tempfile.TemporaryDirectory(prefix="dfsearch-predict-") as tmp:
        try:
            for video in videos:
                out.append(score_video(det, video, Path(tmp)))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(failed=sum(1 for r in out if r.error))
        finally:
            if bar is not None:
                bar.close()
    return out
