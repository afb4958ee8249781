"""Score videos with a trained detector: the probability that each video is fake.

    python -m dfsearch.predict clip1.mp4 clip2.mp4 --model models:/ffpp-detector/1
    python -m dfsearch.predict videos/*.mp4 --model 3f2a...c9 --tracking-uri sqlite:///runs/mlflow.db --json
    python -m dfsearch.predict clip.mp4 --model ./downloaded_model_dir --explain out/

--model takes an MLflow model URI (models:/NAME/VERSION, models:/MODEL_ID), a trial's
MLflow run id (its logged model; else its best checkpoint, when the sweep folder is on this machine), or a
local folder (an MLflow model folder, or one holding state_dict.pt + trial.yaml).  Only the weights-only
state dict and the trial config of a model are read (torch.load(weights_only=True), yaml.safe_load).
The work is done by dfsearch.inference; this is its command line.

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
import sys
from dataclasses import asdict

from dfsearch.cli import guarded
from dfsearch.errors import DfsearchError
from dfsearch.inference import VideoScore, load_detector, predict

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- CLI


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dfsearch.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (mp4, avi, ... anything FFmpeg decodes)")
    p.add_argument("--model", required=True, help="models:/NAME/VERSION, models:/MODEL_ID, a run id, or a local model folder")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking store for run ids and models:/ URIs (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--threshold", type=float, default=0.5, help="P(fake) at or above which a video is labelled fake (default 0.5, as TCR)")
    p.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:1, ...")
    p.add_argument("--json", action="store_true", help="print one JSON list (one object per video, errors included) instead of a table")
    p.add_argument("--explain", metavar="DIR", default=None, help="also write attention maps per video into DIR as PNGs (see dfsearch.inference.attention)")
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
            from dfsearch.inference.attention import explain_videos

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
