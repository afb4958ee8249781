"""MLflow logging for a sweep: one run per trial, found again after a resume.

Ray's ``MLflowLoggerCallback`` keeps its trial -> run map in memory, so a restored sweep opens a second run
for every resumed trial and leaves the first one RUNNING forever.  Here the map lives in MLflow itself: each
run carries the tags ``dfsearch.sweep`` and ``dfsearch.trial_id``, and a trial that starts again (after a
resume or a retry) continues the run that has its tags.  Only the sweep driver talks to MLflow.
"""

from __future__ import annotations

import json
import logging
import os
import math
import numbers
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from dfsearch import config
from dfsearch.errors import DfsearchError
from dfsearch.space import SweepSpec
from dfsearch.train.loop import HISTORY_FILE

log = logging.getLogger(__name__)

SWEEP_TAG = "dfsearch.sweep"
TRIAL_TAG = "dfsearch.trial_id"
# What a trial reports that is worth a metric (Tune adds its own bookkeeping keys; those are skipped).
METRIC_PREFIXES = ("train/", "val/", "test/", "best/", "time/", "lr", "epoch")


def as_metrics(result: dict, step: int, timestamp_ms: int) -> list[Metric]:
    return [
        Metric(key, float(value), timestamp_ms, step)
        for key, value in result.items()
        if key.startswith(METRIC_PREFIXES) and isinstance(value, numbers.Number) and not isinstance(value, bool) and not math.isnan(value)
    ]


def checkpointed_history(train_run: Path) -> list[dict]:
    """The per-epoch metrics of the checkpoint a Train run will resume from (``[]`` when it has none).

    That checkpoint is the one Ray Train's checkpoint manager recorded last (its snapshot file is written
    before any report reaches Tune); a newer checkpoint folder may exist that the manager never registered,
    and the resumed run will redo that epoch, so it must not be logged from here.
    """
    try:
        snapshot = json.loads((train_run / "checkpoint_manager_snapshot.json").read_text())
        latest = snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
        return json.loads((train_run / latest / HISTORY_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("%s: no checkpointed history to recover (%s)", train_run, exc)
        return []


def experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def check_tracking(tracking_uri: str, experiment: str) -> str:
    """Open (or create) the sweep's experiment now, so a wrong URI or a server that is down fails before any
    trial starts, in seconds, with the URI in the message.  Returns the experiment id."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in quick}
    os.environ.update(quick)
    try:
        return experiment_id(MlflowClient(tracking_uri), experiment)
    except Exception as exc:  # MLflow raises many types (connection, SQL, URI); all mean "cannot use it"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DfsearchError(f"cannot use the MLflow tracking store at {tracking_uri}: {first[:300]}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def find_run(client: MlflowClient, experiment_id: str, sweep: str, trial_id: str):
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
        max_results=2,
    )
    if len(runs) > 1:
        log.warning("trial %s has %d MLflow runs; continuing the newest", trial_id, len(runs))
    return runs[0] if runs else None


class MLflowTrialLogger(Callback):
    def __init__(self, tracking_uri: str, experiment: str, spec: SweepSpec, tags: dict[str, str], train_storage: str):
        self.tracking_uri = tracking_uri
        self.train_storage = train_storage
        self.experiment = experiment
        self.spec = spec
        self.tags = tags
        self._runs: dict[str, str] = {}  # trial id -> run id (a cache of what MLflow already knows)
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
            self._experiment_id = experiment_id(self._client, self.experiment)
        return self._client

    def __getstate__(self):  # Tune pickles callbacks into its experiment state; the client is rebuilt
        return {**self.__dict__, "_client": None, "_runs": {}}

    def run_id(self, trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        client = self.client
        existing = find_run(client, self._experiment_id, self.spec.name, trial.trial_id)
        if existing is not None:
            run_id = existing.info.run_id
            log.info("trial %s continues MLflow run %s", trial.trial_id, run_id)
            self.catch_up(run_id, trial.trial_id)
        else:
            resolved = self.spec.resolve(trial.config)
            flat = {**config.default_flat(), **resolved}
            cfg = config.from_flat(resolved)
            tags = {
                **self.tags,
                SWEEP_TAG: self.spec.name,
                TRIAL_TAG: trial.trial_id,
                "dfsearch.protocol": cfg.protocol.name,
                "dfsearch.model": cfg.model.name,
                "mlflow.runName": f"{self.spec.name}-{trial.trial_id}",
            }
            if self.spec.paper_table:
                tags["dfsearch.paper_table"] = self.spec.paper_table
            if self.spec.paper_cell:
                tags["dfsearch.paper_cell"] = self.spec.cell_for(flat)
            run = client.create_run(self._experiment_id, tags=tags)
            run_id = run.info.run_id
            params = [Param(k, str(v)) for k, v in sorted(flat.items())]
            for i in range(0, len(params), 100):
                client.log_batch(run_id, params=params[i : i + 100])
        self._runs[trial.trial_id] = run_id
        return run_id

    def catch_up(self, run_id: str, trial_id: str) -> None:
        """Log the epochs a trial checkpointed but whose results never reached us (the sweep driver died
        between the worker's report and our logging); the checkpoint is the record of what happened."""
        history = checkpointed_history(Path(self.train_storage) / f"train-{trial_id}")
        logged = {m.step for m in self.client.get_metric_history(run_id, "val/tcr")}
        missing = [row for row in history if int(row["epoch"]) not in logged]
        metrics = [m for row in missing for m in as_metrics(row, int(row["epoch"]), 0)]
        for i in range(0, len(metrics), 500):
            self.client.log_batch(run_id, metrics=metrics[i : i + 500])
        if missing:
            log.info("trial %s: logged %d epoch(s) recovered from its checkpoint", trial_id, len(missing))

    def on_trial_start(self, iteration: int, trials: list, trial, **info):
        run_id = self.run_id(trial)
        self.client.update_run(run_id, status="RUNNING")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info):
        metrics = as_metrics(result, int(result.get("epoch", 0)), int(result.get("timestamp", 0) * 1000))
        if metrics:
            self.client.log_batch(self.run_id(trial), metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info):
        run_id = self.run_id(trial)
        # A trial the scheduler (ASHA) stopped ends without its test evaluation: say so on the run.
        tested = "test/tcr" in (trial.last_result or {})
        self.client.set_tag(run_id, "dfsearch.outcome", "tested" if tested else "stopped_early")
        self.client.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info):
        run_id = self.run_id(trial)
        error = getattr(trial, "error_file", None)
        self.client.log_batch(run_id, tags=[RunTag("dfsearch.error_file", str(error or ""))])
        self.client.set_terminated(run_id, status="FAILED")

    def on_experiment_end(self, trials: list, **info):
        # A trial left unfinished (sweep interrupted) is KILLED until `--resume` continues it.
        for trial in trials:
            if trial.status not in ("TERMINATED", "ERROR") and trial.trial_id in self._runs:
                self.client.set_terminated(self._runs[trial.trial_id], status="KILLED")
