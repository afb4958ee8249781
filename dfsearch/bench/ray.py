"""Overhead of running one trial through Ray (Tune trial driver -> TorchTrainer -> worker) against the very
same training loop run as plain Python, both measured in this process on the same config.

    python -m dfsearch.bench ray [--epochs 1] [--repeats 1]

The plain run is timed first (a warm-up run before it pays the one-off costs of imports, data preparation
and first-touch allocations); the Ray run is timed with and without the cluster start.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from dfsearch import space

SPACE = {
    "name": "bench-ray",
    "data": {"root": "synthetic", "clip_len": 8, "crop_size": 64, "num_workers": 0},
    "model": {"name": "resnet3d", "depth": 10, "widen_factor": 0.25, "conv1_t_size": 3},
    "optim": {"name": "adam"},
    "train": {"epochs": 1, "batch_size": 8, "amp": False},
    "eval": {"batch_size": 8},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dfsearch.bench ray", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=1, help="epochs per run (default 1)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each kind; the median is reported (default 1)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import statistics

    from dfsearch import data as dfdata
    from dfsearch.train.loop import LocalSession, train_loop
    from dfsearch.tune import cluster, tuner

    raw = {**SPACE, "train": {**SPACE["train"], "epochs": args.epochs}}
    spec = space.parse(raw, "bench")
    cfg = space.trial_config(spec, {})
    dfdata.ensure_prepared(cfg.data, progress=True)

    with tempfile.TemporaryDirectory(prefix="dfsearch-bench-") as tmp:
        tmp = Path(tmp)
        train_loop(cfg, LocalSession(tmp / "warmup"))
        plain = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            train_loop(cfg, LocalSession(tmp / f"plain{i}"))
            plain.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        cluster.connect(None, log_to_driver=False)
        init_s = time.perf_counter() - t0
        ray_fit = []
        try:
            for i in range(args.repeats):
                spec.name = f"bench-ray-{i}"
                paths = tuner.SweepPaths(tmp / spec.name)
                t0 = time.perf_counter()
                results = tuner.build_tuner(spec, paths, paths.default_tracking_uri(), "bench", {}, []).fit()
                ray_fit.append(time.perf_counter() - t0)
                if results.errors:
                    raise RuntimeError(f"the Ray trial failed: {results.errors[0]}")
        finally:
            cluster.disconnect()

    p, r = statistics.median(plain), statistics.median(ray_fit)
    print(f"\none trial, {args.epochs} epoch(s), r3d-10 (x0.25) at 8x64x64 on synthetic FF++, median of {args.repeats}\n")
    print("| run | seconds | ratio to plain |")
    print("| --- | ---: | ---: |")
    print(f"| plain Python (`train_loop` + LocalSession) | {p:.1f} | 1.00 |")
    print(f"| Ray: Tune trial -> TorchTrainer (cluster already up) | {r:.1f} | {r / p:.2f} |")
    print(f"| Ray: including `ray.init()` of a local cluster | {r + init_s:.1f} | {(r + init_s) / p:.2f} |")
    print(f"\nRay overhead per trial: {r - p:.1f} s (cluster start: {init_s:.1f} s, once per sweep)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
