"""Search efficiency: one small synthetic ablation run as a full grid and with ASHA, in the same process on the
same local Ray cluster, through the same Tuner that `run` builds.

    python -m dfsearch.bench search [--epochs 6] [--reduction-factor 4]

The ablation: learning rate x attention (none / non-local 3,4) for a narrow 3D ResNet-10 on synthetic FF++,
the 12 trials in a shuffled order (--seed): ASHA is asynchronous, so a trial is judged against those that
reached its rung before it, and a grid written in ascending order of quality would promote every trial.
Both searches rank trials by their best validation loss (a continuous metric: on a few synthetic validation
videos, TCR ties).  Printed: whether ASHA's best trial is the full grid's best (same configuration), and the
trial-epochs each spent — the compute that matters on a GPU cluster, where a trial's start-up is small next to
its epochs — plus the wall time on this machine.  Target (issue 7): the same top-1 at <= 40 % of the compute.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from dfsearch import space
from dfsearch.models import presets

ATTENTION = ["none", "nonlocal"]
LRS = [1.0e-5, 3.0e-5, 1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3]
BASE = {
    "data": {"root": "synthetic", "synthetic_pairs": 6, "synthetic_frames": 24, "synthetic_size": 96, "clip_len": 8, "crop_size": 64, "num_workers": 0},
    "model": {**presets.nested(presets.TINY_3D), "placement": "3,4"},
    "protocol": {"name": "all"},
    "optim": {"name": "adam"},
    "train": {"batch_size": 4, "amp": False},
    "eval": {"batch_size": 8},
    "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dfsearch.bench search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6, help="epochs of a trial that runs to the end (default 6)")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial may be stopped (default 1)")
    p.add_argument("--reduction-factor", type=int, default=4, help="ASHA: keep the top 1/rf at each rung (default 4)")
    p.add_argument("--max-concurrent", type=int, default=2, help="trials at a time (default 2)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--seed", type=int, default=0, help="order of the trials (shuffled: in a grid written in order, each trial would beat the "
                                                       "ones before it, the worst case for asynchronous halving); default 0")
    return p.parse_args(argv)


def make_spec(name: str, args, asha: bool) -> space.SweepSpec:
    search = {"algorithm": "grid", "metric": "val/loss", "max_concurrent": args.max_concurrent}
    if asha:
        search |= {"scheduler": "asha", "grace_period": args.grace_period, "reduction_factor": args.reduction_factor}
    import random

    cases = [{"model.attention": a, "optim.lr": lr} for a in ATTENTION for lr in LRS]
    random.Random(args.seed).shuffle(cases)
    raw = {**BASE, "name": name, "train": {**BASE["train"], "epochs": args.epochs}, "search": search, "cases": cases}
    return space.parse(raw, f"bench search ({name})")


def label(spec: space.SweepSpec, cfg: dict) -> str:
    return ", ".join(f"{k}={cfg.get(k)}" for k in spec.varied_keys())


def run_search(spec: space.SweepSpec, root: Path) -> dict:
    from dfsearch.tune import tuner

    paths = tuner.SweepPaths(root / spec.name)
    t0 = time.perf_counter()
    results = tuner.build_tuner(spec, paths, paths.default_tracking_uri(), spec.name, {}, []).fit()
    wall = time.perf_counter() - t0
    if results.errors:
        raise RuntimeError(f"{spec.name}: a trial failed: {results.errors[0]}")
    trials = []
    for result in results:
        m = result.metrics or {}
        trials.append({"config": label(spec, spec.resolve(result.config)), "loss": m["best/val/loss"], "epochs": int(m["epoch"]),
                       "tested": "test/tcr" in m})
    trials.sort(key=lambda t: t["loss"])
    return {"trials": trials, "wall": wall, "epochs": sum(t["epochs"] for t in trials)}


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from dfsearch import data as dfdata
    from dfsearch.tune import cluster

    grid, asha = make_spec("grid", args, asha=False), make_spec("asha", args, asha=True)
    dfdata.ensure_prepared(space.trial_config(grid, grid.grid_points()[0]).data, progress=True)
    with tempfile.TemporaryDirectory(prefix="dfsearch-bench-search-") as tmp:
        cluster.connect(None, num_cpus=args.num_cpus, log_to_driver=False)
        try:
            full = run_search(grid, Path(tmp))
            early = run_search(asha, Path(tmp))
        finally:
            cluster.disconnect()

    n = grid.trial_count()
    print(f"\n{n} trials (learning rate x attention), r3d-10 (x0.125) at 8x64² on synthetic FF++, {args.epochs} epochs, "
          f"ranked by best validation loss; ASHA: grace {args.grace_period}, reduction factor {args.reduction_factor}\n")
    print("| search | trial-epochs | ratio | wall s | ratio | tested trials | best trial (validation loss) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, r in (("full grid", full), ("ASHA", early)):
        best = r["trials"][0]
        print(f"| {name} | {r['epochs']} | {r['epochs'] / full['epochs']:.2f} | {r['wall']:.0f} | {r['wall'] / full['wall']:.2f} | "
              f"{sum(t['tested'] for t in r['trials'])} | {best['config']} ({best['loss']:.4f}) |")
    same = full["trials"][0]["config"] == early["trials"][0]["config"]
    ratio = early["epochs"] / full["epochs"]
    print(f"\nsame top-1 on validation: {'yes' if same else 'no'}; ASHA spent {ratio:.0%} of the full grid's trial-epochs "
          f"(target: same top-1 at <= 40 %: {'met' if same and ratio <= 0.40 else 'not met'})")
    print("full grid ranking: " + "; ".join(f"{t['config']} {t['loss']:.4f}" for t in full["trials"]))
    print("ASHA epochs per trial: " + "; ".join(f"{t['config']} {t['epochs']}" for t in early["trials"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
