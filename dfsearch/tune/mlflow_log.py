"""MLflow logging for a sweep: one parent run per sweep, one child run per trial, found again after a resume.

Ray's ``MLflowLoggerCallback`` keeps its trial -> run map in memory, so a restored sweep opens a second run
for every resumed trial and leaves the first one RUNNING forever.  Here the map lives in MLflow itself:

* the sweep's parent run carries ``dfsearch.sweep=<name>`` and ``dfsearch.role=sweep``, the space file and
  (at the end) the trial table, and, from ``dfsearch.report``, the report of the sweep's table;
* each trial's run carries ``dfsearch.sweep``, ``dfsearch.trial_id``, ``dfsearch.role=trial`` and
  ``mlflow.parentRunId`` (how MLflow's UI nests runs); a trial that starts again (after a resume or a
  retry) continues the run that has its tags.

What a user sees in the MLflow UI is part of the product: readable run names
(``nonlocal@1,2,3,4 · single:Deepfakes · seed 0``), the Dataset column (an ``mlflow.data`` input naming the
FaceForensics++ root, compression, protocol and fingerprint), Source (the space file), and per run the
resolved trial config as YAML (re-runnable with ``python -m dfsearch.train --config FILE``), the per-video
test scores as CSV and ROC / score-histogram PNGs of the tested epoch.  At the end of a sweep the best trial
(on validation) gets an MLflow model (:func:`log_best_models`), which fills the Models column.

Only the sweep driver talks to MLflow (this module is never imported by what Ray ships to trial actors).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import numbers
import tempfile
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from dfsearch import config, fingerprint
from dfsearch import ray_internals as RI
from dfsearch import storage
from dfsearch.errors import DfsearchError
from dfsearch.space import SweepSpec
from dfsearch.tracking import names as N
from dfsearch.tracking.best_model import log_best_models, pick_best
from dfsearch.tracking.outbox import BackgroundWriter, Outbox
from dfsearch.tracking.run_view import config_yaml, dataset_input, git_commit_full, run_name, score_plots, scores_csv
from dfsearch.tracking.store import experiment_id, find_parent, find_run, trial_runs
from dfsearch.train.checkpoint import checkpointed_history
from dfsearch.tune.driver import KEPT_KEY

log = logging.getLogger(__name__)

# What a trial reports that is worth a metric (Tune adds its own bookkeeping keys; those are skipped).
METRIC_PREFIXES = ("train/", "val/", "test/", "best/", "time/", "lr", "epoch")


# Counts, not curves: how many videos an evaluation covered.  Validation's are the same every epoch, so they are
# a tag (dfsearch.val_videos "seen/expected"), not a metric per step; the test's are logged once, at the end, and
# stay metrics (the report reads test/videos, in older stores too).
COUNT_SUFFIXES = ("/videos", "/videos_expected", "/videos_official")


def is_per_step_count(key: str) -> bool:
    return key.endswith(COUNT_SUFFIXES) and not key.startswith("test/")


def as_metrics(result: dict, step: int, timestamp_ms: int) -> list[Metric]:
    return [
        Metric(key, float(value), timestamp_ms, step)
        for key, value in result.items()
        if key.startswith(METRIC_PREFIXES) and not is_per_step_count(key)
        and isinstance(value, numbers.Number) and not isinstance(value, bool) and not math.isnan(value)
    ]


# --------------------------------------------------------------------------------------------- the callback


def result_fields(result: dict) -> dict:
    """What a Tune result event records: its metrics, epoch and time, the test scores and test-set counts."""
    keep = {k: v for k, v in result.items() if k == N.SCORES_KEY or k.startswith(("test/videos", "val/videos"))}
    return {"metrics": {m.key: m.value for m in as_metrics(result, 0, 0)}, "epoch": int(result.get("epoch", 0)),
            "timestamp_ms": int(result.get("timestamp", 0) * 1000), **keep}


class MLflowTrialLogger(Callback):
    """Tune callback: each hook records an event and returns (milliseconds); a background writer turns the
    events into MLflow calls, in order, retrying while the tracking server is away
    (:mod:`dfsearch.tracking.outbox`).  Every method below the hooks runs on that writer's thread."""

    def __init__(self, tracking_uri: str, experiment: str, spec: SweepSpec, tags: dict[str, str], train_storage: str,
                 log_best: bool = True, outbox_dir: str | None = None, catch_up: bool = True):
        self.tracking_uri = tracking_uri
        self.train_storage = train_storage
        self.experiment = experiment
        self.spec = spec
        self.tags = tags
        self.log_best = log_best
        self.outbox_dir = outbox_dir  # the sweep folder; None: a temporary one (events are then not kept across a crash)
        # Log checkpointed epochs MLflow lacks when a trial's run is continued.  Off while a crashed run's recorded
        # events are replayed: they are the same epochs, and logged twice they would be two points per step.
        self.catch_up_epochs = catch_up
        self._reset()

    def _reset(self) -> None:
        self._runs: dict[str, str] = {}  # trial id -> run id (a cache of what MLflow already knows)
        self._kept: set[str] = set()  # trial ids whose run had finished before this process saw it (a resume): never touched
        self._counted: set[str] = set()  # trial ids whose validation counts this process has tagged
        self._parent: str | None = None
        self._data: dict[str, Any] = {}  # repr(DataConfig) -> DatasetInfo (read once per data setting)
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._writer: BackgroundWriter | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
            self._experiment_id = experiment_id(self._client, self.experiment)
        return self._client

    def __getstate__(self):  # Tune pickles callbacks into its experiment state; clients, caches and the writer are rebuilt
        state = dict(self.__dict__)
        for key in ("_runs", "_kept", "_counted", "_parent", "_data", "_client", "_experiment_id", "_writer"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__.setdefault("outbox_dir", None)
        self.__dict__.setdefault("catch_up_epochs", True)
        self._reset()

    # ------------------------------------------------------------------------------ Tune's hooks: record only

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        folder = self.outbox_dir or tempfile.mkdtemp(prefix="dfsearch-outbox-")
        self._writer = BackgroundWriter(Outbox(folder), self.handle).start()  # sends what a crashed run left first
        self._writer.submit({"kind": "setup"})

    def record(self, kind: str, trial=None, **fields) -> None:
        if trial is not None:
            fields |= {"trial_id": RI.trial_id(trial), "config": RI.trial_config(trial)}
        self._writer.submit({"kind": kind, **fields})

    def on_trial_start(self, iteration: int, trials: list, trial, **info):
        self.record("start", trial)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info):
        if result.get(KEPT_KEY):  # a trial finished before the resume, handed back to Tune: nothing to log
            return
        self.record("result", trial, **result_fields(result))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info):
        # A trial the scheduler (ASHA) stopped ends without its test evaluation: say so on the run.
        self.record("complete", trial, tested="test/tcr" in RI.trial_last_result(trial))

    def on_trial_error(self, iteration: int, trials: list, trial, **info):
        self.record("error", trial, error_file=RI.trial_error_file(trial))

    def on_experiment_end(self, trials: list, **info):
        unfinished = [RI.trial_id(t) for t in trials if RI.trial_status(t) not in RI.FINISHED_STATUSES]
        self.record("end", unfinished=unfinished)
        self._writer.close()  # `run` returns once MLflow has every event of the sweep
        self._writer.outbox.clear()

    # -------------------------------------------------------------------------- the writer thread: MLflow calls

    def handle(self, event: dict) -> None:
        kind = event["kind"]
        if kind == "setup":
            return self.on_setup()
        if kind == "end":
            return self.on_end(event["unfinished"])
        tid, config_ = event["trial_id"], event["config"]
        run_id = self.run_id(tid, config_)
        if tid in self._kept:
            return
        if kind == "start":
            self.client.update_run(run_id, status="RUNNING")
        elif kind == "result":
            self.log_result(run_id, tid, event)
        elif kind == "complete":
            self.client.set_tag(run_id, N.OUTCOME_TAG, N.TESTED if event["tested"] else N.STOPPED_EARLY)
            self.client.set_terminated(run_id, status="FINISHED")
        elif kind == "error":
            self.client.log_batch(run_id, tags=[RunTag(N.ERROR_FILE_TAG, event["error_file"])])
            self.client.set_terminated(run_id, status="FAILED")

    def on_setup(self) -> None:
        self.parent_id()
        # Import the plotting stack now, not when the first test scores arrive (seconds on a cold start).
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        import sklearn.metrics  # noqa: F401
        warning = RI.check_ray_version()
        if warning:
            log.warning(warning)

    # ---------------------------------------------------------------------------------------- parent run

    def source_tags(self) -> dict[str, str]:
        tags = {"mlflow.source.name": str(Path(self.spec.source).resolve()) if self.spec.source else "", "mlflow.source.type": "LOCAL"}
        commit = git_commit_full()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        return tags

    def parent_id(self) -> str:
        if self._parent is not None:
            return self._parent
        client = self.client
        found = find_parent(client, self._experiment_id, self.spec.name)
        if found is not None:
            self._parent = found.info.run_id
            client.update_run(self._parent, status="RUNNING")
            return self._parent
        note = (self.spec.description + "\n\n" if self.spec.description else "") + (
            f"Sweep `{self.spec.name}` from `{self.spec.source}`: {self.spec.trial_count()} trial(s) as child runs; "
            f"search metric {self.spec.search.metric} ({self.spec.search.mode}). Artifacts: the space file, `trials.csv` "
            "(at the end), `report/` (from `python -m dfsearch.report`)."
        )
        tags = {
            **self.tags,
            **self.source_tags(),
            N.SWEEP_TAG: self.spec.name,
            N.ROLE_TAG: N.SWEEP_ROLE,
            N.TRAIN_STORAGE_TAG: self.train_storage,
            N.SEARCH_METRIC_TAG: self.spec.search.metric,
            N.SEARCH_MODE_TAG: self.spec.search.mode,
            "mlflow.note.content": note,
        }
        run = client.create_run(self._experiment_id, tags=tags, run_name=f"sweep {self.spec.name}")
        self._parent = run.info.run_id
        params = [Param(f"fixed.{k}", str(v)[:6000]) for k, v in sorted(self.spec.fixed.items())]
        params += [Param(f"searched.{k}", d.describe()[:6000]) for k, d in sorted(self.spec.searched.items())]
        params += [Param("trials", str(self.spec.trial_count()))]
        for i in range(0, len(params), 100):
            client.log_batch(self._parent, params=params[i : i + 100])
        if self.spec.source and Path(self.spec.source).is_file():
            client.log_artifact(self._parent, self.spec.source, "space")
        return self._parent

    # ----------------------------------------------------------------------------------------- trial runs

    def data_info(self, cfg):
        key = repr(cfg.data)
        if key not in self._data:
            from dfsearch import data as dfdata

            try:
                self._data[key] = dfdata.load_prepared(cfg.data)[1]
            except DfsearchError as exc:
                log.warning("cannot read the data info of %s for the MLflow dataset input: %s", cfg.data.root, exc)
                self._data[key] = None
        return self._data[key]

    def run_id(self, tid: str, trial_config: dict) -> str:
        if tid in self._runs:
            return self._runs[tid]
        client = self.client
        existing = find_run(client, self._experiment_id, self.spec.name, tid)
        if existing is not None and N.is_finished(existing):
            # Finished before a crash that Tune's saved state did not see: the resumed trial only hands its
            # logged result back to Tune (dfsearch.tune.driver), and nothing of it is logged again.
            run_id = existing.info.run_id
            self._kept.add(tid)
            log.info("trial %s: MLflow run %s finished before the resume; kept as it is", tid, run_id)
        elif existing is not None:
            run_id = existing.info.run_id
            log.info("trial %s continues MLflow run %s", tid, run_id)
            if self.catch_up_epochs:
                self.catch_up(run_id, tid)
        else:
            run_id = self.create_trial_run(tid, trial_config)
        self._runs[tid] = run_id
        return run_id

    def create_trial_run(self, tid: str, trial_config: dict) -> str:
        client = self.client
        resolved = self.spec.resolve(trial_config)
        cfg = config.from_flat(resolved)
        flat = config.to_flat(cfg)
        info = self.data_info(cfg)
        tags = {
            **self.tags,
            **self.source_tags(),
            **fingerprint.tags(resolved),
            N.SWEEP_TAG: self.spec.name,
            N.TRIAL_TAG: tid,
            N.ROLE_TAG: N.TRIAL_ROLE,
            N.PARENT_TAG: self.parent_id(),
            N.TRAIN_DIR_TAG: storage.join(self.train_storage, f"train-{tid}"),
            N.PROTOCOL_TAG: cfg.protocol.name,
            N.MODEL_NAME_TAG: cfg.model.name,
        }
        if info is not None:
            tags[N.FACE_DETECTOR_TAG] = info.detector or "unknown"
            tags[N.FAILED_VIDEOS_TAG] = str(len(info.failed))
        if self.spec.paper_table:
            tags[N.PAPER_TABLE_TAG] = self.spec.paper_table
        if self.spec.paper_cell:
            tags[N.PAPER_CELL_TAG] = self.spec.cell_for(flat)
        run = client.create_run(self._experiment_id, tags=tags, run_name=run_name(flat, self.spec.varied_keys()))
        run_id = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in sorted(flat.items())]
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i : i + 100])
        data_fp = info.fingerprint if info is not None else self.tags.get(N.DATASET_FINGERPRINT_TAG, "")
        client.log_inputs(run_id, datasets=[dataset_input(flat, data_fp, info.n_videos if info is not None else None)])
        header = f"dfsearch trial {tid} of sweep {self.spec.name} ({self.spec.source})\nre-run it alone: python -m dfsearch.train --config trial.yaml"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(N.CONFIG_ARTIFACT).name
            path.write_text(config_yaml(flat, header))
            client.log_artifact(run_id, str(path), str(Path(N.CONFIG_ARTIFACT).parent))
        return run_id

    def catch_up(self, run_id: str, trial_id: str) -> None:
        """Log the epochs a trial checkpointed but whose results never reached us (the sweep driver died
        between the worker's report and our logging); the checkpoint is the record of what happened."""
        history = checkpointed_history(storage.join(self.train_storage, f"train-{trial_id}"))
        logged = {m.step for m in self.client.get_metric_history(run_id, "val/tcr")}
        missing = [row for row in history if int(row["epoch"]) not in logged]
        metrics = [m for row in missing for m in as_metrics(row, int(row["epoch"]), 0)]
        for i in range(0, len(metrics), 500):
            self.client.log_batch(run_id, metrics=metrics[i : i + 500])
        if missing:
            log.info("trial %s: logged %d epoch(s) recovered from its checkpoint", trial_id, len(missing))

    def log_result(self, run_id: str, tid: str, event: dict) -> None:
        metrics = [Metric(k, v, event["timestamp_ms"], event["epoch"]) for k, v in event["metrics"].items()]
        tags = []
        if "val/videos" in event and tid not in self._counted:  # once per trial (and process), with the first epoch's metrics
            expected = event.get("val/videos_expected")
            tags = [RunTag(N.VAL_VIDEOS_TAG, f"{int(event['val/videos'])}" + (f"/{int(expected)}" if expected is not None else ""))]
            self._counted.add(tid)
        if metrics or tags:
            self.client.log_batch(run_id, metrics=metrics, tags=tags)
        rows = event.get(N.SCORES_KEY)
        if isinstance(rows, str):
            rows = json.loads(rows)
        if rows:
            run = self.client.get_run(run_id)
            synthetic = " · SYNTHETIC" if self.tags.get(N.SYNTHETIC_TAG) == "true" else ""
            self.log_test_scores(run_id, rows, (run.info.run_name or tid) + synthetic)
            self.tag_completeness(run_id, event)

    def log_test_scores(self, run_id: str, rows: list, title: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            scores_csv(rows, folder / Path(N.SCORES_ARTIFACT).name)
            files = [folder / Path(N.SCORES_ARTIFACT).name]
            try:
                files += score_plots(rows, folder, title)
            except Exception as exc:  # a plot must never fail a sweep
                log.warning("test-score plots for run %s failed: %s", run_id, exc)
            for f in files:
                self.client.log_artifact(run_id, str(f), "test")

    def tag_completeness(self, run_id: str, result: dict) -> None:
        """``dfsearch.test_complete``: did the trial test every official video of its protocol?"""
        tested = result.get("test/videos")
        expected = result.get("test/videos_official", result.get("test/videos_expected"))
        if tested is None or expected is None:
            return
        complete = int(tested) >= int(expected)
        tags = [RunTag(N.TEST_COMPLETE_TAG, str(complete).lower()), RunTag(N.TEST_VIDEOS_TAG, f"{int(tested)}/{int(expected)}")]
        self.client.log_batch(run_id, tags=tags)

    def on_end(self, unfinished: list[str]) -> None:
        # A trial left unfinished (sweep interrupted) is KILLED until `--resume` continues it.
        for tid in unfinished:
            if tid in self._runs and tid not in self._kept:
                self.client.set_terminated(self._runs[tid], status="KILLED")
        parent = self.parent_id()
        try:
            self.log_trial_table(parent)
        except Exception as exc:  # the table is a convenience; never fail the sweep on it
            log.warning("could not log the trial table to the sweep's MLflow run: %s", exc)
        if self.log_best and not unfinished:
            try:
                from dfsearch.inference.attention import maps_for_run  # torch and the model zoo: only now

                log_best_models(self.tracking_uri, self.experiment, self.spec.name, draw_maps=maps_for_run)
            except Exception as exc:  # the sweep's results stand; `dfsearch.report --log-best` can redo this
                log.warning("best model not logged (%s: %s); retry with: python -m dfsearch.report --log-best", type(exc).__name__, exc)
        try:
            self.log_headline(parent)
        except Exception as exc:  # a convenience for the UI; the trials' runs hold the numbers
            log.warning("could not log the best trial's metrics to the sweep's MLflow run: %s", exc)
        self.client.set_terminated(parent, status="KILLED" if unfinished else "FINISHED")

    def log_headline(self, parent: str) -> None:
        """The sweep's parent run carries its best trial's numbers (chosen on validation, as the search does) and a
        link to it, so the runs list shows each sweep's answer without opening its trials."""
        key = f"best/{self.spec.search.metric}"
        picked = pick_best(trial_runs(self.client, self._experiment_id, self.spec.name), self.spec.search.metric, self.spec.search.mode, per_cell=False)
        if not picked:
            return
        best = picked[0]
        names = (key, "test/tcr", "test/auc", "test/tcr_real", "test/tcr_fake")
        metrics = [Metric(f"best_trial/{k.removeprefix('best/')}", best.data.metrics[k], 0, 0) for k in names if k in best.data.metrics]
        tags = [RunTag(N.BEST_RUN_ID_TAG, best.info.run_id), RunTag(N.BEST_RUN_NAME_TAG, best.info.run_name or ""),
                RunTag(N.BEST_TRIAL_ID_TAG, best.data.tags.get(N.TRIAL_TAG, ""))]
        self.client.log_batch(parent, metrics=metrics, tags=tags)

    def log_trial_table(self, parent: str) -> None:
        runs = trial_runs(self.client, self._experiment_id, self.spec.name)
        keys = self.spec.varied_keys()
        columns = ["trial_id", "run_name", "status", "outcome", *keys, "best/val/tcr", "test/tcr", "test/auc", "run_id"]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "trials.csv"
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(columns)
                for r in sorted(runs, key=lambda r: r.data.tags.get(N.TRIAL_TAG, "")):
                    row = [r.data.tags.get(N.TRIAL_TAG), r.info.run_name, r.info.status, r.data.tags.get(N.OUTCOME_TAG, "")]
                    row += [r.data.params.get(k, "") for k in keys]
                    row += [r.data.metrics.get(k, "") for k in ("best/val/tcr", "test/tcr", "test/auc")]
                    w.writerow(row + [r.info.run_id])
            self.client.log_artifact(parent, str(path))
