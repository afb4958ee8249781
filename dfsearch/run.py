"""Run (or resume) an ablation sweep described by one search-space YAML.

    python -m dfsearch.run search_spaces/placement.yaml --smoke     # Table II's grid on synthetic data, CPU, minutes
    FFPP_ROOT=/data/ffpp python -m dfsearch.run search_spaces/placement.yaml --address auto
    python -m dfsearch.run search_spaces/placement.yaml --dry-run   # the trial table and a GPU-hour estimate
    python -m dfsearch.run search_spaces/placement.yaml --resume    # continue after a crash or Ctrl-C
    python -m dfsearch.run search_spaces/smoke.yaml --set train.epochs=1 --set search.max_concurrent=1

A trial whose configuration fingerprint already has a FINISHED, tested run in the tracking store (from any
sweep: Tables II, IV and V share cells) is not run again; --rerun runs it anyway.  At the end, the report of
the space's paper table is printed and logged to the sweep's MLflow parent run.

Everything a sweep writes lives in WORK_DIR/NAME/: Tune's state (tune/), each trial's Train run and
checkpoints (train/), the sweep record (sweep.json) and the report (report/); the MLflow store is shared by
the sweeps of a work dir (WORK_DIR/mlflow.db) unless --tracking-uri / $MLFLOW_TRACKING_URI names one.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

from dfsearch import config, estimate, preflight, space, sweeps
from dfsearch.cli import guarded
from dfsearch.errors import ConfigError, DfsearchError


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dfsearch.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("space", help="search-space YAML (format: search_spaces/README.md)")
    p.add_argument("--resume", action="store_true", help="continue the sweep in WORK_DIR/NAME: finished trials are kept, unfinished ones continue from their last checkpoint, errored ones are retried")
    p.add_argument("--dry-run", action="store_true", help="print the expanded trial table, the resources each trial asks for and a GPU-hour estimate, then exit (Ray is not started)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a fixed key of the space (repeatable; validated like the YAML): a trial key such as train.epochs=5, "
                        "or search.*/resources.*, e.g. resources.gpus_per_worker=0.5")
    p.add_argument("--smoke", action="store_true",
                   help="the same grid, cells and tags on synthetic data with a narrow model at a small clip size on CPU (sweep NAME-smoke); "
                        "minutes on a laptop, numbers labelled SYNTHETIC")
    p.add_argument("--overhead", default=None, metavar="SOURCE",
                   help="--dry-run: whose measured sweep overhead the estimate adds (dfsearch/overhead.yaml): a machine name there, "
                        "a file written by `python -m dfsearch.bench sweep --overhead-out FILE`, or FILE#NAME (default: the shipped one for the space's device)")
    p.add_argument("--rerun", action="store_true", help="run every trial, even those whose fingerprint already has a FINISHED, tested run in the store")
    p.add_argument("--address", default=None, help="Ray cluster to join: 'auto' (the cluster this machine is part of), HOST:PORT, or 'local' (default: start a local cluster)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///WORK_DIR/mlflow.db)")
    p.add_argument("--experiment", default=None, help="MLflow experiment name (default: the sweep name)")
    p.add_argument("--work-dir", default=os.environ.get("DFSEARCH_WORK_DIR", "runs"), help="where sweep folders live (default: $DFSEARCH_WORK_DIR or ./runs)")
    p.add_argument("--storage", default=os.environ.get("DFSEARCH_STORAGE"), metavar="URI",
                   help="where Tune state and Train checkpoints go, under URI/NAME: a folder every node mounts, or s3://, gs://, abfs:// "
                        "(default: $DFSEARCH_STORAGE, else WORK_DIR/NAME; a cluster of several nodes must share it)")
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


def dry_run(spec: space.SweepSpec, overhead_source: str | None = None) -> None:
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
    est = sweeps.estimate(spec, overhead_source)
    if est is not None:
        unit = "GPU-h" if spec.resources.gpus_per_worker else "h on CPU"
        print(est.describe(unit))
        synthetic = spec.fixed.get("data.root") == "synthetic"
        print(f"  one trial per {'GPU' if spec.resources.gpus_per_worker else 'machine'} at a time; compute: FLOPs x clips at each family's "
              f"training rate on {est.machine.name} where measured, else one H200's (dfsearch/estimate.py); "
              + ("the synthetic set's sizes" if synthetic else "FF++ c40 splits 720/140/140, 500 frames a video"))


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


def load_spec(args) -> space.SweepSpec:
    """The space as this command runs it: the YAML, then --smoke, then --set (so --set can change a smoke run too)."""
    try:
        spec = space.load(args.space)
    except ConfigError as exc:
        if "${FFPP_ROOT}" not in str(exc):
            raise
        if not args.smoke:
            raise ConfigError(
                f"{args.space}: $FFPP_ROOT is not set; point it at a FaceForensics++ tree prepared with `python -m dfsearch.prepare ROOT` "
                f"(FFPP_ROOT=/data/ffpp python -m dfsearch.run {args.space}), or add --smoke to run the same grid on synthetic data on this CPU"
            ) from None
        os.environ["FFPP_ROOT"] = "synthetic"  # --smoke replaces data.root anyway
        spec = space.load(args.space)
    if args.smoke:
        spec = sweeps.smoke(spec)
    if args.name:
        spec.name = args.name
    return sweeps.apply_sets(spec, args.set)


def resume_command(args) -> str:
    parts = ["python -m dfsearch.run", args.space, "--resume"]
    parts += ["--smoke"] if args.smoke else []
    parts += [f"--set {item}" for item in args.set]
    parts += [f"--name {args.name}"] if args.name else []
    parts += [f"--work-dir {args.work_dir}"] if args.work_dir != "runs" else []
    return " ".join(parts)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        spec = load_spec(args)
        if args.dry_run:
            dry_run(spec, args.overhead)
            return 0
        return run(spec, args)

    return guarded(body, debug=args.debug, interrupted=f"continue with: {resume_command(args)}")


def run(spec: space.SweepSpec, args) -> int:
    # Ray, torch and MLflow are imported only here, so --help, --dry-run and config errors stay instant.
    from dfsearch import data as dfdata
    from dfsearch import storage
    from dfsearch.tracking import liveness
    from dfsearch.tracking.store import check_tracking, tested_fingerprints
    from dfsearch.tune import cluster, shared_cells, tuner
    from dfsearch.tune.progress import ProgressPrinter

    paths = tuner.SweepPaths(Path(args.work_dir) / spec.name, storage=storage.join(args.storage, spec.name) if args.storage else None)
    if args.resume:
        record = tuner.load_record(paths)
        paths = tuner.SweepPaths(paths.root, storage=record.get("storage"))  # where it started, whatever --storage says now
        tracking_uri, experiment = record["tracking_uri"], record["experiment"]
        if record.get("set", []) != args.set or record.get("smoke", False) != args.smoke:
            started = " ".join(["--smoke"] * record.get("smoke", False) + [f"--set {i}" for i in record.get("set", [])]) or "no --set/--smoke"
            raise DfsearchError(f"sweep '{spec.name}' was started with {started}; resume it with the same options")
        # The trials left out when it started stay out (Tune restores the sweep it saved, trial for trial).
        spec = sweeps.replan(spec, record.get("skipped", []))
    else:
        if storage.exists(paths.tune):
            return existing_sweep(spec, args, paths)
        tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri()
        experiment = args.experiment or spec.name

    cluster.check_address(args.address)
    own_store = tracking_uri == paths.default_tracking_uri()
    if not own_store:  # a server (or a store the user named) must answer before anything starts
        check_tracking(tracking_uri, experiment)
    if args.resume:
        sent = tuner.send_unsent_events(paths, spec, tracking_uri, experiment, record.get("tags", {}))
        if sent:
            print(f"sent {sent} MLflow event(s) the interrupted run had recorded but not sent")
        logged, unfinished = sweep_outcome(spec, record)
        # Nothing to continue (MLflow has it finished and Tune's saved state agrees, so no trial errored before it
        # logged a run): say so without starting Ray, whose start-up on a cluster costs minutes.
        if unfinished is None and set(tuner.trial_states(paths)["status"]) <= {"TERMINATED"}:
            print(f"nothing to resume: sweep '{spec.name}' has finished ({paths.root}); its {len(logged)} trial(s):")
            print_finished(spec, logged, tracking_uri, experiment, paths)
            return 0
    skipped: list[str] = []
    if not args.resume:
        plan = sweeps.plan(spec, {} if args.rerun else tested_fingerprints(tracking_uri), rerun=args.rerun)
        if plan.duplicates:
            print(f"{plan.duplicates} trial(s) have the same configuration as another trial of this sweep"
                  + (" (--smoke trains without pretrained weights)" if args.smoke else "") + "; each runs once")
        if plan.skipped:
            saved = (f"saved ~{plan.saved_gpu_hours:.1f} GPU-hours (estimate: {estimate.ASSUMPTION})" if plan.saved_gpu_hours
                     else "saved their compute (synthetic data: no GPU-hour estimate)")
            print(f"skipping {len(plan.skipped)} of {plan.total} trial(s): their fingerprint already has a FINISHED, tested run in {tracking_uri} "
                  f"(--rerun runs them again); {saved}")
        spec, skipped = plan.spec, plan.skipped
        if plan.remaining == 0:
            print(f"nothing to run: every trial of {spec.source} has finished")
            publish_report(spec, tracking_uri, experiment, paths.root / "report")
            return 0
    # Every check that does not need the data comes before it: building or face-tracking data takes minutes.
    preflight.check(spec)  # weights files, real datasets and their test sets: before Ray starts (seconds)
    bound = cluster.local_upper_bound(args.num_cpus) if args.address in (None, "", "local") else None
    if bound is not None:  # a local cluster that certainly cannot run a trial: refused before Ray starts
        cluster.check_fits(spec.resources.per_trial(), bound, where="a local cluster on this machine would have")
    resources = cluster.connect(args.address, num_cpus=args.num_cpus, log_to_driver=args.debug)
    beat = None  # this sweep's heartbeat on its MLflow parent run, while it runs
    try:
        cluster.check_fits(spec.resources.per_trial(), resources)
        cluster.check_shared(paths.storage)  # several nodes: each must see the checkpoints (refused here, before any trial)
        infos = []
        for data_cfg in data_configs(spec):
            print(f"data: {data_cfg.root} ({data_cfg.compression}) ...", flush=True)
            infos.append(dfdata.ensure_prepared(data_cfg, progress=True))
        fingerprint = ",".join(sorted({i.fingerprint for i in infos}))
        synthetic = any(i.synthetic for i in infos)
        if own_store:  # created in the sweep folder only once every other check has passed
            check_tracking(tracking_uri, experiment)
        started = time.monotonic()
        if not args.resume:  # cells another live sweep of the store is running are left to it (dfsearch/tracking/liveness.py)
            tags = tuner.base_tags(spec, fingerprint, synthetic)
            shared = shared_cells.claim_cells(spec, tracking_uri, shared_cells.parent_maker(tracking_uri, experiment, tags, str(paths.train)),
                                              rerun=args.rerun)
            for other, n in sorted(shared.by_sweep().items()):
                print(f"leaving {n} trial(s) to sweep '{other}': running in sweep '{other}' in {tracking_uri} (live); "
                      "its results join the report when it finishes")
            spec, skipped = shared.spec, skipped + sorted(shared.left)
            if shared.parent_run_id:
                beat = liveness.Heartbeat(tracking_uri, shared.parent_run_id).start()
            if shared.remaining == 0:
                if shared.parent_run_id:
                    shared_cells.end_unused_parent(tracking_uri, shared.parent_run_id)
                print(f"nothing to run: every trial of {spec.source} has finished or is running in another sweep")
                return 0
        else:
            beat = shared_cells.heartbeat(tracking_uri, experiment, spec.name)
        if args.resume:
            for line in tuner.repair_cut_short_snapshots(paths):
                print(line)
            finished = {tid: run for tid, run in logged.items() if run["finished"]}
            print_resume_plan(spec.name, paths, tuner.trial_states(paths, also=logged), finished)
            tuner_ = tuner.restore_tuner(spec, paths, finished)
        else:
            paths.root.mkdir(parents=True, exist_ok=True)
            tuner.save_record(paths, spec, tracking_uri, experiment, set=args.set, smoke=args.smoke, skipped=skipped, tags=tags)
            print(f"sweep '{spec.name}': {spec.trial_count()} trial(s), {spec.resources.per_trial()['CPU']:g} CPU / "
                  f"{spec.resources.per_trial()['GPU']:g} GPU each; folder {paths.root}")
            progress = ProgressPrinter(spec, spec.trial_count(), tuner.max_epochs(spec))
            tuner_ = tuner.build_tuner(spec, paths, tracking_uri, experiment, tags, [progress])
        results = tuner_.fit()
        unfinished = [r.trial_id for r in tuner.trial_states(paths).itertuples() if r.status not in ("TERMINATED", "ERROR")]
    finally:
        if beat is not None:
            beat.stop()
        cluster.disconnect()

    table = tuner.summary(results, spec)
    print(f"\nsweep '{spec.name}' finished in {time.monotonic() - started:.0f} s" + ("  [SYNTHETIC DATA: plumbing check, not a result]" if synthetic else ""))
    print_table(table.to_dict("records"), list(table.columns))
    from dfsearch.train.loop import incomplete_test  # honest test sets (issue 9): say which trials tested fewer videos

    for result in results:
        note = incomplete_test(result.metrics or {})
        if note:
            print(f"warning: trial {(result.metrics or {}).get('trial_id', '?')}: {note} (missing on disk, no face found, "
                  "or eval.max_videos); its run is tagged dfsearch.test_complete=false", file=sys.stderr)
    publish_report(spec, tracking_uri, experiment, paths.root / "report")
    print(f"\nbrowse it:  mlflow ui --backend-store-uri {tracking_uri}")
    errors = int((table["status"] == "error").sum()) if len(table) else 0
    if unfinished:
        print(f"{len(unfinished)} trial(s) did not finish (interrupted); continue with: {resume_command(args)}", file=sys.stderr)
        return 130
    if errors:
        print(f"{errors} trial(s) failed; fix the cause and run again with --resume to retry them", file=sys.stderr)
        return 1
    return 0


def sweep_outcome(spec: space.SweepSpec, record: dict) -> tuple[dict[str, dict], str | None]:
    """The sweep's logged trials, and why it has not finished (None: its parent run ended and no trial run FAILED;
    MLflow decides).  Send the events its outbox recorded first (``tuner.send_unsent_events``)."""
    from dfsearch.tracking.store import logged_trials, sweep_status

    uri, experiment = record["tracking_uri"], record["experiment"]
    logged = logged_trials(uri, experiment, spec.name)
    failed = [tid for tid, run in logged.items() if run["status"] == "FAILED"]
    if sweep_status(uri, experiment, spec.name) != "FINISHED":
        return logged, "it did not finish (interrupted)"
    return logged, f"{len(failed)} of its trial(s) failed" if failed else None


def existing_sweep(spec: space.SweepSpec, args, paths) -> int:
    """The same command again, for a sweep folder that exists: a finished sweep answers "nothing to run" with its
    trials and report (exit 0); an interrupted one, or one with failed trials, is pointed to --resume; a space
    that now asks for trials the sweep never ran is refused (run them as another sweep: --name NEW)."""
    from dfsearch.tune import tuner
    from dfsearch.tracking.store import tested_fingerprints

    record = tuner.load_record(paths)
    uri, experiment = record["tracking_uri"], record["experiment"]
    # as it was started (the trials it left out stay out): the recorded events name trials by their case
    tuner.send_unsent_events(paths, sweeps.replan(spec, record.get("skipped", [])), uri, experiment, record.get("tags", {}))
    logged, why = sweep_outcome(spec, record)
    if why is not None:
        raise DfsearchError(f"sweep '{spec.name}' exists in {paths.root} and {why}; continue it with: {resume_command(args)} "
                            "(or start another with --name NEW)")
    if args.rerun:
        raise DfsearchError(f"sweep '{spec.name}' already ran in {paths.root}; --rerun runs its trials again as another sweep: add --name NEW")
    ended = [run for run in logged.values() if run["finished"]]  # tested, or stopped early by ASHA
    if spec.search.algorithm == "grid":
        plan = sweeps.plan(spec, set(tested_fingerprints(uri)) | {run["fingerprint"] for run in ended})
    else:  # sampled trials have no fingerprint before Tune draws them: count them
        plan = sweeps.Plan(spec, spec.trial_count(), max(0, spec.trial_count() - len(ended)), [run["fingerprint"] for run in ended], 0, 0.0)
    if plan.remaining:
        raise DfsearchError(
            f"sweep '{spec.name}' finished, but {spec.source} now asks for {plan.remaining} trial(s) it never ran (the space or the "
            f"--set/--smoke options changed); run them as another sweep with --name NEW: its {len(plan.skipped)} finished trial(s) are skipped")
    print(f"nothing to run: sweep '{spec.name}' has finished ({paths.root}); its {len(logged)} trial(s):")
    print_finished(spec, logged, uri, experiment, paths)
    return 0


def print_finished(spec: space.SweepSpec, logged: dict[str, dict], uri: str, experiment: str, paths) -> None:
    """A finished sweep's trials as a table, then its report and where to browse it."""
    keys = spec.varied_keys()
    rows = [{"trial": tid, **{k: run["params"].get(k) for k in keys}, "test_tcr": run["metrics"].get("test/tcr"),
             "test_auc": run["metrics"].get("test/auc"), "status": run["status"].lower()} for tid, run in sorted(logged.items())]
    print_table(rows, ["trial", *keys, "test_tcr", "test_auc", "status"])
    publish_report(spec, uri, experiment, paths.root / "report")
    print(f"\nbrowse it:  mlflow ui --backend-store-uri {uri}")


def print_resume_plan(name: str, paths, states, finished: dict[str, dict]) -> None:
    """What --resume will do with each trial.  MLflow decides what has finished: Tune's saved state may lag."""
    counts = Counter("TERMINATED" if row.trial_id in finished else row.status for row in states.itertuples())
    print(f"resuming sweep '{name}' from {paths.root}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    for row in states.itertuples():
        after = f"epoch {row.epoch}" if row.epoch else "the start (no checkpoint yet)"
        if row.trial_id in finished:
            action = "kept (finished)" + ("" if row.status == "TERMINATED" else f"; Tune's saved state had it {row.status.lower()}, MLflow has it finished")
        else:
            action = {"ERROR": f"retried from {after}", "UNRECORDED": f"continues after {after} (Tune's saved state did not list it yet)"}.get(
                row.status, f"continues after {after}")
        print(f"  trial {row.trial_id}: {action}")


def publish_report(spec: space.SweepSpec, tracking_uri: str, experiment: str, out: Path) -> None:
    """Print the report of the space's paper table and log it to the sweep's parent run."""
    from dfsearch import report
    from dfsearch.report import hours, publish

    if spec.paper_table not in report.TABLES:
        return
    try:
        tables, runset = report.build(tracking_uri, [spec.paper_table], price=hours.pricer())
        fills = spec.name in {sweep for _, sweep in publish.sweeps_behind(tables, runset)}
        if not fills and any(r.sweep == spec.name for r in runset.runs):  # e.g. smoke.yaml: its trials are no paper cell
            print(f"\nreport: none of this sweep's trials is a cell of Table {spec.paper_table} (dfsearch/experiments/paper.yaml: a cell is exactly the trial its table's space generates); "
                  f"python -m dfsearch.report {spec.paper_table} shows the table")
            return
        files, md = publish.write(tables, runset, out)
        print("\n" + md)
        print(f"report: {', '.join(p.name for p in files)} in {out}; " + publish.log_to_parent(tracking_uri, tables, runset, out, spec.name, experiment))
    except DfsearchError as exc:
        print(f"report: not written ({exc})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
