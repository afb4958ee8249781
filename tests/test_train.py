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
from dfsearch.train.loop import Ranks, LocalSession, Normalizer, better, evaluate, make_scheduler, train_loop


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
    assert np.isnan(metrics.auc([0.2, float("nan")], [1, 0]))


def test_auc_equals_sklearn():
    """The trial's own AUC (no scikit-learn import in the worker) against the reference implementation, on draws
    with many ties (scores rounded to one decimal, as a saturated detector gives) and without."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for i in range(200):
        n = int(rng.integers(2, 60))
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = rng.random(n) * 0.5 + 0.5 * labels * rng.random()
        if i % 2:
            scores = np.round(scores, 1)
        assert metrics.auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def _lrs(cfg, resume: dict | None = None) -> tuple[list[float], dict]:
    """optim.lr of each epoch and the optimizer + scheduler state after epoch 2, as a checkpoint holds them;
    with ``resume`` (such a state) the lrs of the epochs after it."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr, momentum=0.9)
    sched = make_scheduler(cfg, opt)
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
    lrs, state = [], {}
    for epoch in range(2 if resume else 0, cfg.train.epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        if epoch == 1:
            state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    return lrs, state


@pytest.mark.parametrize("warm,schedule,expected", [
    (0, "cosine", [1.0, 0.8536, 0.5, 0.1464]),  # 0.5 (1 + cos(pi e / 4))
    (1, "cosine", [0.5, 1.0, 0.75, 0.25]),  # warm-up lr/2, then cosine over the 3 epochs left
    (2, "constant", [1 / 3, 2 / 3, 1.0, 1.0]),
])
def test_lr_schedule_warmup_cosine_and_resume(warm, schedule, expected):
    cfg = config.from_flat({"train.epochs": 4, "optim.lr": 1.0, "optim.warmup_epochs": warm, "optim.schedule": schedule})
    lrs, state = _lrs(cfg)
    assert lrs == pytest.approx(expected, abs=1e-4)
    assert _lrs(cfg, resume=state)[0] == pytest.approx(expected[2:], abs=1e-4)  # resumed after epoch 2


def test_selection_rule():
    a = {"val/tcr": 80.0, "val/loss": 0.5}
    assert better(a, None, "val/tcr")
    assert better({"val/tcr": 80.0, "val/loss": 0.4}, a, "val/tcr")  # tie on TCR: lower loss wins
    assert not better({"val/tcr": 70.0, "val/loss": 0.1}, a, "val/tcr")
    assert better({"val/tcr": 70.0, "val/loss": 0.1}, a, "val/loss")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The TINY synthetic tree, generated and prepared once for this module in a private cache."""
    from dfsearch import data

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFSEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        data.ensure_prepared(config.from_flat(TINY).data)
        yield


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
    assert final["test/videos"] == final["test/videos_expected"] == 10  # every test video of the protocol
    assert all(m["val/videos"] == m["val/videos_expected"] == 10 for m in history)

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


def test_a_tree_with_a_test_video_removed_gives_an_incomplete_run(prepared, tmp_path, caplog):
    import shutil
    import subprocess
    import sys

    from dfsearch import data

    index, info, _ = data.load_prepared(config.from_flat(TINY).data)
    tree = tmp_path / "ffpp"
    shutil.copytree(index.root, tree, symlinks=True)  # the tree with its face cache (.dfsearch_cache)
    gone = next(v for v in index.videos if v.split == "test" and v.label == 0)
    (tree / gone.path.relative_to(index.root)).unlink()

    flat = {**TINY, "data.root": str(tree), "train.epochs": 1}
    datasets = data.build_datasets(config.from_flat(flat))
    assert datasets.expected == {"train": 10, "val": 10, "test": 10}  # 1 pair per split: 2 real + 2 x 4 methods
    assert len(datasets.test) == 9 and len(datasets.val) == 10 and datasets.info.missing == 1

    args = [sys.executable, "-m", "dfsearch.train", "--out", str(tmp_path / "cli")]
    for key, value in flat.items():
        args += ["--set", f"{key}={value}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    final = json.loads(out.stdout[out.stdout.index("{"):])
    assert (final["test/videos"], final["test/videos_expected"]) == (9, 10)
    assert "warning: test set incomplete: 9 of 10 videos evaluated" in out.stderr

    # A video where no face was found (the cache holds its failure record instead of an entry) is left out too.
    from dfsearch.data import cache as C

    noface = next(v for v in index.videos if v.split == "test" and v.label == 1)
    C.entry_path(datasets.info.cache_dir, "c40", noface.video_id).unlink()
    C.failed_path(datasets.info.cache_dir, "c40", noface.video_id).write_text(json.dumps({"reason": "no face found"}))
    datasets = data.build_datasets(config.from_flat(flat))
    assert len(datasets.test) == 8 and datasets.expected["test"] == 10
    assert datasets.info.failed == [f"{noface.video_id}: no face found"]

    # The same tree, no longer marked synthetic: a real-data cache made with OpenCV is accepted, with a warning.
    (tree / "SYNTHETIC.json").unlink()
    caplog.set_level("WARNING")
    _, real, _ = data.load_prepared(config.from_flat(flat).data)
    assert real.detector == "opencv" and not real.synthetic
    assert any("offline OpenCV detector" in n for n in real.notes) and "offline OpenCV detector" in caplog.text
