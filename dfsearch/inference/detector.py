"""A trained detector, loaded from a folder, an MLflow run or a ``models:/`` URI, ready to score videos.

Only the weights-only state dict and the trial config of a model are read (``torch.load(weights_only=True)``,
``yaml.safe_load``): a model logged by dfsearch carries them as extra files (:mod:`dfsearch.tracking.names`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfsearch import config
from dfsearch.errors import DfsearchError
from dfsearch.tracking import names as N

RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Detector:
    """A trained detector ready to score videos: its trial config, the module (eval mode, on ``device``),
    and the face-tracking settings of the cache it was trained on."""

    cfg: Any  # dfsearch.config.TrialConfig
    model: Any  # torch.nn.Module
    faces: dict
    source: str
    device: Any = None
    threshold: float = 0.5
    notes: list[str] = field(default_factory=list)


def _from_folder(folder: Path, source: str) -> tuple[dict, dict, dict | None]:
    """(flat config, state dict, faces) from an MLflow model folder or a folder with state_dict.pt + trial.yaml."""
    import torch

    candidates = [folder, folder / "extra_files"]
    for base in candidates:
        sd, cf = base / N.STATE_DICT_FILE, base / N.CONFIG_FILE
        if sd.is_file() and cf.is_file():
            try:
                state = torch.load(sd, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise DfsearchError(f"{sd}: not a readable weights-only state dict ({type(exc).__name__}: {exc})") from None
            faces = None
            if (base / N.FACES_FILE).is_file():
                faces = json.loads((base / N.FACES_FILE).read_text())
            return config.as_logged(config.flat_from_yaml(cf)), state, faces  # written by dfsearch, perhaps an older one
    raise DfsearchError(f"{source}: no {N.STATE_DICT_FILE} + {N.CONFIG_FILE} in {folder} (expected a model logged by dfsearch, e.g. by `python -m dfsearch.report --log-best`)")


def _from_run(run_id: str, tracking_uri: str | None) -> tuple[dict, dict, dict | None, str]:
    """A trial's MLflow run: its logged model if it has one, else its best checkpoint from the sweep folder."""
    from mlflow.tracking import MlflowClient

    from dfsearch.tracking.best_model import trial_config_of
    from dfsearch.train.checkpoint import best_weights

    if not tracking_uri:
        raise DfsearchError(f"--model {run_id}: a run id needs the tracking store: pass --tracking-uri (or set $MLFLOW_TRACKING_URI)")
    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        raise DfsearchError(f"--model {run_id}: no such run in {tracking_uri} ({str(exc).splitlines()[0][:200]})") from None
    uri = run.data.tags.get(N.MODEL_TAG)
    if uri:
        flat, state, faces = _download(uri, tracking_uri)
        return flat, state, faces, f"{uri} (run {run_id})"
    flat = trial_config_of(client, run)
    state = best_weights(run.data.tags.get(N.TRAIN_DIR_TAG, ""))
    return flat, state, None, f"run {run_id} (best checkpoint in {run.data.tags.get(N.TRAIN_DIR_TAG)})"


def _download(uri: str, tracking_uri: str | None) -> tuple[dict, dict, dict | None]:
    import mlflow
    import mlflow.artifacts

    if tracking_uri:  # models:/ URIs resolve through the registry, which must be the same store
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except Exception as exc:
            raise DfsearchError(f"--model {uri}: cannot fetch it from {tracking_uri or 'the default MLflow store'} ({str(exc).splitlines()[0][:200]})") from None
        return _from_folder(Path(local), uri)


def load_detector(ref: str, tracking_uri: str | None = None, device: str = "auto") -> Detector:
    """``ref``: an MLflow model URI, a run id, or a local folder (see the module docstring)."""
    import torch

    from dfsearch import models
    from dfsearch.data import face_settings

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    path = Path(ref).expanduser()
    faces = None
    if path.is_dir():
        flat, state, faces = _from_folder(path, ref)
        source = str(path)
    elif ref.startswith(("models:/", "runs:/")) or "://" in ref:
        flat, state, faces = _download(ref, tracking_uri)
        source = ref
    elif RUN_ID.fullmatch(ref):
        flat, state, faces, source = _from_run(ref, tracking_uri)
    else:
        raise DfsearchError(f"--model {ref}: not a folder, an MLflow model URI (models:/NAME/VERSION) or a run id (32 hex digits)")
    cfg = config.from_flat(flat)
    arch = config.from_flat({**flat, "model.pretrained": "none"})  # every weight is in the state dict
    model = models.build(arch)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DfsearchError(f"--model {ref}: the weights do not fit a {cfg.model.name} built from its config ({str(exc).splitlines()[0][:200]})") from None
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    model.to(dev).eval()
    return Detector(cfg, model, faces or face_settings(cfg.data), source, dev)
