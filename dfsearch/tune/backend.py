"""The process-group backend of a trial's workers, chosen where they run.

Ray Train picks NCCL whenever a worker asks for a GPU.  Ray's GPUs are logical resources, though: a node
started with ``--num-gpus`` where torch sees no CUDA device (a CPU test machine, a mis-set container) still
hands out "GPUs", and NCCL then fails in ``init_process_group`` ("ProcessGroupNCCL is only supported with
GPUs").  Here the workers themselves say whether they see CUDA: NCCL if every one does, else gloo, and the
training loop (``dfsearch.train.loop.pick_device``) falls back to the CPU in the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ray.train.torch import TorchConfig
from ray.train.torch.config import _TorchBackend


def _sees_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class _DeviceAwareBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig):
        # TorchTrainer has already written "nccl" into the config for a GPU trial; keep it only if it can work.
        if backend_config.backend in (None, "nccl"):
            cuda = all(worker_group.execute(_sees_cuda))
            backend_config = dataclasses.replace(backend_config, backend="nccl" if cuda else "gloo")
        super().on_start(worker_group, backend_config)


@dataclass
class DeviceTorchConfig(TorchConfig):
    """``TorchConfig`` whose NCCL backend becomes gloo when the workers see no CUDA device."""

    @property
    def backend_cls(self):
        return _DeviceAwareBackend
