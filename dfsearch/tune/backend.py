"""The process-group backend of a trial's workers: torch.distributed, set up by the workers themselves.

A trial runs Ray Train's ``DataParallelTrainer`` with :class:`TorchBackendConfig`.  That is what Ray's own
``TorchTrainer`` is (a ``DataParallelTrainer`` whose backend config is a ``TorchConfig``: one
``init_process_group`` per worker, MASTER_ADDR/PORT from rank 0, RANK/LOCAL_RANK/WORLD_SIZE set), with two
differences:

* **torch is imported only in the functions the workers run.**  ``ray.train.torch`` imports torch at its top,
  and the trainer's backend config travels to two processes that never train: the Tune trial actor (which builds
  the trainer) and Train's controller (which unpickles the config and calls ``on_start``).  Each paid ~1.7 s of
  torch import per trial on a 2-core machine (``python -m dfsearch.bench ray``).  This module imports Ray's
  backend base classes only; ``tests/test_imports.py`` keeps torch out of it.
* **the workers say whether NCCL can work.**  Ray's GPUs are logical resources: a node started with
  ``--num-gpus`` where torch sees no CUDA device (a CPU test machine, a mis-set container) still hands out
  "GPUs", and NCCL then fails in ``init_process_group`` ("ProcessGroupNCCL is only supported with GPUs").
  Here NCCL is used when the workers hold GPUs and every one of them sees CUDA, else gloo; the training loop
  (``dfsearch.train.loop.pick_device``) falls back to the CPU in the same way.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import ray
import ray.train
from ray.exceptions import GetTimeoutError
from ray.train.backend import Backend, BackendConfig

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 30  # as Ray's torch backend (TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)


# ---- run in the workers (pickled by reference: the workers import this module, then torch) ----------------------


def _probe() -> tuple[str, int, bool]:
    """This worker's node address, a free port there (used on rank 0 only) and whether torch sees CUDA."""
    import torch

    address = ray.util.get_node_ip_address()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return address, port, torch.cuda.is_available()


def _init_process_group(backend: str, master_addr: str, master_port: int, timeout_s: int) -> None:
    import torch.distributed as dist

    ctx = ray.train.get_context()
    os.environ.update({
        "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port),
        "RANK": str(ctx.get_world_rank()), "WORLD_SIZE": str(ctx.get_world_size()),
        "LOCAL_RANK": str(ctx.get_local_rank()), "LOCAL_WORLD_SIZE": str(ctx.get_local_world_size()),
        "NODE_RANK": str(ctx.get_node_rank()),
    })
    if backend == "nccl" and "TORCH_NCCL_BLOCKING_WAIT" not in os.environ:
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # a timed-out collective fails instead of hanging
    dist.init_process_group(backend, init_method="env://", rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
                            timeout=timedelta(seconds=timeout_s))


def _shutdown(destroy_process_group: bool) -> None:
    import torch
    import torch.distributed as dist

    if destroy_process_group and dist.is_initialized():
        dist.destroy_process_group()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- run in Train's controller: no torch here --------------------------------------------------------------------


class TorchBackend(Backend):
    # As Ray's torch backend: each GPU worker sees the GPUs of all workers on its node and picks its own by LOCAL_RANK.
    share_cuda_visible_devices = True

    def on_start(self, worker_group, backend_config: TorchBackendConfig):
        probes = worker_group.execute(_probe)
        backend = backend_config.backend
        if backend is None or backend == "nccl":
            gpus = worker_group.get_resources_per_worker().get("GPU", 0) > 0
            backend = "nccl" if gpus and all(cuda for _, _, cuda in probes) else "gloo"
        master_addr, master_port, _ = probes[0]
        ray.get(worker_group.execute_async(_init_process_group, backend, master_addr, master_port, backend_config.timeout_s))

    def on_shutdown(self, worker_group, backend_config: TorchBackendConfig):
        futures = worker_group.execute_async(_shutdown, destroy_process_group=len(worker_group) > 1)
        try:
            ray.get(futures, timeout=SHUTDOWN_TIMEOUT_S)
        except GetTimeoutError:
            log.warning("torch process group shutdown timed out after %d s", SHUTDOWN_TIMEOUT_S)


@dataclass
class TorchBackendConfig(BackendConfig):
    """torch.distributed for a ``DataParallelTrainer``'s workers.  ``backend``: None (or "nccl") = NCCL when the
    workers hold GPUs and all see CUDA, else gloo; any other value is passed to ``init_process_group`` as is."""

    backend: str | None = None
    timeout_s: int = 1800

    @property
    def backend_cls(self):
        return TorchBackend

    @property
    def framework(self):
        from ray.train.v2._internal.util import TrainingFramework  # the label Train's run state shows

        return TrainingFramework.TORCH

    def to_dict(self) -> dict:
        return {"backend": self.backend, "timeout_s": self.timeout_s}
