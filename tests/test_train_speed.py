"""What the train loop does for speed on a GPU (issue 20), checked on the CPU: DataLoader settings from the
trial's CPUs, channels_last_3d for 3D conv models on CUDA only, and the per-epoch timing that
``python -m dfsearch.bench sweep`` reads (training time, time spent waiting for data, clips, peak memory)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch
from torch import nn

from dfsearch.train.loop import loader_options, peak_memory_mb, train_one_epoch, trial_cpus, use_channels_last

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def test_loader_options_from_the_trials_cpus():
    # No loader processes asked: none, on either device.
    assert loader_options(0, CPU, 8)["num_workers"] == 0
    assert loader_options(0, CUDA, 8) == {"num_workers": 0, "pin_memory": True}
    # CUDA: every CPU but the training process's own, at least what was asked; pinned, deeper prefetch.
    assert loader_options(2, CUDA, 8) == {"num_workers": 7, "pin_memory": True, "prefetch_factor": 4}
    assert loader_options(4, CUDA, 2) == {"num_workers": 4, "pin_memory": True, "prefetch_factor": 4}
    # CPU: loaders and training share the cores, so what was asked, capped at the CPUs left.
    assert loader_options(4, CPU, 3) == {"num_workers": 2, "pin_memory": False}
    assert loader_options(2, CPU, 1) == {"num_workers": 1, "pin_memory": False}


def test_trial_cpus_follows_ray(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # what Ray sets in a worker holding 3 CPUs
    assert trial_cpus() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert trial_cpus() >= 1


def test_channels_last_only_for_3d_convs_on_cuda():
    conv3d = nn.Sequential(nn.Conv3d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    conv2d = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    assert use_channels_last(conv3d, CUDA) and not use_channels_last(conv2d, CUDA)
    assert not use_channels_last(conv3d, CPU)


class SlowLoader:
    """Four batches, each handed out after ``delay`` seconds (a data-bound loader)."""

    def __init__(self, delay: float):
        self.delay = delay

    def __iter__(self):
        for _ in range(4):
            time.sleep(self.delay)
            yield torch.randint(0, 255, (2, 3, 2, 8, 8), dtype=torch.uint8), torch.tensor([0, 1])


def test_an_epoch_reports_its_training_time_data_wait_and_clips():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 8 * 8, 2))
    norm = lambda clips: clips.float() / 255  # noqa: E731
    norm.device = CPU
    cfg = SimpleNamespace(train=SimpleNamespace(max_steps_per_epoch=0, amp=False, log_every=100))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    m = train_one_epoch(model, SlowLoader(0.05), opt, scaler, None, norm, cfg, 1)
    assert m["train/clips"] == 8
    assert 0.2 <= m["time/data_wait_s"] <= m["time/train_s"]
    assert m["time/train_start"] <= m["time/train_end"]
    cfg.train.max_steps_per_epoch = 2
    assert train_one_epoch(model, SlowLoader(0.0), opt, scaler, None, norm, cfg, 1)["train/clips"] == 4
    assert peak_memory_mb(CPU) > 10
