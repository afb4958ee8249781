"""What a trial's checkpoint folder holds, readable without torch for the metrics and without Ray at all.

A checkpoint is ``state.pt`` (model, optimiser, scheduler, scaler, epoch, best-so-far validation metrics, the
best-on-validation weights, the history) and ``history.json`` (the per-epoch metrics alone).  Under a sweep the
folders are Ray Train's; which one a trial resumes from is in Train's snapshot (:mod:`dfsearch.ray_internals`).
"""

from __future__ import annotations

import io
import json
import logging

from dfsearch import ray_internals as RI
from dfsearch import storage
from dfsearch.errors import DfsearchError

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"  # the per-epoch metrics, readable without loading the weights


def best_weights_of(state: dict) -> dict:
    """The best-on-validation weights of a checkpoint's state (the current ones before any epoch was best)."""
    return state["best_model"] if state.get("best_model") is not None else state["model"]


def _latest(train_run: str) -> str | None:
    snapshot = RI.read_snapshot(train_run)
    if snapshot is None or snapshot.latest_checkpoint_dir is None:
        return None
    return storage.join(str(train_run), snapshot.latest_checkpoint_dir)


def checkpointed_history(train_run: str) -> list[dict]:
    """The per-epoch metrics of the checkpoint a Train run (a folder or a storage URI) will resume from (``[]``
    when it has none).

    That checkpoint is the one Ray Train's checkpoint manager recorded last (its snapshot is written before any
    report reaches Tune); a newer checkpoint folder may exist that the manager never registered, and the
    resumed run will redo that epoch, so it must not be counted as done.  An unreadable snapshot is a WARNING
    (see :func:`dfsearch.ray_internals.read_snapshot`).
    """
    folder = _latest(train_run)
    if folder is None:
        return []
    path = storage.join(folder, HISTORY_FILE)
    try:
        return json.loads(storage.read_text(path))
    except (OSError, ValueError) as exc:
        log.warning("%s: the checkpoint Ray Train recorded has no readable history (%s); its epochs may be missing from MLflow", path, exc)
        return []


def whole_history(folder: str) -> list[dict] | None:
    """The per-epoch metrics of a checkpoint folder whose files are both whole (a kill can cut a folder's upload
    short), else None."""
    import torch

    try:
        history = json.loads(storage.read_text(storage.join(folder, HISTORY_FILE)))
        fs, inner = storage.filesystem(storage.join(folder, STATE_FILE))
        with fs.open_input_stream(inner) as f:
            torch.load(io.BytesIO(f.readall()), map_location="cpu", weights_only=True)
    except Exception:  # a truncated file fails in json, zipfile or pickle, each with its own error
        return None
    return history if isinstance(history, list) and history else None


def best_weights(train_run: str) -> dict:
    """The best-on-validation weights of a finished trial, from the checkpoint its Train run (a folder or a
    storage URI) recorded last."""
    import torch

    folder = _latest(train_run)
    if folder is None:
        raise DfsearchError(f"{train_run}: no checkpoint recorded by Ray Train (is the sweep's storage reachable from here?)")
    path = storage.join(folder, STATE_FILE)
    fs, inner = storage.filesystem(path)
    try:
        with fs.open_input_stream(inner) as f:
            state = torch.load(io.BytesIO(f.readall()), map_location="cpu", weights_only=True)
    except OSError as exc:
        raise DfsearchError(f"{path}: cannot read the trial's checkpoint ({exc})") from None
    return best_weights_of(state)
