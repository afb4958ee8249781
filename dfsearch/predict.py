"""Score videos with a trained detector: the probability that each video is fake.

    python -m dfsearch.predict clip1.mp4 clip2.mp4 --model models:/ffpp-detector/1
    python -m dfsearch.predict videos/*.mp4 --model 3f2a...c9 --tracking-uri sqlite:///runs/mlflow.db --json
    python -m dfsearch.predict clip.mp4 --model ./downloaded_model_dir --explain out/

--model takes an MLflow model URI (models:/NAME/VERSION, models:/MODEL_ID), a trial's
MLflow run id (its logged model; else its best checkpoint, when the sweep folder is on this machine), or a
local folder (an MLflow model folder, or one holding state_dict.pt + trial.yaml).  Only the weights-only
state dict and the trial config of a model are read (torch.load(weights_only=True), yaml.safe_load).

Each video goes through what a test video of the trial went through: the same face tracker (detector,
keyframe step, smoothing, the x1.3 square box) and crop size as `prepare`, then the detector's own test view
(250-frame trunks / the middle clip x 3 crops / every frame), and the mean fake probability over the views.
A video that cannot be scored (missing, undecodable, no face) gets one line on stderr; the others are still
scored, and the exit status is 1.  Runs on CPU, or on the GPU when there is one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dfsearch import config
from dfsearch.cli import guarded
from dfsearch.errors import DfsearchError

log = logging.getLogger(__name__)

STATE_DICT_FILE = "state_dict.pt"
CONFIG_FILE = "trial.yaml"
FACES_FILE = "faces.json"  # how the training cache tracked faces (detector, every, smooth, scale, size, quality)
RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class VideoScore:
    video: str
    prob_fake: float | None = None
    label: str = ""  # "fake" | "real" | "" (not scored)
    views: int = 0
    frames: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class Detector:
    """A trained detector ready to score videos: its trial config, the module (eval mode, on ``device``),
    and the face-tracking settings of the cache it was trained on."""

    cfg: Any  # dfsearch.config.TrialConfig
    model: Any  # torch.nn.Module
    faces: dict
    source: str
    device: Any = None
    threshold: float = 0.5
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ loading a model


def faces_of(cfg) -> dict:
    """The face-tracking settings of the cache ``cfg.data`` was prepared with (from a cache entry's header),
    or prepare's defaults for ``cfg.data``'s detector when the cache is not on this machine."""
    from dfsearch.data import cache as C
    from dfsearch.data import load_prepared, resolve_detector
    from dfsearch.data.cache_builder import TrackSettings

    defaults = asdict(TrackSettings(detector=resolve_detector(cfg.data.detector, cfg.data.root == "synthetic")))
    try:
        _, info, videos = load_prepared(cfg.data)
        header, _ = C.read_header(C.entry_path(info.cache_dir, cfg.data.compression, videos[0].video_id))
    except (DfsearchError, IndexError):
        return defaults
    keys = ("detector", "every", "smooth", "scale", "size", "quality")
    return {**defaults, **{k: header[k] for k in keys if k in header}}


def _from_folder(folder: Path, source: str) -> tuple[dict, dict, dict | None]:
    """(flat config, state dict, faces) from an MLflow model folder or a folder with state_dict.pt + trial.yaml."""
    import torch

    candidates = [folder, folder / "extra_files"]
    for base in candidates:
        sd, cf = base / STATE_DICT_FILE, base / CONFIG_FILE
        if sd.is_file() and cf.is_file():
            try:
                state = torch.load(sd, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise DfsearchError(f"{sd}: not a readable weights-only state dict ({type(exc).__name__}: {exc})") from None
            faces = None
            if (base / FACES_FILE).is_file():
                faces = json.loads((base / FACES_FILE).read_text())
            return config.flat_from_yaml(cf), state, faces
    raise DfsearchError(f"{source}: no {STATE_DICT_FILE} + {CONFIG_FILE} in {folder} (expected a model logged by dfsearch, e.g. by `python -m dfsearch.report --log-best`)")


def _from_run(run_id: str, tracking_uri: str | None) -> tuple[dict, dict, dict | None, str]:
    """A trial's MLflow run: its logged model if it has one, else its best checkpoint from the sweep folder."""
    from mlflow.tracking import MlflowClient

    from dfsearch.tune import best_model as BM
    from dfsearch.tune import mlflow_log as ML

    if not tracking_uri:
        raise DfsearchError(f"--model {run_id}: a run id needs the tracking store: pass --tracking-uri (or set $MLFLOW_TRACKING_URI)")
    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        raise DfsearchError(f"--model {run_id}: no such run in {tracking_uri} ({str(exc).splitlines()[0][:200]})") from None
    uri = run.data.tags.get(ML.MODEL_TAG)
    if uri:
        flat, state, faces = _download(uri, tracking_uri)
        return flat, state, faces, f"{uri} (run {run_id})"
    flat = BM.trial_config_of(client, run)
    state = BM.best_weights(run.data.tags.get(ML.TRAIN_DIR_TAG, ""))
    return flat, state, None, f"run {run_id} (best checkpoint in {run.data.tags.get(ML.TRAIN_DIR_TAG)})"


def _download(uri: str, tracking_uri: str | None) -> tuple[dict, dict, dict | None]:
    import mlflow
    import mlflow.artifacts

    if tracking_uri:  # models:/ URIs resolve through the registry, which must be the same store
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except Exception as exc:
            raise DfsearchError(f"--model {uri}: cannot fetch it from {tracking_uri or 'the default MLflow store'} ({str(exc).splitlines()[0][:200]})") from None
        return _from_folder(Path(local), uri)


def load_detector(ref: str, tracking_uri: str | None = None, device: str = "auto") -> Detector:
    """``ref``: an MLflow model URI, a run id, or a local folder (see the module docstring)."""
    import torch

    from dfsearch import models

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    path = Path(ref).expanduser()
    faces = None
    if path.is_dir():
        flat, state, faces = _from_folder(path, ref)
        source = str(path)
    elif ref.startswith(("models:/", "runs:/")) or "://" in ref:
        flat, state, faces = _download(ref, tracking_uri)
        source = ref
    elif RUN_ID.fullmatch(ref):
        flat, state, faces, source = _from_run(ref, tracking_uri)
    else:
        raise DfsearchError(f"--model {ref}: not a folder, an MLflow model URI (models:/NAME/VERSION) or a run id (32 hex digits)")
    cfg = config.from_flat(flat)
    arch = config.from_flat({**flat, "model.pretrained": "none"})  # every weight is in the state dict
    model = models.build(arch)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DfsearchError(f"--model {ref}: the weights do not fit a {cfg.model.name} built from its config ({str(exc).splitlines()[0][:200]})") from None
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    model.to(dev).eval()
    return Detector(cfg, model, faces or faces_of(cfg), source, dev)


# -------------------------------------------------------------------------------------------- scoring


def score_views(det: Detector, views) -> float:
    """Mean P(fake) over a video's views (uint8 (V, 3, T, H, W)): the train loop's own test scoring."""
    from dfsearch.train.loop import Normalizer, video_prob

    return video_prob(det.model, views, Normalizer(det.cfg, det.device), det.cfg)


def face_views(det: Detector, video: str | Path, work: Path):
    """Track the face of ``video`` into a one-video clip cache under ``work`` (as prepare does) and return
    (views uint8 (V, 3, T, H, W), frames).  DataError for a missing / undecodable / faceless video."""
    from dfsearch.data.cache_builder import TrackSettings, prepare_video
    from dfsearch.data.clips import EvalClips
    from dfsearch.data.layout import VideoEntry
    from dfsearch.errors import DataError
    from dfsearch.models import registry

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
    clips = EvalClips([entry], work, d.compression, mode=registry.get(det.cfg.model.name).test_view, clip_len=d.clip_len,
                      frame_stride=d.frame_stride, crop_size=d.crop_size, test_trunk=d.test_trunk)
    views, _, _ = clips[0]
    return views, clips.r.n_frames[0]


def score_video(det: Detector, video: str | Path, work: Path) -> VideoScore:
    from dfsearch.errors import DataError

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


# ------------------------------------------------------------------------------------------------- CLI


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dfsearch.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (mp4, avi, ... anything FFmpeg decodes)")
    p.add_argument("--model", required=True, help="models:/NAME/VERSION, models:/MODEL_ID, a run id, or a local model folder")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking store for run ids and models:/ URIs (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--threshold", type=float, default=0.5, help="P(fake) at or above which a video is labelled fake (default 0.5, as TCR)")
    p.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:1, ...")
    p.add_argument("--json", action="store_true", help="print one JSON list (one object per video, errors included) instead of a table")
    p.add_argument("--explain", metavar="DIR", default=None, help="also write attention maps per video into DIR as PNGs (see dfsearch.explain)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


def print_table(results: list[VideoScore]) -> None:
    rows = [r for r in results if not r.error]
    if not rows:
        return
    width = max(len("video"), *(len(r.video) for r in rows))
    print(f"{'video'.ljust(width)}  P(fake)  label  views  frames  seconds")
    for r in rows:
        print(f"{r.video.ljust(width)}  {r.prob_fake:7.4f}  {r.label:<5}  {r.views:5d}  {r.frames:6d}  {r.seconds:7.2f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        if not 0.0 < args.threshold < 1.0:
            raise DfsearchError(f"--threshold {args.threshold}: expected a probability strictly between 0 and 1")
        det = load_detector(args.model, args.tracking_uri, args.device)
        det.threshold = args.threshold
        results = predict(det, args.videos, progress=len(args.videos) > 1 and not args.json)
        if args.explain:
            from dfsearch.explain import explain_videos

            for video, pngs in explain_videos(det, [r.video for r in results if not r.error], args.explain).items():
                log.info("%s: %s", video, ", ".join(map(str, pngs)))
        if args.json:
            print(json.dumps([{k: v for k, v in asdict(r).items() if v not in ("", None) or k in ("prob_fake", "label")} for r in results], indent=2))
        else:
            print(f"model: {det.source} ({det.cfg.model.name}, {det.cfg.protocol.name}; device {det.device})")
            print_table(results)
        for r in results:
            if r.error:
                print(f"error: {r.error}", file=sys.stderr)
        return 1 if any(r.error for r in results) else 0

    return guarded(body, debug=args.debug, interrupted="nothing was written; run the command again")


if __name__ == "__main__":
    sys.exit(main())
