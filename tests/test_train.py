"""The training loop without Ray: metrics, a real run on synthetic FF++, resume from a checkpoint, and
selection of the tested weights by validation only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dataclasses import dataclass

from torch import nn

from dfsearch import config
from dfsearch.models.registry import Clip, DetectorSpec, register
from dfsearch.train import metrics
from dfsearch.train.loop import Ranks, LocalSession, Normalizer, better, evaluate, lr_factor, train_loop


# A detector defined outside dfsearch: one settings dataclass, one module, one register() call.
@dataclass
class TinyConfig:
    width: int = 4  # channels of the single 3D conv


class Tiny3d(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv3d(3, width, kernel_size=3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        return self.head(self.drop(self.conv(x).relu().mean(dim=(2, 3, 4))))


register(DetectorSpec(
    name="tiny3d_test",
    config=TinyConfig,
    build=lambda cfg, sd=None: Tiny3d(cfg.model.arch.width, cfg.model.dropout),
    clip=Clip(clip_len=4, frame_stride=2, crop_size=32),
    test_view="middle_clip_3crops",
    description="a one-conv detector defined in tests/test_train.py",
))

TINY = {
    "data.root": "synthetic", "data.synthetic_pairs": 3, "data.synthetic_frames": 24, "data.synthetic_size": 96,
    "data.clip_len": 8, "data.crop_size": 64, "data.num_workers": 0,
    "model.depth": 10, "model.widen_factor": 0.125, "model.conv1_t_size": 3,
    "optim.name": "adam", "train.batch_size": 4, "train.amp": False, "eval.batch_size": 8,
}


def test_tcr_and_auc_by_hand():
    scores = [0.9, 0.8, 0.3, 0.2, 0.6]
    labels = [1, 1, 0, 0, 0]
    assert metrics.tcr(scores, labels) == pytest.approx(80.0)
    # positives {0.9, 0.8} beat negatives {0.3, 0.2, 0.6}: 6 of 6 pairs
    assert metrics.auc(scores, labels) == pytest.approx(1.0)
    assert metrics.auc([0.5, 0.5, 0.5], [1, 0, 0]) == pytest.approx(0.5)  # ties count half
    assert metrics.auc([0.1, 0.9], [1, 0]) == pytest.approx(0.0)
    assert np.isnan(metrics.auc([0.2, 0.3], [1, 1]))


def test_lr_schedule_and_selection_rule():
    cfg = config.from_flat({"train.epochs": 4, "optim.warmup_epochs": 1})
    factors = [lr_factor(cfg, e) for e in range(4)]
    assert factors[0] == pytest.approx(0.5) and factors[1] == pytest.approx(1.0)
    assert factors[1] > factors[2] > factors[3] > 0
    a = {"val/tcr": 80.0, "val/loss": 0.5}
    assert better(a, None, "val/tcr")
    assert better({"val/tcr": 80.0, "val/loss": 0.4}, a, "val/tcr")  # tie on TCR: lower loss wins
    assert not better({"val/tcr": 70.0, "val/loss": 0.1}, a, "val/tcr")
    assert better({"val/tcr": 70.0, "val/loss": 0.1}, a, "val/loss")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    import os

    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DFSEARCH_CACHE")
    os.environ["DFSEARCH_CACHE"] = str(cache)
    from dfsearch import data

    data.ensure_prepared(config.from_flat(TINY).data)
    yield cache
    if old is None:
        os.environ.pop("DFSEARCH_CACHE", None)
    else:
        os.environ["DFSEARCH_CACHE"] = old


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_run_resume_and_test_once(prepared, tmp_path, caplog):
    out = tmp_path / "run"
    # First run stops after epoch 1 (as if the machine died right after the checkpoint) ...
    cfg1 = config.from_flat({**TINY, "train.epochs": 1})
    train_loop(cfg1, LocalSession(out))
    assert (out / "checkpoints" / "epoch_0001" / "state.pt").is_file()
    # ... the same run continued to 3 epochs resumes at epoch 2 instead of starting over.
    cfg3 = config.from_flat({**TINY, "train.epochs": 3})
    caplog.set_level("INFO")
    final = train_loop(cfg3, LocalSession(out))
    assert "resumed from epoch 1" in caplog.text
    lines = read_metrics(out)
    epochs = [m["epoch"] for m in lines if "val/tcr" in m and "test/tcr" not in m]
    assert epochs == [1, 2, 3]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0002", "epoch_0003"]  # keep=2

    # The test metrics come once, at the end, from the epoch that was best on validation.
    tests = [m for m in lines if "test/tcr" in m]
    assert len(tests) == 2  # one per finished run (the 1-epoch run tested too)
    history = [m for m in lines if "val/tcr" in m and "test/tcr" not in m]
    best = max(history, key=lambda m: (m["val/tcr"], -m["val/loss"]))
    assert final["best/epoch"] == best["epoch"]
    assert 0.0 <= final["test/tcr"] <= 100.0 and final["test/videos"] > 0

    # Re-evaluating the stored best weights on the test split reproduces the reported number.
    state = torch.load(out / "checkpoints" / "epoch_0003" / "state.pt", weights_only=True)
    weights = state["best_model"] if state["best_model"] is not None else state["model"]
    from dfsearch import data, models

    model = models.create(cfg3)
    model.load_state_dict(weights)
    again = evaluate(model, data.build_datasets(cfg3).test, Normalizer(cfg3, torch.device("cpu")), cfg3, Ranks(), "test")
    assert again["test/tcr"] == pytest.approx(final["test/tcr"])
    assert again["test/auc"] == pytest.approx(final["test/auc"], nan_ok=True)


def test_finished_run_resumes_straight_to_test(prepared, tmp_path):
    out = tmp_path / "run"
    cfg = config.from_flat({**TINY, "train.epochs": 1})
    first = train_loop(cfg, LocalSession(out))
    second = train_loop(cfg, LocalSession(out))
    assert second["test/tcr"] == first["test/tcr"]
    assert [m["epoch"] for m in read_metrics(out) if "val/tcr" in m and "test/tcr" not in m] == [1]


def test_plain_python_cli(prepared, tmp_path):
    import subprocess
    import sys

    args = [sys.executable, "-m", "dfsearch.train", "--out", str(tmp_path / "cli")]
    for key, value in {**TINY, "train.epochs": 1, "model.attention": "se", "model.placement": "2"}.items():
        args += ["--set", f"{key}={value}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test/tcr" in json.loads(out.stdout[out.stdout.index("{"):])
    bad = subprocess.run([sys.executable, "-m", "dfsearch.train", "--set", "model.placment=1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "did you mean 'model.placement'" in bad.stderr and "Traceback" not in bad.stderr


def test_a_detector_defined_in_a_test_file_runs_a_trial(prepared, tmp_path):
    data = {k: v for k, v in TINY.items() if k.startswith(("data.", "optim.", "train.", "eval.")) and k not in ("data.clip_len", "data.crop_size")}
    cfg = config.from_flat({**data, "model.name": "tiny3d_test", "model.width": 6, "train.epochs": 2})
    assert (cfg.data.clip_len, cfg.data.frame_stride, cfg.data.crop_size) == (4, 2, 32)  # the spec's clip
    assert config.to_flat(cfg)["model.width"] == 6 and "model.depth" not in config.to_flat(cfg)
    with pytest.raises(config.ConfigError, match="model.depth is a setting of resnet3d, not of model.name 'tiny3d_test'"):
        config.from_flat({"model.name": "tiny3d_test", "model.depth": 10})
    final = train_loop(cfg, LocalSession(tmp_path / "tiny"))
    assert 0.0 <= final["test/tcr"] <= 100.0 and final["best/epoch"] in (1, 2)
    state = torch.load(tmp_path / "tiny" / "checkpoints" / "epoch_0002" / "state.pt", weights_only=True)
    assert state["model"]["conv.weight"].shape == (6, 3, 3, 3, 3)  # the registered builder made the model

    # The same detector from the plain-Python CLI: $DFSEARCH_DETECTORS names the module that registers it.
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "DFSEARCH_DETECTORS": "test_train", "PYTHONPATH": str(Path(__file__).parent)}
    args = [sys.executable, "-m", "dfsearch.train", "--out", str(tmp_path / "cli"), "--set", "model.name=tiny3d_test"]
    for key, value in {**data, "train.epochs": 1}.items():
        args += ["--set", f"{key}={value}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test/tcr" in json.loads(out.stdout[out.stdout.index("{"):])
