"""Run (or resume) an ablation sweep described by one search-space YAML.

    python -m dfsearch.run search_spaces/smoke.yaml              # local Ray, SQLite MLflow, synthetic data
    python -m dfsearch.run search_spaces/smoke.yaml --dry-run    # the trial table; Ray is not started
    python -m dfsearch.run search_spaces/smoke.yaml --resume     # continue after a crash or Ctrl-C
    python -m dfsearch.run search_spaces/table2.yaml --address auto --tracking-uri http://mlflow:5000

Everything a sweep writes lives in WORK_DIR/NAME/: Tune's state (tune/), each trial's Train run and
checkpoints (train/), the sweep record (sweep.json) and, by default, the MLflow store (mlflow.db).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from dfsearch import config, space
from dfsearch.cli import guarded
from dfsearch.errors import DfsearchError


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dfsearch.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("space", help="search-space YAML (format: search_spaces/README.md)")
    p.add_argument("--resume", action="store_true", help="continue the sweep in WORK_DIR/NAME: finished trials are kept, unfinished ones continue from their last checkpoint, errored ones are retried")
    p.add_argument("--dry-run", action="store_true", help="print the expanded trial table and the resources each trial asks for, then exit (Ray is not started)")
    p.add_argument("--address", default=None, help="Ray cluster to join: 'auto' (the cluster this machine is part of), HOST:PORT, or 'local' (default: start a local cluster)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///WORK_DIR/NAME/mlflow.db)")
    p.add_argument("--experiment", default=None, help="MLflow experiment name (default: the sweep name)")
    p.add_argument("--work-dir", default=os.environ.get("DFSEARCH_WORK_DIR", "runs"), help="where sweep folders live (default: $DFSEARCH_WORK_DIR or ./runs)")
    p.add_argument("--name", default=None, help="sweep name (default: 'name:' in the YAML, else the file name)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local cluster (default: all)")
    p.add_argument("--debug", action="store_true", help="show tracebacks and Ray's own logs")
    return p.parse_args(argv)


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        print("  ".join(_cell(row.get(c)).ljust(widths[c]) for c in columns))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if value == value else "-"
    return "-" if value is None else str(value)


def dry_run(spec: space.SweepSpec) -> None:
    rows = space.expand(spec)
    keys = spec.varied_keys()
    print(f"sweep {spec.name}: {spec.trial_count()} trial(s) from {spec.source}")
    print(f"search: {spec.search.algorithm}, scheduler {spec.search.scheduler}, metric {spec.search.metric} ({spec.search.mode}), "
          f"max concurrent {spec.search.max_concurrent or 'as resources allow'}")
    if spec.search.algorithm != "grid":
        print("(sampled values below are an illustration; the real draws happen when the sweep runs)")
    print()
    print_table([{"#": i + 1, **row} for i, row in enumerate(rows)], ["#", *keys])
    r = spec.resources
    per = r.per_trial()
    print(f"\neach trial: {r.workers} worker(s) x ({r.cpus_per_worker:g} CPU, {r.gpus_per_worker:g} GPU) = {per['CPU']:g} CPU, {per['GPU']:g} GPU "
          f"(the trial driver reserves none)")
    if spec.fixed:
        print("fixed: " + ", ".join(f"{k}={v}" for k, v in spec.fixed.items()))


def data_configs(spec: space.SweepSpec) -> list[config.DataConfig]:
    """The distinct data settings the sweep's trials use (each is prepared once, before any trial)."""
    sampled = {k: d for k, d in spec.searched.items() if d.kind != "grid"}
    variants = [{}] + [{k: v} for k, d in sampled.items() if k.startswith("data.") for v in d.probe_values()]
    out: dict[str, config.DataConfig] = {}
    for point in spec.grid_points():
        for variant in variants:
            flat = {**{k: d.probe_values()[0] for k, d in sampled.items()}, **point, **variant}
            data = space.trial_config(spec, flat).data
            out.setdefault(repr(data), data)
    return list(out.values())


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        spec = space.load(args.space)
        if args.name:
            spec.name = args.name
        if args.dry_run:
            dry_run(spec)
            return 0
        return run(spec, args)

    return guarded(body, debug=args.debug, interrupted=f"continue with: python -m dfsearch.run {args.space} --resume")


def run(spec: space.SweepSpec, args) -> int:
    # Ray, torch and MLflow are imported only here, so --help, --dry-run and config errors stay instant.
    from dfsearch import data as dfdata
    from dfsearch.tune import cluster, tuner
    from dfsearch.tune.mlflow_log import check_tracking
    from dfsearch.tune.progress import ProgressPrinter

    paths = tuner.SweepPaths(Path(args.work_dir) / spec.name)
    if args.resume:
        record = tuner.load_record(paths)
        tracking_uri, experiment = record["tracking_uri"], record["experiment"]
    else:
        if paths.tune.exists():
            raise DfsearchError(f"sweep '{spec.name}' already exists in {paths.root}; pass --resume to continue it, or --name NEW to start another")
        tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri()
        experiment = args.experiment or spec.name

    cluster.check_address(args.address)
    own_store = tracking_uri == paths.default_tracking_uri()
    if not own_store:  # a server (or a store the user named) must answer before anything starts
        check_tracking(tracking_uri, experiment)
    infos = []
    for data_cfg in data_configs(spec):
        print(f"data: {data_cfg.root} ({data_cfg.compression}) ...", flush=True)
        infos.append(dfdata.ensure_prepared(data_cfg, progress=True))
    fingerprint = ",".join(sorted({i.fingerprint for i in infos}))
    synthetic = any(i.synthetic for i in infos)

    resources = cluster.connect(args.address, num_cpus=args.num_cpus, log_to_driver=args.debug)
    try:
        cluster.check_fits(spec.resources.per_trial(), resources)
        if own_store:  # created in the sweep folder only once every other check has passed
            check_tracking(tracking_uri, experiment)
        started = time.monotonic()
        if args.resume:
            states = tuner.trial_states(paths)
            counts = states["status"].value_counts().to_dict() if len(states) else {}
            print(f"resuming sweep '{spec.name}' from {paths.root}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
            for row in states.itertuples():
                after = f"epoch {row.epoch}" if row.epoch else "the start (no checkpoint yet)"
                action = {"TERMINATED": "kept (finished)", "ERROR": f"retried from {after}"}.get(row.status, f"continues after {after}")
                print(f"  trial {row.trial_id}: {action}")
            tuner_ = tuner.restore_tuner(spec, paths)
        else:
            paths.root.mkdir(parents=True, exist_ok=True)
            tuner.save_record(paths, spec, tracking_uri, experiment)
            print(f"sweep '{spec.name}': {spec.trial_count()} trial(s), {spec.resources.per_trial()['CPU']:g} CPU / "
                  f"{spec.resources.per_trial()['GPU']:g} GPU each; folder {paths.root}")
            tags = tuner.base_tags(spec, fingerprint, synthetic)
            progress = ProgressPrinter(spec, spec.trial_count(), tuner.max_epochs(spec))
            tuner_ = tuner.build_tuner(spec, paths, tracking_uri, experiment, tags, [progress])
        results = tuner_.fit()
        unfinished = [r.trial_id for r in tuner.trial_states(paths).itertuples() if r.status not in ("TERMINATED", "ERROR")]
    finally:
        cluster.disconnect()

    table = tuner.summary(results, spec)
    print(f"\nsweep '{spec.name}' finished in {time.monotonic() - started:.0f} s" + ("  [SYNTHETIC DATA: plumbing check, not a result]" if synthetic else ""))
    print_table(table.to_dict("records"), list(table.columns))
    print(f"\nbrowse it:  mlflow ui --backend-store-uri {tracking_uri}")
    errors = int((table["status"] == "error").sum()) if len(table) else 0
    if unfinished:
        print(f"{len(unfinished)} trial(s) did not finish (interrupted); continue with: python -m dfsearch.run {spec.source} --resume"
              + (f" --name {spec.name}" if args.name else "") + (f" --work-dir {args.work_dir}" if args.work_dir != "runs" else ""), file=sys.stderr)
        return 130
    if errors:
        print(f"{errors} trial(s) failed; fix the cause and run again with --resume to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
