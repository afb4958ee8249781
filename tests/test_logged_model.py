"""What MLflow's UI shows of a trial and of its logged model, against a real SQLite store (no Ray cluster): the
model's name and test metrics (dfsearch/tracking/logged_model.py), and counts that are not per-epoch curves
(dfsearch/tune/mlflow_log.py).  The same through a real sweep: tests/test_mlflow.py."""

from __future__ import annotations

import yaml
from conftest import TINY

from dfsearch import space
from dfsearch.tracking.logged_model import log_test_metrics, model_name


def test_a_logged_model_is_named_for_what_it_is_with_characters_mlflow_takes():
    assert model_name("nonlocal@1,2,3,4 · single:Deepfakes · seed 0", "resnet3d") == "resnet3d nonlocal@1,2,3,4 · single-Deepfakes · seed 0"
    assert model_name("resnet3d-10 · all · seed 1 · lr=0.001", "resnet3d") == "resnet3d-10 · all · seed 1 · lr=0_001"
    assert model_name("timesformer divided +kinetics400 · cross:NT · seed 0", "timesformer").startswith("timesformer divided")


def event(kind, config, **fields):
    """An event as the Tune callback records it; ``config``: the trial's Tune config."""
    return {"kind": kind, "trial_id": "t0", "config": config, **fields}


def test_counts_are_a_tag_and_a_final_metric_and_the_model_carries_the_test_metrics(tmp_path):
    from mlflow.tracking import MlflowClient

    from dfsearch.tune.mlflow_log import MLflowTrialLogger, result_fields

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "counts", **TINY, "model": {**TINY["model"], "attention": "se", "placement": "1,2"}}))
    spec = space.load(str(path))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowTrialLogger(uri, "counts", spec, {}, str(tmp_path / "train"), outbox_dir=str(tmp_path))
    for epoch in (1, 2):  # what the train loop reports each epoch, as the Tune callback records it
        result = {"epoch": epoch, "timestamp": epoch, "val/tcr": 50.0 + epoch, "val/videos": 12.0, "val/videos_expected": 14.0,
                  "best/val/videos": 12.0, "best/val/videos_expected": 14.0, "best/val/tcr": 50.0 + epoch, "training_iteration": epoch}
        logger.handle(event("result", spec.fixed, **result_fields(result)))
    final = {"test/tcr": 75.0, "test/auc": 0.8, "test/videos": 14.0, "test/videos_expected": 14.0}
    logger.handle(event("result", spec.fixed, **result_fields({**final, "epoch": 2, "timestamp": 3, "best/val/videos": 12.0})))
    logger.handle(event("complete", spec.fixed, tested=True))

    client = MlflowClient(uri)
    run = client.get_run(logger._runs["t0"])
    assert run.data.tags["dfsearch.val_videos"] == "12/14"
    assert not {"val/videos", "val/videos_expected", "best/val/videos"} & set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/tcr")] == [1, 2]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test/videos")] == [(2, 14.0)]

    model = client.create_logged_model(run.info.experiment_id, name=model_name(run.info.run_name, "resnet3d"), source_run_id=run.info.run_id)
    assert log_test_metrics(client, client.get_run(run.info.run_id), model.model_id) == 4
    got = {m.key: m for m in client.get_logged_model(model.model_id).metrics}
    assert {k: m.value for k, m in got.items()} == final
    assert got["test/tcr"].dataset_name == run.inputs.dataset_inputs[0].dataset.name and got["test/tcr"].step == 2
    assert model.name == "resnet3d se@1,2 · all · seed 0"
    assert len(client.get_metric_history(run.info.run_id, "test/tcr")) == 1  # the run's own history is unchanged
