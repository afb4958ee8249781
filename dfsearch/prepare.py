"""python -m dfsearch.prepare ROOT — detect and track faces in a FaceForensics++ tree once and write the clip cache.

Resumable: finished videos (and videos already recorded as failed) are skipped, so re-running after an
interruption only does what is left.  Videos without a usable face, or that do not decode, are recorded as
failed with the reason and left out of training; the run goes on.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dfsearch.cli import guarded
from dfsearch.config import COMPRESSIONS, FACE_DETECTORS, TEST_SETS
from dfsearch.errors import DfsearchError

EPILOG = """\
examples:
  python -m dfsearch.prepare /data/FaceForensics++ --compression c40 --workers 4
  python -m dfsearch.prepare /data/FaceForensics++ --detector opencv      # offline, no weights needed
  python -m dfsearch.prepare synthetic                                    # the synthetic stand-in (default size)
  python -m dfsearch.prepare /data/Celeb-DF-v2 --dataset celebdf          # a test-only set (data.test_sets)
  DEEPERFORENSICS_TARGETS=/data/FaceForensics++ python -m dfsearch.prepare /data/DeeperForensics-1.0 --dataset deeperforensics
  python -m dfsearch.prepare /mnt/nfs/dfdc --dataset dfdc --address auto  # one Ray task per video over the cluster's nodes

detectors:
  face_alignment  the paper's (2D landmarks -> box x1.3). Its weights go to the torch hub cache
                  (~/.cache/torch/hub/checkpoints); face-alignment downloads them when online, offline copy
                  s3fd-619a316812.pth and 2DFAN4-11f355bf06.pth.tar there.
  opencv          OpenCV's Haar cascade, shipped in the opencv-python 4.x wheel (works offline).

on a Ray cluster (--address): ROOT and the cache must be at the same path on every node (checked first); a task
per video, face_alignment on a node's GPU where it has one (--gpus-per-task of it), else on one CPU; a lost node's
unfinished videos run again on the others.

exit status: 0 done (some videos may be recorded as failed), 1 some videos unfinished (their tasks were lost
too often; run again), 2 bad input (wrong root, missing weights, cache not shared, ...).
"""


def build_parser() -> argparse.ArgumentParser:
    from dfsearch.data.cache import DEFAULT_QUALITY, DEFAULT_SIZE
    from dfsearch.data.cache_builder import DEFAULT_EVERY, DEFAULT_SMOOTH

    p = argparse.ArgumentParser(
        prog="python -m dfsearch.prepare",
        description="Detect faces in a FaceForensics++ tree and write the face-crop clip cache (resumable).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", help="FaceForensics++ root (holding original_sequences/ and manipulated_sequences/), or 'synthetic'")
    p.add_argument("--dataset", default="ffpp", choices=("ffpp",) + TEST_SETS,
                   help="ROOT's layout: ffpp (default), or a test-only set of data.test_sets (its cache: ROOT/.dfsearch_cache/NAME)")
    p.add_argument("--compression", default="c40", choices=COMPRESSIONS, help="which videos to prepare (paper: c40; default %(default)s)")
    p.add_argument("--cache-dir", default="", help="where the cache goes (default: ROOT/.dfsearch_cache)")
    p.add_argument("--detector", default="auto", choices=FACE_DETECTORS,
                   help="face detector (auto: face_alignment for real data, opencv for synthetic)")
    p.add_argument("--device", default="auto", help="torch device for face_alignment: auto | cpu | cuda | cuda:1 (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes on this machine (default %(default)s)")
    p.add_argument("--address", default="", help="run one Ray task per video on this Ray cluster instead: auto (the one this "
                   "machine belongs to) or HOST:PORT; ROOT and the cache must be shared by every node")
    p.add_argument("--gpus-per-task", type=float, default=None,
                   help="with --address: the fraction of a GPU each face_alignment task takes on a node with GPUs (default 0.25)")
    p.add_argument("--every", type=int, default=DEFAULT_EVERY, help="run the detector on every k-th frame, interpolate between (default %(default)s)")
    p.add_argument("--smooth", type=int, default=DEFAULT_SMOOTH, help="moving-average window of the boxes, frames (default %(default)s)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="side of the cached face crops, px (default %(default)s; > 224 for TimeSformer)")
    p.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality of the cached crops (default %(default)s)")
    p.add_argument("--retry-failed", action="store_true", help="try videos recorded as failed again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    return p


def plan_test_set_cli(args):
    """``--dataset NAME``: the videos a test-only set's label files name, into its own cache."""
    from dfsearch.config import DataConfig
    from dfsearch.data import resolve_detector
    from dfsearch.data.cache_builder import TrackSettings
    from dfsearch.data.testsets import IN_FFPP, plan_test_set, resolve

    if args.cache_dir and args.dataset not in IN_FFPP:
        raise DfsearchError(f"--cache-dir: the {args.dataset} cache is ROOT/.dfsearch_cache (where trials look for it)")
    data_cfg = DataConfig(root=args.root, compression=args.compression, cache_dir=args.cache_dir)
    ts = resolve(data_cfg, f"{args.dataset}={args.root}")
    settings = TrackSettings(detector=resolve_detector(args.detector, False), device=args.device, every=args.every,
                             smooth=args.smooth, size=args.size, quality=args.quality)
    jobs, summary = plan_test_set(ts, settings, retry_failed=args.retry_failed)
    return jobs, summary, settings, f"prepare {ts.name}"


def plan_tree_cli(args):
    from dfsearch.data import resolve_detector
    from dfsearch.data.cache_builder import TrackSettings, plan_tree
    from dfsearch.data.synthetic import SyntheticParams, ensure_synthetic_tree, is_synthetic

    root = args.root
    synthetic = root == "synthetic"
    if synthetic:
        root = ensure_synthetic_tree(SyntheticParams(compression=args.compression), progress=not args.no_progress)
    else:
        synthetic = is_synthetic(root)
    settings = TrackSettings(detector=resolve_detector(args.detector, synthetic), device=args.device, every=args.every,
                             smooth=args.smooth, size=args.size, quality=args.quality)
    jobs, summary = plan_tree(root, args.compression, cache_dir=args.cache_dir or None, settings=settings, retry_failed=args.retry_failed)
    return jobs, summary, settings, f"prepare {args.compression}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        from dfsearch.data.cache_builder import run_jobs

        if args.workers < 1 or args.every < 1 or args.smooth < 1 or not 1 <= args.quality <= 100 or args.size < 32:
            raise DfsearchError("--workers, --every and --smooth must be >= 1, --quality 1..100, --size >= 32")
        if args.address and args.workers != 1:
            raise DfsearchError("--workers and --address: choose one (on a cluster, each node runs as many videos as it has CPUs)")
        if args.gpus_per_task is not None and not args.address:
            raise DfsearchError("--gpus-per-task applies to --address (a Ray cluster) only")
        if args.address:
            from dfsearch.tune.cluster import check_address

            check_address(args.address)  # an address nobody listens on: fail in seconds, before indexing the tree
        jobs, summary, settings, desc = (plan_tree_cli if args.dataset == "ffpp" else plan_test_set_cli)(args)
        if args.address:
            from dfsearch.tune.prepare import DEFAULT_GPUS_PER_TASK, prepare_on_cluster

            gpus = DEFAULT_GPUS_PER_TASK if args.gpus_per_task is None else args.gpus_per_task
            summary = prepare_on_cluster(jobs, summary, settings, address=args.address, gpus_per_task=gpus,
                                         progress=not args.no_progress, desc=desc)
        else:
            summary = run_jobs(jobs, summary, settings, workers=args.workers, progress=not args.no_progress, desc=desc)
        print("\n".join(summary.lines()))
        return 1 if summary.unfinished else 0

    return guarded(body, debug=args.debug, interrupted="finished videos are kept; run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
