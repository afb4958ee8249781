"""The Tune trial driver: one Tune trial = one Ray Train run of data-parallel torch workers.

Ray Train V2 no longer accepts a trainer inside ``tune.Tuner``; instead each trial is this small function.
The Train run's name is fixed per trial (``train-<trial_id>``), so when Tune restarts an interrupted trial the
new trainer finds its own run folder and resumes from the last checkpoint it recorded.

The trainer is Ray Train's own ``TorchTrainer`` with its ``TorchConfig`` (process group, CUDA device per worker,
NCCL with GPUs, gloo without).  ``ray.train.torch`` imports torch, so the trial actor and Train's controller load
torch too (``python -m dfsearch.bench ray`` measures it); they load nothing else of the training stack.

Only the Train workers train.  This module is what the Tune trial actor loads, so it imports Ray, torch (through
``ray.train.torch``) and the sweep spec and nothing else of the training stack (models, timm, torchvision, OpenCV,
PyAV, MLflow): the worker entry below imports it in its body, in the worker.  ``tests/test_imports.py`` keeps it
that way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import os

import ray.train
from ray import tune
from ray.train.torch import TorchConfig, TorchTrainer

from dfsearch import fingerprint
from dfsearch.space import SweepSpec
from dfsearch import ray_internals as RI

# Ray's GPUs are logical: a node started with ``--num-gpus`` where torch sees no CUDA (a CPU test machine, the CPU mode
# of ``bench sweep``) hands them out, and ``TorchConfig`` then picks NCCL, which fails ("ProcessGroupNCCL is only
# supported with GPUs").  Ray expresses the fix (``TorchConfig(backend="gloo")``) but cannot see the case, so whoever
# starts such a cluster says so: ``DFSEARCH_TORCH_BACKEND=gloo`` (``cluster.connect`` hands DFSEARCH_* on to every
# Ray process).  Unset: Ray's own choice.  The training loop falls back to the CPU by itself (``pick_device``).
TORCH_BACKEND_ENV = "DFSEARCH_TORCH_BACKEND"


def torch_config() -> TorchConfig:
    return TorchConfig(backend=os.environ.get(TORCH_BACKEND_ENV) or None)


def train_loop_per_worker(flat_config: dict[str, Any]) -> None:
    """The Train worker entry.  Ray pickles it by reference (``dfsearch.tune.driver.train_loop_per_worker``)
    and only the workers call it; the training loop is imported here, not at the top of the module, so the
    trial actor that builds the trainer never imports the model zoo or the data stack."""
    from dfsearch.tune.worker import run_worker

    run_worker(flat_config)


@dataclass(frozen=True)
class DriverSettings:
    train_storage: str  # absolute folder (or URI) that holds every trial's Train run
    spec: SweepSpec
    max_failures: int = 2  # worker-group restarts per trial before the trial errors
    # On --resume: the trials MLflow has as finished (mlflow_log.logged_trials), whatever Tune's saved state says.
    finished: dict[str, dict] = field(default_factory=dict, compare=False)


KEPT_KEY = "dfsearch/kept"  # in a result: the trial had finished before the resume and was not run again


def finished_result(trial_id: str, trial_config: dict[str, Any], settings: DriverSettings) -> dict | None:
    """The logged final result of this trial when MLflow has it as finished with this very configuration.

    Tune's experiment state is a snapshot taken every few seconds to minutes: after a crash it can list a
    trial as running, or not at all, though its run was logged FINISHED (and a searcher may regenerate an
    unrecorded trial id).  Running it again would repeat its last epochs and log its test a second time."""
    done = settings.finished.get(trial_id)
    if not done or done["fingerprint"] != fingerprint.fingerprint(settings.spec.resolve(trial_config)):
        return None
    return {**done["metrics"], KEPT_KEY: True}


def run_trial(trial_config: dict[str, Any], settings: DriverSettings) -> None:
    r = settings.spec.resources
    trial_id = tune.get_context().get_trial_id()
    kept = finished_result(trial_id, trial_config, settings)
    if kept is not None:
        tune.report(kept)  # Tune, its searcher and scheduler see the trial's result; the MLflow logger skips it
        return
    per_worker = {"CPU": r.cpus_per_worker}
    if r.gpus_per_worker:
        per_worker["GPU"] = r.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=settings.spec.resolve(trial_config),
        torch_config=torch_config(),
        scaling_config=ray.train.ScalingConfig(num_workers=r.workers, use_gpu=r.gpus_per_worker > 0, resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",
            storage_path=settings.train_storage,
            # Bounded: Train's defaults retry a lost controller forever, which turns a dead node into a hang.
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures, controller_failure_limit=settings.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[RI.tune_report_callback()],
        ),
    )
    trainer.fit()
    RI.wait_until_tune_took_the_reports()  # else the trial can hang at its end (Ray 2.60 race, see there)


# Ray's default label on every node (a label selector: public API, beta in Ray 2.60).
NODE_ID_LABEL = "ray.io/node-id"


def trainable(settings: DriverSettings):
    """The Tune trainable for a sweep.  The driver itself reserves no CPU (a 1-CPU driver per trial starves
    the worker groups on small machines: two concurrent trials never fit); its workers hold the resources.

    Each trial's driver (Tune's trial actor, and Train's controller, which Ray attaches to the trial actor's node)
    runs on the sweep driver's node, one level up from what Ray Train does for its controller.  Left to Ray, a trial's
    driver could land on a worker node; losing that node then lost the trial, and the placement group of its Train
    run was left to Ray's cleaner, which needs the cluster's dashboard: without one (or with two Ray instances on a
    machine) the group kept its node's CPUs and GPUs, and the retried trial's workers never started (seen in CI:
    tests/test_cluster.py::test_node_lost_mid_trial_continues_from_its_checkpoint).  On the driver's node, a lost worker
    node costs only the Train workers on it, which Train restarts from their last checkpoint.  Each running trial holds
    ~0.8 GB of that node's memory (trial actor and controller import torch: docs/architecture.md)."""
    on_driver_node = tune.PlacementGroupFactory([{"CPU": 0, "memory": 1}],
                                                bundle_label_selector=[{NODE_ID_LABEL: ray.get_runtime_context().get_node_id()}])
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings), on_driver_node)
