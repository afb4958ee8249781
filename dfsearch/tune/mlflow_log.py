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
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from dfsearch import config, fingerprint
from dfsearch.errors import DfsearchError
from dfsearch.space import SweepSpec
from dfsearch.train.loop import HISTORY_FILE
from dfsearch.tune import ray_internals as RI

log = logging.getLogger(__name__)

SWEEP_TAG = "dfsearch.sweep"
TRIAL_TAG = "dfsearch.trial_id"
ROLE_TAG = "dfsearch.role"  # "sweep" (the parent) | "trial" (a child)
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag (the UI groups children under it)
TRAIN_DIR_TAG = "dfsearch.train_dir"  # the trial's Ray Train run folder (checkpoints; used by log_best_models)
MODEL_TAG = "dfsearch.logged_model"  # the model URI logged for this trial's weights
SCORES_KEY = "test_scores"  # the final test report's per-video [video_id, label, prob] rows (a JSON string)
CONFIG_ARTIFACT = "config/trial.yaml"
SCORES_ARTIFACT = "test/scores.csv"
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

    That checkpoint is the one Ray Train's checkpoint manager recorded last (its snapshot is written before any
    report reaches Tune); a newer checkpoint folder may exist that the manager never registered, and the
    resumed run will redo that epoch, so it must not be logged from here.  An unreadable snapshot is a
    WARNING (see :func:`dfsearch.tune.ray_internals.read_snapshot`).
    """
    snapshot = RI.read_snapshot(train_run)
    if snapshot is None or snapshot.latest_checkpoint_dir is None:
        return []
    path = Path(train_run) / snapshot.latest_checkpoint_dir / HISTORY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: the checkpoint Ray Train recorded has no readable history (%s); its epochs may be missing from MLflow", path, exc)
        return []


# ------------------------------------------------------------------------------------------------ the store


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts.  For a SQLite store: beside the database, in
    ``<db dir>/<experiment>/mlartifacts`` (the sweep folder when the experiment is named after the sweep),
    not MLflow's default ``./mlruns`` of whatever folder the command ran in.  Servers decide for themselves."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri[len("sqlite:///") :])
    folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment).strip("._") or "experiment"
    base = db.parent if db.parent.name == folder else db.parent / folder  # a store inside the sweep folder itself
    return (base / "mlartifacts").resolve().as_uri()


def experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri, name))


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


def find_parent(client: MlflowClient, experiment_id: str, sweep: str):
    """The sweep's parent run (None before the sweep started)."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{ROLE_TAG}` = 'sweep'", max_results=2
    )
    if len(runs) > 1:
        log.warning("sweep %s has %d parent runs in MLflow; using the newest", sweep, len(runs))
    return runs[0] if runs else None


def parent_run_id(tracking_uri: str, experiment: str, sweep: str) -> str | None:
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    run = find_parent(client, found.experiment_id, sweep) if found else None
    return run.info.run_id if run else None


def trial_runs(client: MlflowClient, experiment_id: str, sweep: str) -> list:
    return client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{ROLE_TAG}` = 'trial'", max_results=10000)


# ------------------------------------------------------------------------------------- what a run shows


def run_name(flat: dict[str, Any], extra_keys: list[str] = ()) -> str:
    """``nonlocal@1,2,3,4 · single:Deepfakes · seed 0`` from a canonical flat config; ``extra_keys`` (searched
    keys the name does not show otherwise, e.g. ``optim.lr``) are appended as ``lr=0.001``."""
    name = flat.get("model.name", "?")
    attention = flat.get("model.attention", "none")
    if name == "resnet3d" and attention not in (None, "none"):
        placement = flat.get("model.placement", "")
        placement = ",".join(map(str, placement)) if isinstance(placement, (list, tuple)) else str(placement).replace(" ", "")
        model = f"{attention}@{placement}"
    elif name == "resnet3d":
        model = f"resnet3d-{flat.get('model.depth', '')}".rstrip("-")
    elif name == "timesformer":
        model = f"timesformer {flat.get('model.space_time', '')}".strip()
    else:
        model = str(name)
    pretrained = flat.get("model.pretrained", "none")
    if pretrained not in (None, "none"):
        model += f" +{Path(str(pretrained)).stem if os.sep in str(pretrained) else pretrained}"
    shown = {"model.name", "model.attention", "model.placement", "model.space_time", "model.pretrained", "protocol.name", "train.seed"}
    parts = [model, str(flat.get("protocol.name", "?")), f"seed {flat.get('train.seed', 0)}"]
    parts += [f"{k.split('.', 1)[1]}={flat[k]}" for k in extra_keys if k not in shown and k in flat]
    return " · ".join(parts)


def nested(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"model.depth": 10}`` -> ``{"model": {"depth": 10}}`` (tuples as lists: YAML's safe dumper)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = list(value) if isinstance(value, tuple) else value
    return out


def config_yaml(flat: dict[str, Any], header: str = "") -> str:
    import yaml

    text = yaml.safe_dump(nested(flat), sort_keys=False, default_flow_style=False)
    return "".join(f"# {line}\n" for line in header.splitlines()) + text


def dataset_input(flat: dict[str, Any], data_fingerprint: str, n_videos: int | None = None) -> DatasetInput:
    """The Dataset column: FaceForensics++ (or the synthetic stand-in) at a root, compression and protocol."""
    root = str(flat.get("data.root", "?"))
    compression = str(flat.get("data.compression", "?"))
    protocol = str(flat.get("protocol.name", "?"))
    label = "synthetic FF++" if root == "synthetic" else "FF++"
    profile = {"root": root, "compression": compression, "protocol": protocol, "fingerprint": data_fingerprint}
    if n_videos is not None:
        profile["prepared_videos"] = n_videos
    entity = Dataset(
        name=f"{label} {compression} {protocol}",
        digest=(data_fingerprint or "unknown")[:36],
        source_type="local",
        source=json.dumps({"uri": root}),
        profile=json.dumps(profile),
    )
    return DatasetInput(entity, tags=[InputTag("mlflow.data.context", "train/val/test")])


def scores_csv(rows: list, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "label", "prob_fake", "predicted"])
        for video_id, label, prob in rows:
            w.writerow([video_id, int(label), f"{float(prob):.8f}", int(float(prob) >= 0.5)])


def read_scores_csv(path: str | Path) -> dict[str, tuple[int, float]]:
    with open(path, newline="") as f:
        return {r["video_id"]: (int(r["label"]), float(r["prob_fake"])) for r in csv.DictReader(f)}


def score_plots(rows: list, folder: Path, title: str) -> list[Path]:
    """ROC curve and fake-probability histograms (real vs fake) of one evaluation, as small PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = np.array([int(r[1]) for r in rows])
    probs = np.array([float(r[2]) for r in rows])
    out = []
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if len(set(labels.tolist())) == 2:
        fpr, tpr, _ = roc_curve(labels, probs)
        ax.plot(fpr, tpr, lw=2, label=f"AUC {roc_auc_score(labels, probs):.3f}")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "one class only: no ROC", ha="center")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate", title=f"ROC · {title}", xlim=(0, 1), ylim=(0, 1.01))
    ax.title.set_fontsize(8)
    fig.tight_layout()
    out.append(folder / "roc.png")
    fig.savefig(out[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    bins = np.linspace(0, 1, 21)
    ax.hist(probs[labels == 0], bins=bins, alpha=0.6, label=f"real ({int((labels == 0).sum())})")
    ax.hist(probs[labels == 1], bins=bins, alpha=0.6, label=f"fake ({int((labels == 1).sum())})")
    ax.axvline(0.5, color="k", ls="--", lw=1)
    ax.set(xlabel="P(fake)", ylabel="videos", title=f"test scores · {title}")
    ax.title.set_fontsize(8)
    ax.legend()
    fig.tight_layout()
    out.append(folder / "score_hist.png")
    fig.savefig(out[-1])
    plt.close(fig)
    return out


def _git_commit_full() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# --------------------------------------------------------------------------------------------- the callback


class MLflowTrialLogger(Callback):
    def __init__(self, tracking_uri: str, experiment: str, spec: SweepSpec, tags: dict[str, str], train_storage: str, log_best: bool = True):
        self.tracking_uri = tracking_uri
        self.train_storage = train_storage
        self.experiment = experiment
        self.spec = spec
        self.tags = tags
        self.log_best = log_best
        self._runs: dict[str, str] = {}  # trial id -> run id (a cache of what MLflow already knows)
        self._parent: str | None = None
        self._data: dict[str, Any] = {}  # repr(DataConfig) -> DatasetInfo (read once per data setting)
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
            self._experiment_id = experiment_id(self._client, self.experiment)
        return self._client

    def __getstate__(self):  # Tune pickles callbacks into its experiment state; the client is rebuilt
        return {**self.__dict__, "_client": None, "_runs": {}, "_parent": None, "_data": {}}

    # ---------------------------------------------------------------------------------------- parent run

    def source_tags(self) -> dict[str, str]:
        tags = {"mlflow.source.name": str(Path(self.spec.source).resolve()) if self.spec.source else "", "mlflow.source.type": "LOCAL"}
        commit = _git_commit_full()
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
            SWEEP_TAG: self.spec.name,
            ROLE_TAG: "sweep",
            "dfsearch.sweep_dir": str(Path(self.train_storage).parent),
            "dfsearch.search_metric": self.spec.search.metric,
            "dfsearch.search_mode": self.spec.search.mode,
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

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.parent_id()
        warning = RI.check_ray_version()
        if warning:
            log.warning(warning)

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

    def run_id(self, trial) -> str:
        tid = RI.trial_id(trial)
        if tid in self._runs:
            return self._runs[tid]
        client = self.client
        existing = find_run(client, self._experiment_id, self.spec.name, tid)
        if existing is not None:
            run_id = existing.info.run_id
            log.info("trial %s continues MLflow run %s", tid, run_id)
            self.catch_up(run_id, tid)
        else:
            run_id = self.create_trial_run(trial)
        self._runs[tid] = run_id
        return run_id

    def create_trial_run(self, trial) -> str:
        client = self.client
        tid = RI.trial_id(trial)
        resolved = self.spec.resolve(RI.trial_config(trial))
        cfg = config.from_flat(resolved)
        flat = config.to_flat(cfg)
        info = self.data_info(cfg)
        tags = {
            **self.tags,
            **self.source_tags(),
            **fingerprint.tags(resolved),
            SWEEP_TAG: self.spec.name,
            TRIAL_TAG: tid,
            ROLE_TAG: "trial",
            PARENT_TAG: self.parent_id(),
            TRAIN_DIR_TAG: str(Path(self.train_storage) / f"train-{tid}"),
            "dfsearch.protocol": cfg.protocol.name,
            "dfsearch.model": cfg.model.name,
        }
        if info is not None:
            tags["dfsearch.face_detector"] = info.detector or "unknown"
            tags["dfsearch.failed_videos"] = str(len(info.failed))
        if self.spec.paper_table:
            tags["dfsearch.paper_table"] = self.spec.paper_table
        if self.spec.paper_cell:
            tags["dfsearch.paper_cell"] = self.spec.cell_for(flat)
        run = client.create_run(self._experiment_id, tags=tags, run_name=run_name(flat, self.spec.varied_keys()))
        run_id = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in sorted(flat.items())]
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i : i + 100])
        data_fp = info.fingerprint if info is not None else self.tags.get("dfsearch.dataset_fingerprint", "")
        client.log_inputs(run_id, datasets=[dataset_input(flat, data_fp, info.n_videos if info is not None else None)])
        header = f"dfsearch trial {tid} of sweep {self.spec.name} ({self.spec.source})\nre-run it alone: python -m dfsearch.train --config trial.yaml"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(CONFIG_ARTIFACT).name
            path.write_text(config_yaml(flat, header))
            client.log_artifact(run_id, str(path), str(Path(CONFIG_ARTIFACT).parent))
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

    def log_test_scores(self, run_id: str, rows: list, title: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            scores_csv(rows, folder / Path(SCORES_ARTIFACT).name)
            files = [folder / Path(SCORES_ARTIFACT).name]
            try:
                files += score_plots(rows, folder, title)
            except Exception as exc:  # a plot must never fail a sweep
                log.warning("test-score plots for run %s failed: %s", run_id, exc)
            for f in files:
                self.client.log_artifact(run_id, str(f), "test")

    def on_trial_start(self, iteration: int, trials: list, trial, **info):
        run_id = self.run_id(trial)
        self.client.update_run(run_id, status="RUNNING")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info):
        run_id = self.run_id(trial)
        metrics = as_metrics(result, int(result.get("epoch", 0)), int(result.get("timestamp", 0) * 1000))
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)
        rows = result.get(SCORES_KEY)
        if isinstance(rows, str):
            rows = json.loads(rows)
        if rows:
            run = self.client.get_run(run_id)
            self.log_test_scores(run_id, rows, run.info.run_name or RI.trial_id(trial))
            self.tag_completeness(run_id, result)

    def tag_completeness(self, run_id: str, result: dict) -> None:
        """``dfsearch.test_complete``: did the trial test every official video of its protocol?"""
        tested = result.get("test/videos")
        expected = result.get("test/videos_official", result.get("test/videos_expected"))
        if tested is None or expected is None:
            return
        complete = int(tested) >= int(expected)
        tags = [RunTag("dfsearch.test_complete", str(complete).lower()), RunTag("dfsearch.test_videos", f"{int(tested)}/{int(expected)}")]
        self.client.log_batch(run_id, tags=tags)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info):
        run_id = self.run_id(trial)
        # A trial the scheduler (ASHA) stopped ends without its test evaluation: say so on the run.
        tested = "test/tcr" in RI.trial_last_result(trial)
        self.client.set_tag(run_id, "dfsearch.outcome", "tested" if tested else "stopped_early")
        self.client.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info):
        run_id = self.run_id(trial)
        self.client.log_batch(run_id, tags=[RunTag("dfsearch.error_file", RI.trial_error_file(trial))])
        self.client.set_terminated(run_id, status="FAILED")

    def on_experiment_end(self, trials: list, **info):
        # A trial left unfinished (sweep interrupted) is KILLED until `--resume` continues it.
        unfinished = 0
        for trial in trials:
            if RI.trial_status(trial) not in RI.FINISHED_STATUSES:
                unfinished += 1
                if RI.trial_id(trial) in self._runs:
                    self.client.set_terminated(self._runs[RI.trial_id(trial)], status="KILLED")
        parent = self.parent_id()
        try:
            self.log_trial_table(parent)
        except Exception as exc:  # the table is a convenience; never fail the sweep on it
            log.warning("could not log the trial table to the sweep's MLflow run: %s", exc)
        if self.log_best and not unfinished:
            try:
                log_best_models(self.tracking_uri, self.experiment, self.spec.name)
            except Exception as exc:  # the sweep's results stand; `dfsearch.report --log-best` can redo this
                log.warning("best model not logged (%s: %s); retry with: python -m dfsearch.report --log-best", type(exc).__name__, exc)
        self.client.set_terminated(parent, status="KILLED" if unfinished else "FINISHED")

    def log_trial_table(self, parent: str) -> None:
        runs = trial_runs(self.client, self._experiment_id, self.spec.name)
        keys = self.spec.varied_keys()
        columns = ["trial_id", "run_name", "status", "outcome", *keys, "best/val/tcr", "test/tcr", "test/auc", "run_id"]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "trials.csv"
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(columns)
                for r in sorted(runs, key=lambda r: r.data.tags.get(TRIAL_TAG, "")):
                    row = [r.data.tags.get(TRIAL_TAG), r.info.run_name, r.info.status, r.data.tags.get("dfsearch.outcome", "")]
                    row += [r.data.params.get(k, "") for k in keys]
                    row += [r.data.metrics.get(k, "") for k in ("best/val/tcr", "test/tcr", "test/auc")]
                    w.writerow(row + [r.info.run_id])
            self.client.log_artifact(parent, str(path))


# ------------------------------------------------------------------------------------------ the best model


def _best_weights(train_dir: Path) -> dict:
    """The best-on-validation weights of a finished trial, from the checkpoint its Train run recorded last."""
    from dfsearch.train.loop import load_state

    snapshot = RI.read_snapshot(train_dir)
    if snapshot is None or snapshot.latest_checkpoint_dir is None:
        raise DfsearchError(f"{train_dir}: no checkpoint recorded by Ray Train (is the sweep folder on this machine?)")
    state = load_state(train_dir / snapshot.latest_checkpoint_dir)
    return state["best_model"] if state.get("best_model") is not None else state["model"]


def _trial_config(client: MlflowClient, run) -> dict[str, Any]:
    """The resolved flat config of a trial run, from its config artifact (params as a fallback)."""
    import yaml

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no download bars in the sweep's console
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run.info.run_id, CONFIG_ARTIFACT, tmp)
            doc = yaml.safe_load(Path(local).read_text())
        return {f"{section}.{k}": v for section, values in doc.items() for k, v in values.items()}
    except Exception:  # an older run without the artifact: its params are the flat config as strings
        return {k: fingerprint.parse_param(v) for k, v in run.data.params.items() if "." in k}


def pick_best(runs: list, metric: str, mode: str, per_cell: bool) -> list:
    """The best tested run (on ``best/<metric>``), or the best per ``dfsearch.paper_cell``."""
    key = f"best/{metric}"
    tested = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("dfsearch.outcome") == "tested" and key in r.data.metrics]
    sign = 1.0 if mode == "max" else -1.0
    groups: dict[str, list] = {}
    for r in tested:
        groups.setdefault(r.data.tags.get("dfsearch.paper_cell", "") if per_cell else "", []).append(r)
    # ties: the earlier run (stable across calls)
    return [max(rs, key=lambda r: (sign * r.data.metrics[key], -r.info.start_time)) for _, rs in sorted(groups.items())]


def log_model_for_run(tracking_uri: str, run, register: str | None = None) -> str:
    """Log the best-on-validation weights of one trial run as an MLflow PyTorch model in that run.

    The model is logged with ``mlflow.pytorch.log_model`` (so ``mlflow.pytorch.load_model`` returns the
    ``nn.Module``; it expects clips normalised as ``metadata.input`` says), with a tensor signature, and
    carries, as extra files, the weights as a plain state dict (``state_dict.pt``, loadable with
    ``torch.load(weights_only=True)``) and the trial config (``trial.yaml``): ``dfsearch.predict`` uses only
    those two.  Returns the model URI (``models:/<model id>``)."""
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from dfsearch import models

    client = MlflowClient(tracking_uri)
    flat = _trial_config(client, run)
    cfg = config.from_flat(flat)
    train_dir = Path(run.data.tags.get(TRAIN_DIR_TAG, ""))
    weights = _best_weights(train_dir)
    flat_arch = dict(flat, **{"model.pretrained": "none"})  # the weights are all here; no pretrained file needed
    model = models.build(config.from_flat(flat_arch))
    model.load_state_dict(weights)
    model.eval()
    mean, std = models.input_stats(cfg)
    t, s = cfg.data.clip_len, cfg.data.crop_size
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, s, s), "clips")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 2), "logits")]),
    )
    metadata = {
        "dfsearch.trial_run": run.info.run_id,
        "input": f"float32 (B, 3, T, {s}, {s}) RGB face crops, (x/255 - mean) / std; trained on T={t}",
        "mean": list(mean),
        "std": list(std),
        "output": "2-class logits; softmax[:, 1] = P(fake)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        from dfsearch.predict import CONFIG_FILE, FACES_FILE, STATE_DICT_FILE, faces_of

        sd_path, cfg_path, faces_path = Path(tmp) / STATE_DICT_FILE, Path(tmp) / CONFIG_FILE, Path(tmp) / FACES_FILE
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, sd_path)
        cfg_path.write_text(config_yaml(config.to_flat(cfg), f"trial config of MLflow run {run.info.run_id}"))
        faces_path.write_text(json.dumps(faces_of(cfg), indent=1))
        mlflow.set_tracking_uri(tracking_uri)
        quiet = logging.getLogger("mlflow.pytorch")  # its pickle caution is about mlflow.pytorch.load_model; said above
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        mlflow.start_run(run_id=run.info.run_id)  # reopens the finished run (RUNNING) ...
        try:
            info = mlflow.pytorch.log_model(
                model, name="model", signature=signature, extra_files=[str(sd_path), str(cfg_path), str(faces_path)], metadata=metadata,
                registered_model_name=register, pip_requirements=[], serialization_format="pickle",
            )
        finally:
            mlflow.end_run("FINISHED")  # ... and leaves it FINISHED, as it was, whatever happened
            quiet.setLevel(level)
    uri = f"models:/{info.model_id}"
    client.set_tag(run.info.run_id, MODEL_TAG, uri)
    return uri


def log_best_models(tracking_uri: str, experiment: str, sweep: str, *, per_cell: bool = False, register: str | None = None, force: bool = False) -> list[dict]:
    """Log the best trial of a sweep (on validation), or the best per table cell, as MLflow models.

    Returns one ``{"cell", "run_id", "run_name", "metric", "model_uri"}`` per logged model.  A run that already
    has a logged model is not logged again unless ``force``.  ``register``: also register each model under that
    name in the store's model registry (a new version per call)."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise DfsearchError(f"{tracking_uri}: no MLflow experiment named {experiment!r}")
    parent = find_parent(client, found.experiment_id, sweep)
    metric = parent.data.tags.get("dfsearch.search_metric", "val/tcr") if parent else "val/tcr"
    mode = parent.data.tags.get("dfsearch.search_mode", "max") if parent else "max"
    best = pick_best(trial_runs(client, found.experiment_id, sweep), metric, mode, per_cell)
    if not best:
        raise DfsearchError(f"sweep {sweep!r} in experiment {experiment!r} has no finished, tested trial to take a model from")
    out = []
    for run in best:
        uri = run.data.tags.get(MODEL_TAG)
        if uri is None or force or register:
            uri = log_model_for_run(tracking_uri, run, register)
        out.append({"cell": run.data.tags.get("dfsearch.paper_cell", ""), "run_id": run.info.run_id, "run_name": run.info.run_name,
                    "metric": f"best/{metric} = {run.data.metrics[f'best/{metric}']:.4g}", "model_uri": uri})
    if parent is not None:
        client.set_tag(parent.info.run_id, "dfsearch.best_model", out[0]["model_uri"] if len(out) == 1 else json.dumps([o["model_uri"] for o in out]))
        client.set_tag(parent.info.run_id, "dfsearch.best_run", ",".join(o["run_id"] for o in out))
    return out


def log_report(tracking_uri: str, experiment: str, sweep: str, folder: str | Path) -> str | None:
    """Log a report folder (``dfsearch.report`` output) into the sweep's parent run, under ``report/``."""
    run_id = parent_run_id(tracking_uri, experiment, sweep)
    if run_id is not None:
        MlflowClient(tracking_uri).log_artifacts(run_id, str(folder), "report")
    return run_id


__all__ = [
    "MLflowTrialLogger", "check_tracking", "find_parent", "parent_run_id", "trial_runs", "log_best_models", "log_model_for_run",
    "log_report", "run_name", "read_scores_csv", "checkpointed_history",
]
