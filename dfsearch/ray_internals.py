"""Everything dfsearch reads from Ray beyond its stable public API, in one place.

Ray is pinned to the minor series these were checked against (pyproject.toml).  When Ray is upgraded, read
this file top to bottom and run ``tests/test_mlflow.py::test_smoke_sweep_mlflow_and_predict``: it reads the
snapshot of a real run and fails when a field used here moved.

This module imports no MLflow and, at import, not even Ray (Ray is imported inside the functions that need it), so
the trial driver (shipped to Ray actors), and predict and the report (which read checkpoints), may import it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The Ray minor series the private layouts below were checked against.
TESTED_RAY_SERIES = "2.60"

# --------------------------------------------------------------------------------------------------------------
# 1. TuneReportCallback (``ray.tune.integration.ray_train``, a @DeveloperAPI in Ray 2.5x/2.60).
#    The bridge that forwards each ``ray.train.report`` of a Ray Train run inside a Tune trial to Tune.  It
#    passes on rank 0's metrics only (``metrics[0]``), so whatever the loop reports on rank 0 (the gathered
#    per-video test scores included) reaches the sweep driver's callbacks.
def tune_report_callback():
    """A new ``TuneReportCallback`` for a Train run's ``RunConfig(callbacks=[...])``."""
    from ray.tune.integration.ray_train import TuneReportCallback

    return TuneReportCallback()


def wait_until_tune_took_the_reports(poll_s: float = 0.05, settle_s: float = 0.2) -> None:
    """Call in the Tune trial function after ``trainer.fit()`` returns: wait until Tune's trial actor has taken
    every report the Train run left in its inter-actor queue (private: ``ray.train._internal.session._TrainSession
    ._inter_actor_queue``, a ``ray.util.queue.Queue`` of size 1 that TuneReportCallback fills).

    Why (Ray 2.60): when the trial function returns, Tune's function trainable reports a last "duplicate" result
    into its one-slot result queue from the function's thread, while the actor's main thread may still be moving
    the Train run's last report (the test metrics) from the inter-actor queue into that same slot.  If the
    duplicate gets there first, the main thread blocks on a full queue only it empties: the trial never ends and
    the sweep hangs (seen once in CI, in an Optuna + ASHA sweep: all Train runs done, one trial RUNNING for 10 min
    without its test metrics).  Once the queue is empty the main thread holds the last report; ``settle_s`` lets
    it put that report in the slot before the duplicate comes."""
    from ray.train._internal.session import get_session

    session = get_session()
    queue = getattr(session, "_inter_actor_queue", None) if session is not None else None
    if queue is None:
        return
    while not queue.empty():
        time.sleep(poll_s)
    time.sleep(settle_s)


# --------------------------------------------------------------------------------------------------------------
# 2. Ray Train V2's checkpoint-manager snapshot (private file, ``ray/train/v2/_internal/constants.py``:
#    CHECKPOINT_MANAGER_SNAPSHOT_FILENAME), written in the Train run folder (``<storage>/<run name>/``) as the
#    pydantic model ``_CheckpointManagerState`` (``.../execution/checkpoint/checkpoint_manager.py``).  Train
#    writes it *before* a report reaches Tune, and a resumed run loads exactly ``latest_checkpoint_result``
#    from it, so it says which epoch a restarted trial continues after.  Fields used:
#      latest_checkpoint_result.checkpoint_dir_name   the checkpoint folder (relative to the run folder)
#      ray_version                                    which Ray wrote it (for the warning below)
#    and, to rebuild a snapshot a kill cut short (``repair_snapshot``), the model classes themselves
#    (``_CheckpointManagerState``, ``_TrainingResultState``) and the report index as Ray counts it (epoch k of a
#    loop that reports once an epoch is report k - 1; ``current_report_index`` is the number of reports).
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"

# --------------------------------------------------------------------------------------------------------------
# 3. Trial attributes the sweep driver's callbacks read (``ray.tune.experiment.Trial``; the Callback hooks are
#    public, the Trial object's attributes are not documented as stable):
#      trial.trial_id     stable across a resume (names the Train run ``train-<trial_id>`` and the MLflow run)
#      trial.config       the sampled config (our flat dotted keys, plus ``case``)
#      trial.status       "PENDING" | "RUNNING" | "PAUSED" | "TERMINATED" | "ERROR"
#      trial.last_result  the last reported result dict (test metrics present => the trial was tested)
#      trial.error_file   path of the error file of a failed trial (may be absent)
FINISHED_STATUSES = ("TERMINATED", "ERROR")


def trial_id(trial) -> str:
    return trial.trial_id


def trial_config(trial) -> dict:
    return dict(trial.config or {})


def trial_status(trial) -> str:
    return trial.status


def trial_last_result(trial) -> dict:
    return trial.last_result or {}


def trial_error_file(trial) -> str:
    return str(getattr(trial, "error_file", None) or "")


@dataclass
class Snapshot:
    """What dfsearch uses of a Train run's checkpoint-manager snapshot."""

    latest_checkpoint_dir: str | None  # None: the run never registered a checkpoint
    ray_version: str


def read_snapshot(train_run: str | Path) -> Snapshot | None:
    """The snapshot of the Train run ``train_run`` (a folder or a storage URI); None when there is none (the
    run never reached a checkpoint: normal for a trial that had not finished its first epoch).

    A snapshot that exists but cannot be read, or lacks the fields above, is logged at WARNING with what a
    resume may miss (epochs the trial checkpointed before the driver died may be absent from MLflow), and
    None is returned: the sweep still resumes, since Ray itself reads the file, not us.
    """
    from dfsearch import storage

    path = storage.join(str(train_run), SNAPSHOT_FILE)
    try:
        if not storage.exists(path):
            return None
        text = storage.read_text(path)
    except OSError as exc:
        log.warning("%s: cannot read Ray Train's checkpoint snapshot (%s); epochs this trial checkpointed before the sweep "
                    "stopped may be missing from its MLflow run (the trial itself still resumes from its checkpoint)", path, exc)
        return None
    try:
        raw = json.loads(text)
        latest = raw["latest_checkpoint_result"]
        return Snapshot(None if latest is None else str(latest["checkpoint_dir_name"]), str(raw.get("ray_version", "unknown")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    written_by = re.search(r'"ray_version"\s*:\s*"([^"]+)"', text)
    log.warning(
        "%s: Ray Train's checkpoint snapshot is not in the format dfsearch reads (%s; written by Ray %s, dfsearch is tested "
        "with %s.x); epochs this trial checkpointed before the sweep stopped may be missing from its MLflow run (the trial "
        "itself still resumes from its checkpoint)",
        path, problem, written_by.group(1) if written_by else "unknown", TESTED_RAY_SERIES,
    )
    return None


def repair_snapshot(train_run: str, whole_history) -> str | None:
    """Rebuild the snapshot of the Train run ``train_run`` (a folder or a storage URI) when a kill cut it short.

    Ray 2.60 writes the snapshot in place (open, write), not by rename: a sweep killed at that moment leaves an
    empty or partial file, Ray then refuses to start the run again (``CheckpointManagerInitializationError``), every
    retry of the trial fails, and so does every later ``--resume``.  The checkpoint folders are intact, so the
    snapshot is rebuilt, with Ray's own model of it, as a run whose one checkpoint is the newest whole folder
    (``whole_history(folder)``: its per-epoch metrics, or None when the folder is incomplete); without one, the
    snapshot is set aside and the trial starts again.  A snapshot that parses is left alone (one written by
    another Ray version is Ray's error to report).  Returns what was done, for the user, or None."""
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import _CheckpointManagerState, _TrainingResultState

    from dfsearch import storage

    path = storage.join(str(train_run), SNAPSHOT_FILE)
    try:
        if not storage.exists(path):
            return None
        json.loads(storage.read_text(path))
        return None
    except OSError:
        return None  # unreadable storage: Ray will say so, with its own error
    except ValueError:
        pass
    for name in reversed(storage.subfolders(str(train_run), "checkpoint_")):  # newest first (named by time)
        history = whole_history(storage.join(str(train_run), name))
        if history:
            epochs = int(history[-1]["epoch"])
            result = _TrainingResultState(checkpoint_dir_name=name, metrics=history[-1])
            state = _CheckpointManagerState(
                checkpoint_results=[result], checkpoint_report_indices=[epochs - 1], latest_checkpoint_result=result,
                pending_training_results=[], pending_validation_specs=[], current_report_index=epochs,
                validated_checkpoint_dir_names=[], timed_out_validation_checkpoint_dir_names=[],
                failed_validation_checkpoint_dir_names=[])
            tmp = storage.join(str(train_run), SNAPSHOT_FILE + ".tmp")  # written whole, then renamed over the cut one
            storage.write_text(tmp, state.model_dump_json() if hasattr(state, "model_dump_json") else state.json())  # pydantic 2 or 1, as Ray has
            storage.move(tmp, path)
            return f"Ray Train's checkpoint record was cut short by the interruption; rebuilt from its checkpoint of epoch {epochs} ({name})"
    storage.move(path, storage.join(str(train_run), SNAPSHOT_FILE + ".cut-short"))
    return f"Ray Train's checkpoint record was cut short by the interruption and no whole checkpoint was left; the trial starts again ({SNAPSHOT_FILE}.cut-short kept)"


def check_ray_version() -> str | None:
    """A one-line warning when the installed Ray is outside the tested series, else None."""
    import ray

    have = ".".join(ray.__version__.split(".")[:2])
    if have != TESTED_RAY_SERIES:
        return f"Ray {ray.__version__} is installed; dfsearch's use of Ray internals is tested with {TESTED_RAY_SERIES}.x (see dfsearch/ray_internals.py)"
    return None
