"""What a logged model shows in MLflow's Models tab: a name that says what it is, and its test metrics.

MLflow only (no Ray, no torch); :mod:`dfsearch.tune.best_model` logs the model and calls these.
"""

from __future__ import annotations

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

# Characters MLflow refuses in a logged model's name (mlflow.utils.validation._validate_logged_model_name).
_REFUSED = str.maketrans({":": "-", "/": "-", ".": "_", "%": "", '"': "", "'": ""})


def model_name(display_name: str, family: str) -> str:
    """The logged model's name from its trial's run name (``dfsearch.tune.run_view.run_name``), the family in front
    when the run name does not start with it: ``resnet3d nonlocal@1,2,3,4 · single-Deepfakes · seed 0``."""
    name = display_name if not family or display_name.startswith(family) else f"{family} {display_name}"
    return name.translate(_REFUSED) or "model"


def log_test_metrics(client: MlflowClient, run, model_id: str) -> int:
    """The trial's ``test/*`` metrics on its logged model as well, against the run's dataset input.  The points are
    the run's own (key, value, step, timestamp), so the run's metric history gains nothing.  Returns how many."""
    inputs = run.inputs.dataset_inputs if run.inputs else []
    dataset = inputs[0].dataset if inputs else None
    points = [m for key in sorted(run.data.metrics) if key.startswith("test/") for m in client.get_metric_history(run.info.run_id, key)]
    metrics = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id, dataset_name=dataset.name if dataset else None,
                      dataset_digest=dataset.digest if dataset else None) for m in points]
    if metrics:
        client.log_batch(run.info.run_id, metrics=metrics)
    return len(metrics)
