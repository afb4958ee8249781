"""Overhead of running one trial through Ray (Tune trial -> Ray Train torch workers) against the very same
training loop run as plain Python, both measured in this process on the same config and the same number of
threads (``--threads``: torch threads of the plain run = CPUs of the Train worker, which Ray turns into its
torch threads).

    python -m dfsearch.bench ray [--epochs 1] [--repeats 3] [--threads 1] [--trials 1]

The plain run is timed after a warm-up run (which pays the one-off costs of imports, data preparation and
first-touch allocations), and Ray's after a warm-up of the cluster (one empty trial: the first trial of a fresh
cluster is seconds slower).  Each repeat then runs the plain loop, the Ray sweep and Ray's floor one after
another, so that a change in the machine's speed (shared cores) hits all three alike; the overhead is the
median of the repeats' differences (Ray - plain).  Each Ray run is a sweep, run as ``python -m dfsearch.run``
runs it (the MLflow store created before the sweep starts, the cluster already up); what happens once per sweep
(``ray.init()``, creating the MLflow store) is reported apart, and so is Ray's floor: the same Tune trial ->
Train path around an empty train function (Ray's ``TorchTrainer``, as the trial; ``--compare-plain-trainer``: beside
the same with a plain ``DataParallelTrainer`` and no process group, which loads no torch outside the worker: what the
public ``TorchTrainer`` costs over that floor).  ``--trials N``
runs N trials per sweep, one after another (Tune reuses the trial actor: ``dfsearch.tune.tuner.build_tuner``),
and reports the time per trial.  The trial's parts come from Ray's own task timeline (``ray.timeline()``): when
the trial actor, Train's controller and the Train worker started their work.

Ray Train settings the project sets (``dfsearch.tune.cluster.TRAIN_ENV``, and ``LOCAL_TRAIN_ENV`` on a local
cluster) can be overridden from the shell to measure Ray's defaults, e.g.
``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=2 RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=1 python -m dfsearch.bench ray``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from dfsearch import space
from dfsearch.models import presets

SPACE = {
    "name": "bench-ray",
    "data": {"root": "synthetic", "clip_len": 8, "crop_size": 64, "num_workers": 0},
    "model": presets.nested(presets.SMALL_3D),
    "optim": {"name": "adam"},
    "train": {"epochs": 1, "batch_size": 8, "amp": False},
    "eval": {"batch_size": 8},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}

# The marks of one trial in Ray's task timeline: (label, the task whose start or end marks it).
MARKS = (
    ("trial actor up", "ImplicitFunc.__init__", "end"),
    ("Train controller up", "TrainController.run", "start"),
    ("train function started", "RayTrainWorker.run_train_fn", "start"),
    ("Train run done", "TrainController.run", "end"),
)
PARTS = (
    "Tune starts the trial actor (its process; unpickling the trial: imports)",
    "the trial builds its Ray Train trainer; Train's controller starts (report queue, controller process, imports)",
    "Train starts its worker group (placement group, worker processes, imports, process group)",
    "the train function: training stack imports, training, reports, shutdown",
    "Tune wraps the trial up",
)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dfsearch.bench ray", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=1, help="epochs per run (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of (plain, Ray, Ray alone), run in turn; medians are reported (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the plain run = CPUs of the Train worker (default 1, as smoke.yaml)")
    p.add_argument("--trials", type=int, default=1, help="trials per sweep, run one after another (different seeds); default 1")
    p.add_argument("--compare-plain-trainer", action="store_true",
                   help="also time Ray's floor with a plain DataParallelTrainer (no torch in the trial actor and Train's controller, no process group), "
                        "interleaved with the TorchTrainer's")
    p.add_argument("--timeline", metavar="FILE", help="also write Ray's task timeline of the Ray runs to FILE (JSON for chrome://tracing or Perfetto)")
    return p.parse_args(argv)


def trial_marks(events: list[dict], start: float, end: float) -> list[float | None]:
    """Seconds after ``start`` of each of MARKS, from the task events that fall in [start, end]."""
    found: dict[str, tuple[float, float]] = {}
    for e in sorted(events, key=lambda e: e.get("ts", 0)):  # the first of each task in the window
        name = e.get("cat", "").removeprefix("task::")
        ts = e.get("ts", 0) / 1e6
        if e.get("ph") == "X" and start <= ts <= end and name not in found:
            found[name] = (ts - start, ts + e.get("dur", 0) / 1e6 - start)
    return [found[task][0 if edge == "start" else 1] if task in found else None for _, task, edge in MARKS]


def parts_of(marks: list[float | None], total: float) -> list[float | None]:
    points = [0.0, *marks, total]
    return [b - a if a is not None and b is not None else None for a, b in zip(points, points[1:])]


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _report_once() -> None:
    import ray.train

    ray.train.report({"epoch": 1})


def _empty_trial(config) -> None:
    """Ray's floor: the same Tune trial -> Train path as ``dfsearch.tune.driver.run_trial`` (the same trainer and
    torch config, worker resources and Tune report bridge) around a train function that only reports once and
    imports nothing of the training stack.  ``config["trainer"] == "plain"``: a ``DataParallelTrainer`` without a
    backend instead (no torch in the trial actor and Train's controller, no process group)."""
    import ray.train
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from dfsearch import ray_internals as RI

    common = {
        "scaling_config": ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": config["cpus"]}),
        "run_config": ray.train.RunConfig(name="floor", storage_path=config["storage"], callbacks=[RI.tune_report_callback()]),
    }
    if config["trainer"] == "plain":
        DataParallelTrainer(_report_once, **common).fit()
    else:
        from ray.train.torch import TorchTrainer

        from dfsearch.tune.driver import torch_config

        TorchTrainer(_report_once, torch_config=torch_config(), **common).fit()
    RI.wait_until_tune_took_the_reports()


def ray_floor(storage: Path, cpus: int, trainer: str = "TorchTrainer") -> float:
    from ray import tune

    trainable = tune.with_resources(_empty_trial, {"CPU": 0, "memory": 1})  # as driver.trainable: no CPU for the trial actor
    start = time.perf_counter()
    results = tune.Tuner(trainable, param_space={"cpus": cpus, "storage": str(storage / "train"), "trainer": trainer},
                         run_config=tune.RunConfig(name="floor", storage_path=str(storage), verbose=0)).fit()
    seconds = time.perf_counter() - start
    if results.errors:
        raise RuntimeError(f"the empty Ray trial failed: {results.errors[0]}")
    return seconds


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import ray
    import torch

    from dfsearch import data as dfdata
    from dfsearch.train.loop import LocalSession, train_loop
    from dfsearch.tune import cluster, tuner
    from dfsearch.tracking.store import check_tracking

    raw = {**SPACE, "train": {**SPACE["train"], "epochs": args.epochs}, "resources": {**SPACE["resources"], "cpus_per_worker": args.threads}}
    if args.trials > 1:
        raw |= {"cases": [{"train.seed": i} for i in range(args.trials)], "search": {"algorithm": "grid", "max_concurrent": 1}}
    spec = space.parse(raw, "bench")
    cfg = space.trial_config(spec, {})
    dfdata.ensure_prepared(cfg.data, progress=True)

    with tempfile.TemporaryDirectory(prefix="dfsearch-bench-") as tmp:
        tmp = Path(tmp)
        torch.set_num_threads(args.threads)
        train_loop(cfg, LocalSession(tmp / "warmup"))

        t0 = time.perf_counter()
        cluster.connect(None, log_to_driver=False)
        init_s = time.perf_counter() - t0
        plain, fits, store_s, floors, torch_floors, floor_error = [], [], [], [], [], None
        try:
            ray_floor(tmp / "warm-up", args.threads)
            for i in range(args.repeats):  # interleaved: a slower spell of the machine hits plain and Ray alike
                t0 = time.perf_counter()
                train_loop(cfg, LocalSession(tmp / f"plain{i}"))
                plain.append(time.perf_counter() - t0)

                spec.name = f"bench-ray-{i}"
                paths = tuner.SweepPaths(tmp / spec.name)
                t0 = time.perf_counter()
                check_tracking(paths.default_tracking_uri(), "bench")
                store_s.append(time.perf_counter() - t0)
                start = time.time()
                results = tuner.build_tuner(spec, paths, paths.default_tracking_uri(), "bench", {}, []).fit()
                fits.append((start, time.time()))
                if results.errors:
                    raise RuntimeError(f"the Ray trial failed: {results.errors[0]}")

                if floor_error is None:
                    try:  # a failure here must not hide the numbers above
                        floors.append(ray_floor(tmp / f"floor{i}", args.threads))
                        if args.compare_plain_trainer:
                            torch_floors.append(ray_floor(tmp / f"plain-floor{i}", args.threads, "plain"))
                    except Exception as exc:  # noqa: BLE001 - reported below, and the exit status says so
                        floor_error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            events = ray.timeline(filename=None)
            if args.timeline:
                Path(args.timeline).write_text(json.dumps({"fits": fits, "traceEvents": events}))
        finally:
            cluster.disconnect()

    p = statistics.median(plain)
    n = args.trials
    per_trial = [(end - start) / n for start, end in fits]
    r = statistics.median(per_trial)
    overhead = statistics.median(ray_s - plain_s for ray_s, plain_s in zip(per_trial, plain))
    # Parts of each sweep's first trial (with several trials, its wrap-up overlaps the next trial's start).
    parts = [median_or_none(col) for col in zip(*(parts_of(trial_marks(events, s, e), e - s) for s, e in fits))]
    if n > 1:
        parts[-1] = None
    train_env = {k: os.environ.get(k, v) for k, v in {**cluster.TRAIN_ENV, **cluster.LOCAL_TRAIN_ENV}.items()}
    what = "one trial" if n == 1 else f"a sweep of {n} trials (seeds), one after another"
    print(f"\n{what}, {args.epochs} epoch(s), r3d-10 (x0.25) at 8x64x64 on synthetic FF++, {args.threads} thread(s), median of {args.repeats}")
    print(f"Ray Train settings: {', '.join(f'{k}={v}' for k, v in train_env.items())}\n")
    print("| run (per trial) | seconds | ratio to plain |")
    print("| --- | ---: | ---: |")
    print(f"| plain Python (`train_loop` + LocalSession) | {p:.1f} | 1.00 |")
    print(f"| Ray: Tune trial -> Train workers (cluster already up) | {r:.1f} | {r / p:.2f} |")
    floor = statistics.median(floors) if floors else float("nan")
    print(f"| Ray alone: the same path (`TorchTrainer`) around an empty train function | {floor:.1f} | |")
    if torch_floors:
        print(f"| Ray alone with a plain `DataParallelTrainer` (no torch outside the worker, no process group) | {statistics.median(torch_floors):.1f} | |")
    print(f"\nIn order (s): plain {', '.join(f'{t:.1f}' for t in plain)}; Ray {', '.join(f'{t:.1f}' for t in per_trial)}; "
          f"Ray alone {', '.join(f'{f:.1f}' for f in floors)}")
    print(f"Ray overhead per trial: {overhead:.1f} s (median of Ray - plain over the repeats), of which Ray alone {floor:.1f} s; "
          f"once per sweep: ray.init() {init_s:.1f} s, MLflow store {statistics.median(store_s):.1f} s\n")
    print(f"| part of {'the' if n == 1 else 'the first'} Ray trial (from Ray's task timeline) | seconds |")
    print("| --- | ---: |")
    for label, value in zip(PARTS, parts):
        print(f"| {label} | {'n/a' if value is None else f'{value:.1f}'} |")
    if n == 1:
        print(f"| total (the plain run alone: {p:.1f}) | {r:.1f} |")
    if floor_error:
        print(f"\nthe empty-trial run (Ray alone) failed: {floor_error}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
