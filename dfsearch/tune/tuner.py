"""Build, run and resume a sweep's ``tune.Tuner``; read its results back as a summary table."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.schedulers import ASHAScheduler

import dfsearch
from dfsearch import config
from dfsearch.errors import DfsearchError
from dfsearch.space import CASE_KEY, Dist, SweepSpec
from dfsearch import storage
from dfsearch.tracking import names as N
from dfsearch.tracking import store
from dfsearch.tune.driver import DriverSettings, trainable
from dfsearch.tune.mlflow_log import MLflowTrialLogger

log = logging.getLogger(__name__)

TUNE_NAME = "tune"
SWEEP_FILE = "sweep.json"


@dataclass
class SweepPaths:
    """Everything a sweep writes lives in one folder: ``<work_dir>/<name>/``."""

    root: Path
    storage: str | None = None  # where Tune state and Train checkpoints go (--storage): default root

    def __post_init__(self):
        # Absolute: Ray reads a relative storage path as a URI without a scheme and refuses it.
        self.root = Path(self.root).expanduser().resolve()
        self.storage = storage.resolve(self.storage, self.root)

    @property
    def tune(self) -> str:  # a folder or a URI (dfsearch.tune.storage reads both)
        return storage.join(self.storage, TUNE_NAME)

    @property
    def train(self) -> str:
        return storage.join(self.storage, "train")

    @property
    def record(self) -> Path:
        return self.root / SWEEP_FILE

    def default_tracking_uri(self) -> str:
        return store.work_dir_store(self.root.parent)


def to_tune(dist: Dist):
    if dist.kind == "grid":
        return tune.grid_search(list(dist.values))
    if dist.kind == "choice":
        return tune.choice(list(dist.values))
    if dist.kind == "uniform":
        return tune.uniform(*dist.values)
    if dist.kind == "loguniform":
        return tune.loguniform(*dist.values)
    return tune.randint(*dist.values)


def param_space(spec: SweepSpec) -> dict[str, Any]:
    space = {**spec.fixed, **{key: to_tune(dist) for key, dist in spec.searched.items()}}
    if spec.cases:
        space[CASE_KEY] = tune.grid_search(list(range(len(spec.cases))))
    return space


def max_epochs(spec: SweepSpec) -> int:
    values = [spec.fixed.get("train.epochs", config.TrainConfig.epochs)]
    if "train.epochs" in spec.searched:
        values += spec.searched["train.epochs"].probe_values()
    values += [case["train.epochs"] for case in spec.cases if "train.epochs" in case]
    return int(max(values))


def tune_metric(spec: SweepSpec) -> str:
    """What Tune optimises: the trial's best-so-far validation metric, which every report carries (the final
    test report included), rather than the last epoch's value."""
    return f"best/{spec.search.metric}"


def make_search(spec: SweepSpec):
    s = spec.search
    searcher = None
    if s.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(metric=tune_metric(spec), mode=s.mode)
    scheduler = None
    if s.scheduler == "asha":
        # time_attr is our own epoch counter: Tune's training_iteration restarts when a trial resumes.
        # stop_last_trials=False: a trial that reaches the last epoch must still run its test evaluation.
        scheduler = ASHAScheduler(
            time_attr="epoch", max_t=max_epochs(spec), grace_period=s.grace_period, reduction_factor=s.reduction_factor, stop_last_trials=False
        )
    return searcher, scheduler


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(dfsearch.__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def base_tags(spec: SweepSpec, dataset_fingerprint: str, synthetic: bool) -> dict[str, str]:
    per = spec.resources.per_trial()
    return {
        N.GPUS_PER_TRIAL_TAG: f"{per['GPU']:g}",  # the report's GPU-/CPU-hours: run time x these
        N.CPUS_PER_TRIAL_TAG: f"{per['CPU']:g}",
        **spec.tags,
        N.VERSION_TAG: dfsearch.__version__,
        N.GIT_COMMIT_TAG: git_commit(),
        N.DATASET_FINGERPRINT_TAG: dataset_fingerprint,
        N.SYNTHETIC_TAG: str(synthetic).lower(),
        N.SPACE_FILE_TAG: spec.source,
    }


def build_tuner(spec: SweepSpec, paths: SweepPaths, tracking_uri: str, experiment: str, tags: dict[str, str], callbacks: list) -> tune.Tuner:
    """reuse_actors: a finished trial's actor runs the next trial, which saves starting one (on 2 cores the next
    trial reaches its train function in 8.2 s instead of 10.1 s: ``python -m dfsearch.bench ray --trials 4
    --timeline FILE``).  Not with a scheduler: a trial ASHA stops is still inside its Ray Train run, Tune cannot
    reset its actor, and then fails the trial it meant to reuse it for (tried)."""
    searcher, scheduler = make_search(spec)
    settings = DriverSettings(train_storage=str(paths.train), spec=spec)
    return tune.Tuner(
        trainable(settings),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=tune_metric(spec),
            mode=spec.search.mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=spec.tune_num_samples(),
            max_concurrent_trials=spec.search.max_concurrent or None,
            reuse_actors=scheduler is None,
        ),
        run_config=tune.RunConfig(
            name=TUNE_NAME,
            storage_path=paths.storage,
            failure_config=tune.FailureConfig(max_failures=1),
            callbacks=[MLflowTrialLogger(tracking_uri, experiment, spec, tags, settings.train_storage, outbox_dir=str(paths.root)), *callbacks],
            verbose=0,
        ),
    )


def restore_tuner(spec: SweepSpec, paths: SweepPaths, finished: dict[str, dict]) -> tune.Tuner:
    """Finished trials stay finished, unfinished ones continue from their checkpoints, errored ones are retried
    (from their checkpoints too).  Callbacks (MLflow, progress) come back from the saved experiment state.
    ``finished``: the trials MLflow has as finished (:func:`mlflow_log.logged_trials`); those Tune's saved state
    lags behind on are not run again, only their logged result is handed back to Tune."""
    if not tune.Tuner.can_restore(str(paths.tune)):
        raise DfsearchError(f"{paths.root}: no sweep to resume here (no Tune state in {paths.tune}); run without --resume to start it")
    settings = DriverSettings(train_storage=str(paths.train), spec=spec, finished=finished)
    return tune.Tuner.restore(str(paths.tune), trainable(settings), resume_unfinished=True, resume_errored=True, param_space=param_space(spec))


def repair_cut_short_snapshots(paths: SweepPaths) -> list[str]:
    """Before a resume: rebuild each Train run's checkpoint snapshot that the interruption cut short (see
    :func:`dfsearch.ray_internals.repair_snapshot`).  One line per trial repaired, for the user."""
    from dfsearch import ray_internals as RI
    from dfsearch.train.checkpoint import whole_history

    lines = []
    for name in storage.subfolders(str(paths.train), "train-"):
        note = RI.repair_snapshot(storage.join(str(paths.train), name), whole_history)
        if note:
            lines.append(f"trial {name.removeprefix('train-')}: {note}")
    return lines


def send_unsent_events(paths: SweepPaths, spec: SweepSpec, tracking_uri: str, experiment: str, tags: dict[str, str]) -> int:
    """Send the MLflow events an interrupted run of this sweep recorded but did not send (its outbox), before
    anything reads MLflow to decide what has finished.  Returns how many there were."""
    from dfsearch.tracking.outbox import BackgroundWriter, Outbox

    outbox = Outbox(paths.root)
    pending = len(outbox.pending())
    if pending:
        logger = MLflowTrialLogger(tracking_uri, experiment, spec, tags, str(paths.train), outbox_dir=str(paths.root), catch_up=False)
        BackgroundWriter(outbox, logger.handle).start().close()
        outbox.clear()
    return pending


def save_record(paths: SweepPaths, spec: SweepSpec, tracking_uri: str, experiment: str, **extra: Any) -> None:
    """``sweep.json``: what --resume needs to rebuild the same sweep (``extra``: the --set items, --smoke and the
    fingerprints of the trials left out because they had finished elsewhere)."""
    record = {"name": spec.name, "space_file": spec.source, "tracking_uri": tracking_uri, "experiment": experiment,
              "storage": paths.storage, "resources": asdict(spec.resources), **extra}
    tmp = paths.record.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, paths.record)


def load_record(paths: SweepPaths) -> dict[str, Any]:
    try:
        return json.loads(paths.record.read_text())
    except (OSError, ValueError) as exc:
        raise DfsearchError(f"{paths.record}: cannot read the sweep record ({exc}); is {paths.root} a dfsearch sweep folder?") from None


def trial_states(paths: SweepPaths, also: dict | None = None) -> pd.DataFrame:
    """The trials Tune recorded for this sweep: id, status, and the epoch of the checkpoint each would
    continue from (read from its Train run, which is what the resumed trial will load).  ``also``: trial ids
    known elsewhere (MLflow) that Tune's saved state may not list yet (status "UNRECORDED")."""
    from ray.tune import ExperimentAnalysis

    from dfsearch.train.checkpoint import checkpointed_history

    # Tune warns "Could not fetch metrics ... result.json" for every trial whose results never reached the
    # storage (all of them after a lost head): the trial list and states are all we read, so keep it quiet.
    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)
    try:
        analysis = ExperimentAnalysis(str(paths.tune))
    finally:
        analysis_log.setLevel(level)
    statuses = {trial.trial_id: trial.status for trial in analysis.trials}
    statuses |= {tid: "UNRECORDED" for tid in sorted(also or {}) if tid not in statuses}
    rows = []
    for tid, status in statuses.items():
        history = checkpointed_history(storage.join(paths.train, f"train-{tid}"))
        rows.append({"trial_id": tid, "status": status, "epoch": int(history[-1]["epoch"]) if history else 0})
    return pd.DataFrame(rows, columns=["trial_id", "status", "epoch"])


def summary(results, spec: SweepSpec) -> pd.DataFrame:
    """One row per trial: id, the varied parameters, its best value of the search metric, test TCR/AUC, wall time,
    and ``best`` marking the trial the search picked (best search metric over finished trials; never test data)."""
    metric, mode = spec.search.metric, spec.search.mode
    column = metric.replace("/", "_")
    rows = []
    for result in results:
        metrics = result.metrics or {}
        cfg = spec.resolve(result.config or {})
        row = {"trial": metrics.get("trial_id", "?")}
        row |= {key: cfg.get(key) for key in spec.varied_keys()}
        row |= {
            column: metrics.get(f"best/{metric}", metrics.get(metric)),
            "val_tcr": metrics.get("best/val/tcr", metrics.get("val/tcr")),
            "test_tcr": metrics.get("test/tcr"),
            "test_auc": metrics.get("test/auc"),
            "epochs": metrics.get("epoch"),
            "wall_s": metrics.get("time_total_s"),
            "status": "error" if result.error else ("done" if "test/tcr" in metrics else "stopped"),
            "best": "",
        }
        rows.append(row)
    table = pd.DataFrame(rows)
    done = table[(table["status"] == "done") & table[column].notna()] if len(table) else table
    if len(done):
        winner = done[column].astype(float).idxmax() if mode == "max" else done[column].astype(float).idxmin()
        table.loc[winner, "best"] = f"<- best {metric}"
    return table
