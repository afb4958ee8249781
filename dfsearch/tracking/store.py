"""The MLflow store, read and opened without Ray: a sweep's experiment, its parent run, its trial runs.

The sweep logger (:mod:`dfsearch.tune.mlflow_log`) writes through these, ``run`` asks them what already finished
(resume, idempotent re-runs), the report reads every trial run, and predict finds a run's model.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from dfsearch import fingerprint
from dfsearch.errors import DfsearchError
from dfsearch.tracking.names import EXPERIMENT_KIND, ROLE_TAG, SWEEP_ROLE, SWEEP_TAG, TRIAL_ROLE, TRIAL_TAG, is_finished, is_tested

log = logging.getLogger(__name__)


def work_dir_store(work_dir: str | Path) -> str:
    """One store per work dir, shared by its sweeps: a sweep skips cells another one finished, and the report
    sees every sweep."""
    return f"sqlite:///{Path(work_dir).expanduser().resolve() / 'mlflow.db'}"


def default_tracking_uri(work_dir: str | Path) -> str:
    """``$MLFLOW_TRACKING_URI``, else the work dir's own store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or work_dir_store(work_dir)


def client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


def open_store(tracking_uri: str):
    """An MlflowClient for reading ``tracking_uri``; a local SQLite file that does not exist is an error (reading
    must not create an empty store)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_file():
            raise DfsearchError(
                f"no MLflow store at {db}: run a sweep first (e.g. python -m dfsearch.run search_spaces/placement.yaml --smoke) "
                "or pass --tracking-uri / set MLFLOW_TRACKING_URI"
            )
    return client(tracking_uri)


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


def experiment_id(mlflow_client, name: str) -> str:
    """The id of experiment ``name``, created (in model-training mode) when it does not exist."""
    found = mlflow_client.get_experiment_by_name(name)
    if found:
        if EXPERIMENT_KIND[0] not in found.tags:
            mlflow_client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
        return found.experiment_id
    return mlflow_client.create_experiment(name, artifact_location=artifact_location(mlflow_client.tracking_uri, name), tags=dict([EXPERIMENT_KIND]))


def check_tracking(tracking_uri: str, experiment: str) -> str:
    """Open (or create) the sweep's experiment now, so a wrong URI or a server that is down fails before any
    trial starts, in seconds, with the URI in the message.  Returns the experiment id."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in quick}
    os.environ.update(quick)
    try:
        return experiment_id(client(tracking_uri), experiment)
    except Exception as exc:  # MLflow raises many types (connection, SQL, URI); all mean "cannot use it"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DfsearchError(f"cannot use the MLflow tracking store at {tracking_uri}: {first[:300]}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def find_run(mlflow_client, experiment_id: str, sweep: str, trial_id: str):
    """The run of one trial of a sweep (None before the trial started)."""
    runs = mlflow_client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
        max_results=2,
    )
    if len(runs) > 1:
        log.warning("trial %s has %d MLflow runs; continuing the newest", trial_id, len(runs))
    return runs[0] if runs else None


def find_parent(mlflow_client, experiment_id: str | list[str], sweep: str):
    """The sweep's parent run, the newest if there are several (None before the sweep started)."""
    ids = [experiment_id] if isinstance(experiment_id, str) else experiment_id
    runs = mlflow_client.search_runs(ids, filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{ROLE_TAG}` = '{SWEEP_ROLE}'",
                                     order_by=["attributes.start_time DESC"], max_results=2)
    if len(runs) > 1:
        log.warning("sweep %s has %d parent runs in MLflow; using the newest", sweep, len(runs))
    return runs[0] if runs else None


def find_parent_anywhere(mlflow_client, sweep: str, experiment: str | None = None):
    """The newest parent run of ``sweep`` in the store (or in ``experiment``), or None."""
    exps = [e.experiment_id for e in mlflow_client.search_experiments() if experiment is None or e.name == experiment]
    return find_parent(mlflow_client, exps, sweep) if exps else None


def trial_runs(mlflow_client, experiment_id: str, sweep: str) -> list:
    return mlflow_client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{ROLE_TAG}` = '{TRIAL_ROLE}'",
                                     max_results=10000)


def all_runs(mlflow_client, experiment_id: str):
    """Every run of an experiment, page by page."""
    token = None
    while True:
        page = mlflow_client.search_runs([experiment_id], max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def logged_trials(tracking_uri: str, experiment: str, sweep: str) -> dict[str, dict]:
    """The trials of ``sweep`` that have a run in MLflow: trial id -> {"finished", "fingerprint", "run_id", "metrics", ...}.

    MLflow, not Tune's saved experiment state, is the record of what finished: Tune snapshots its state every
    few seconds to minutes, so after a crash it can still list a trial as running (or not at all) whose run
    was logged FINISHED.  ``--resume`` keeps these trials (:mod:`dfsearch.tune.driver` reports their logged
    metrics back to Tune instead of running them again)."""
    mlflow_client = client(tracking_uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    out = {}
    for run in trial_runs(mlflow_client, found.experiment_id, sweep):
        out[run.data.tags[TRIAL_TAG]] = {"finished": is_finished(run), "status": run.info.status, "fingerprint": run.data.tags.get(fingerprint.TAG, ""),
                                         "run_id": run.info.run_id, "run_name": run.info.run_name, "params": dict(run.data.params),
                                         "metrics": dict(run.data.metrics)}
    return out


def sweep_status(tracking_uri: str, experiment: str, sweep: str) -> str | None:
    """The MLflow status of the sweep's parent run: FINISHED once every trial has ended (errors included),
    RUNNING or KILLED for an interrupted sweep, None if it never started."""
    mlflow_client = client(tracking_uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    parent = find_parent(mlflow_client, found.experiment_id, sweep) if found else None
    return parent.info.status if parent else None


def tested_fingerprints(tracking_uri: str, metric: str = "test/tcr") -> dict[str, str]:
    """fingerprint -> run id of every tested trial run in the store, in any experiment (the newest per fingerprint);
    {} when the local store does not exist yet.  What ``run`` skips: a cell is run once per store."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        return {}
    mlflow_client = open_store(tracking_uri)
    out: dict[str, tuple[int, str]] = {}
    for exp in mlflow_client.search_experiments():
        for run in all_runs(mlflow_client, exp.experiment_id):
            if run.data.tags.get(ROLE_TAG) == SWEEP_ROLE or not is_tested(run) or metric not in run.data.metrics:
                continue
            try:
                fp = fingerprint.of_run(run.data.tags, run.data.params)
            except DfsearchError:  # params of another version that no longer parse: not a cell of this one
                continue
            if fp not in out or out[fp][0] <= (run.info.start_time or 0):
                out[fp] = (run.info.start_time or 0, run.info.run_id)
    return {fp: run_id for fp, (_, run_id) in out.items()}
