"""The best trial of a sweep as an MLflow model (``mlflow.pytorch.log_model``), with its attention maps.

Called at the end of a sweep (:class:`dfsearch.tune.mlflow_log.MLflowTrialLogger`) and by
``python -m dfsearch.report --log-best``.  The weights come from the trial's Ray Train checkpoint (the
best-on-validation weights ride along in every checkpoint), read where the sweep stored them (a folder or a
storage URI).  No Ray here; the attention maps are drawn by whatever the caller passes as ``draw_maps``
(:func:`dfsearch.inference.attention.maps_for_run`), since inference reads models through this package.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from dfsearch import config, fingerprint
from dfsearch.errors import DfsearchError
from dfsearch.tracking import names as N
from dfsearch.tracking import store
from dfsearch.tracking.logged_model import log_test_metrics, model_name
from dfsearch.tracking.run_view import config_yaml, run_name
from dfsearch.train.checkpoint import best_weights

log = logging.getLogger(__name__)

# draw_maps(cfg, model, folder) -> the PNG files it wrote there (attention maps of the trial's first fake test video)
DrawMaps = Callable[[Any, Any, Path], list[Path]]


def trial_config_of(client, run) -> dict[str, Any]:
    """The resolved flat config of a trial run, from its config artifact (params as a fallback)."""
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no download bars in the sweep's console
    try:
        with tempfile.TemporaryDirectory() as tmp:
            flat = config.flat_from_yaml(client.download_artifacts(run.info.run_id, N.CONFIG_ARTIFACT, tmp))
    except Exception:  # an older run without the artifact: its params are the flat config as strings
        flat = {k: fingerprint.parse_param(v) for k, v in run.data.params.items() if "." in k}
    return config.as_logged(flat)  # settings added since the run: the value it trained with


def pick_best(runs: list, metric: str, mode: str, per_cell: bool) -> list:
    """The best tested run (on ``best/<metric>``), or the best per ``dfsearch.paper_cell``."""
    key = f"best/{metric}"
    tested = [r for r in runs if N.is_tested(r) and key in r.data.metrics]
    sign = 1.0 if mode == "max" else -1.0
    groups: dict[str, list] = {}
    for r in tested:
        groups.setdefault(r.data.tags.get(N.PAPER_CELL_TAG, "") if per_cell else "", []).append(r)
    # ties: the earlier run (stable across calls)
    return [max(rs, key=lambda r: (sign * r.data.metrics[key], -r.info.start_time)) for _, rs in sorted(groups.items())]


def log_model_for_run(tracking_uri: str, run, register: str | None = None, draw_maps: DrawMaps | None = None) -> str:
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

    client = store.client(tracking_uri)
    flat = trial_config_of(client, run)
    cfg = config.from_flat(flat)
    weights = best_weights(run.data.tags.get(N.TRAIN_DIR_TAG, ""))
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
        N.MODEL_TRIAL_RUN_KEY: run.info.run_id,
        "input": f"float32 (B, 3, T, {s}, {s}) RGB face crops, (x/255 - mean) / std; trained on T={t}",
        "mean": list(mean),
        "std": list(std),
        "output": "2-class logits; softmax[:, 1] = P(fake)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        from dfsearch.data import face_settings

        sd_path, cfg_path, faces_path = Path(tmp) / N.STATE_DICT_FILE, Path(tmp) / N.CONFIG_FILE, Path(tmp) / N.FACES_FILE
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, sd_path)
        cfg_path.write_text(config_yaml(config.to_flat(cfg), f"trial config of MLflow run {run.info.run_id}"))
        faces_path.write_text(json.dumps(face_settings(cfg.data), indent=1))
        mlflow.set_tracking_uri(tracking_uri)
        quiet = logging.getLogger("mlflow.pytorch")  # its pickle caution is about mlflow.pytorch.load_model; said above
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        mlflow.start_run(run_id=run.info.run_id)  # reopens the finished run (RUNNING) ...
        try:
            info = mlflow.pytorch.log_model(
                model, name=model_name(run_name(config.to_flat(cfg)), cfg.model.name), signature=signature, extra_files=[str(sd_path), str(cfg_path), str(faces_path)], metadata=metadata,
                registered_model_name=register, pip_requirements=[], serialization_format="pickle",
            )
        finally:
            mlflow.end_run("FINISHED")  # ... and leaves it FINISHED, as it was, whatever happened
            quiet.setLevel(level)
            # end_run stamps a new end time; the trial ended when it ended (a resumed sweep must not move it).
            if run.info.end_time:
                client.set_terminated(run.info.run_id, status=run.info.status or "FINISHED", end_time=run.info.end_time)
    uri = f"models:/{info.model_id}"
    client.set_tag(run.info.run_id, N.MODEL_TAG, uri)
    log_test_metrics(client, run, info.model_id)  # the Models tab shows them
    if draw_maps is not None:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for png in draw_maps(cfg, model, Path(tmp)):
                    client.log_artifact(run.info.run_id, str(png), "explain")
        except Exception as exc:  # the maps are an illustration; the model is logged
            log.warning("attention maps of run %s not logged: %s", run.info.run_id, exc)
    return uri


def log_best_models(tracking_uri: str, experiment: str, sweep: str, *, per_cell: bool = False, register: str | None = None, force: bool = False,
                    draw_maps: DrawMaps | None = None) -> list[dict]:
    """Log the best trial of a sweep (on validation), or the best per table cell, as MLflow models.

    Returns one ``{"cell", "run_id", "run_name", "metric", "model_uri"}`` per logged model.  A run that already
    has a logged model is not logged again unless ``force``.  ``register``: also register each model under that
    name in the store's model registry (a new version per call).  ``draw_maps``: see the module docstring."""
    client = store.client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise DfsearchError(f"{tracking_uri}: no MLflow experiment named {experiment!r}")
    parent = store.find_parent(client, found.experiment_id, sweep)
    metric = parent.data.tags.get(N.SEARCH_METRIC_TAG, "val/tcr") if parent else "val/tcr"
    mode = parent.data.tags.get(N.SEARCH_MODE_TAG, "max") if parent else "max"
    best = pick_best(store.trial_runs(client, found.experiment_id, sweep), metric, mode, per_cell)
    if not best:
        raise DfsearchError(f"sweep {sweep!r} in experiment {experiment!r} has no finished, tested trial to take a model from")
    out = []
    for run in best:
        uri = run.data.tags.get(N.MODEL_TAG)
        if uri is None or force or register:
            uri = log_model_for_run(tracking_uri, run, register, draw_maps)
        out.append({"cell": run.data.tags.get(N.PAPER_CELL_TAG, ""), "run_id": run.info.run_id, "run_name": run.info.run_name,
                    "metric": f"best/{metric} = {run.data.metrics[f'best/{metric}']:.4g}", "model_uri": uri})
    if parent is not None:
        client.set_tag(parent.info.run_id, N.BEST_MODEL_TAG, out[0]["model_uri"] if len(out) == 1 else json.dumps([o["model_uri"] for o in out]))
        client.set_tag(parent.info.run_id, N.BEST_RUN_TAG, ",".join(o["run_id"] for o in out))
    return out


