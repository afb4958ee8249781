"""What Ray loads outside the Train workers stays light.

Every Tune trial actor imports ``dfsearch.tune.driver`` (it unpickles the trainable) and builds a Ray Train
``TorchTrainer`` whose worker entry is pickled by reference; only the workers call that entry.  Train's controller
unpickles the trainer's ``TorchConfig`` and runs its ``on_start``.  Both load torch, since ``ray.train.torch``
imports it at its top (issue 20: Ray's public trainer over the hand-written torch-free backend; its cost is in
``python -m dfsearch.bench ray``); neither may load anything else of the training stack, which would cost every
trial seconds of imports in processes that never train.  Each check runs in a fresh interpreter, so what other
tests imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Heavy packages only the workers (or the sweep driver, for MLflow) may import, and our own training stack
# (torch is checked apart: Ray's TorchTrainer brings it into the trial actor).
HEAVY = ("timm", "torchvision", "cv2", "av", "mlflow", "dfsearch.models", "dfsearch.data", "dfsearch.train.loop")

# A fresh interpreter that does what a Tune trial actor does before ``trainer.fit()``: unpickle the trial
# function with its settings (and, inside them, the worker entry that Train's controller and workers get by
# reference), then resolve the trial's config and build its torch config; and what Train's controller does with
# the backend config (its backend class, the framework label of the run state).  It prints the heavy modules it ended up with, then
# those it has after importing what the worker entry imports (so the first list is empty because of the driver,
# not because the training stack never loads).
TRIAL_ACTOR = """
import json, sys
import cloudpickle
run_trial, settings, entry, backend = cloudpickle.loads(sys.stdin.buffer.read())
assert entry.__module__ == "dfsearch.tune.driver" and callable(run_trial)
settings.spec.resolve({})
import dfsearch.tune.driver
dfsearch.tune.driver.torch_config()
backend.backend_cls(), backend.framework, backend.to_dict()
actor = sorted(m for m in HEAVY if m in sys.modules)
import dfsearch.tune.worker
print(json.dumps([actor, sorted(m for m in HEAVY if m in sys.modules), "torch" in sys.modules]))
"""


def test_trial_driver_and_worker_entry_import_no_training_stack():
    import cloudpickle

    from dfsearch import space
    from dfsearch.tune import driver

    # Pickled here, as the sweep driver does (it has parsed the space, so it has the zoo loaded).
    spec = space.parse({"name": "imports", "model": {"name": "xception"}, "train": {"epochs": 1}}, "test")
    settings = driver.DriverSettings(train_storage="/tmp/unused", spec=spec)
    # The torch config is what Train's controller unpickles of the trainer (with Ray's TuneReportCallback).
    shipped = cloudpickle.dumps((driver.run_trial, settings, driver.train_loop_per_worker, driver.torch_config()))
    out = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{TRIAL_ACTOR}"], input=shipped, capture_output=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    in_trial_actor, in_worker, torch_loaded = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert in_trial_actor == []
    assert torch_loaded  # Ray's TorchTrainer: the price of its public API, measured by `python -m dfsearch.bench ray`
    assert {"dfsearch.train.loop", "dfsearch.models", "dfsearch.data"} <= set(in_worker)


def test_worker_scores_without_scikit_learn():
    """A trial's worker is a fresh process: scikit-learn's ~1.2 s import before its first validation was the
    largest cost of ours in it (``dfsearch.train.metrics.auc`` is numpy, equal to sklearn's by
    ``tests/test_train.py``)."""
    code = (
        "import sys, dfsearch.tune.worker\n"
        "from dfsearch.train import metrics\n"
        "m = metrics.summarize([0.9, 0.2, 0.6, 0.4], [1, 0, 1, 0], 'val')\n"
        "assert m['val/auc'] == 1.0, m\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('sklearn', 'scipy')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    assert out.stdout.decode().strip().splitlines()[-1] == "[]"


def test_tracking_inference_and_report_import_without_ray():
    """Only ``dfsearch.tune`` knows Ray: the report, predict and the best-model logic run on a laptop with the store
    and the weights alone.  Tracking and the report do not even load torch until a model is built."""
    code = (
        "import sys, pkgutil, importlib, json\n"
        "import dfsearch.tracking, dfsearch.inference, dfsearch.report\n"
        "light = {}\n"
        "for pkg in (dfsearch.tracking, dfsearch.report):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        "light = sorted(k for k in ('ray', 'torch') if k in sys.modules)\n"
        "import dfsearch.inference.attention, dfsearch.predict, dfsearch.train.checkpoint\n"
        "print(json.dumps([light, 'ray' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    light, ray_loaded = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert light == [] and ray_loaded is False


def test_torch_config_is_rays_own_with_the_logical_gpu_backend_from_the_environment(monkeypatch):
    """The trial's torch set-up is Ray's public ``TorchConfig``: Ray's own choice of backend (NCCL with GPUs, gloo
    without) unless ``DFSEARCH_TORCH_BACKEND`` names one (gloo on logical GPUs, where NCCL cannot start)."""
    from ray.train.torch import TorchConfig

    from dfsearch.tune import driver

    monkeypatch.delenv(driver.TORCH_BACKEND_ENV, raising=False)
    assert type(driver.torch_config()) is TorchConfig and driver.torch_config().backend is None
    monkeypatch.setenv(driver.TORCH_BACKEND_ENV, "gloo")
    assert driver.torch_config().backend == "gloo"
