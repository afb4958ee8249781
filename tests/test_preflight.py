"""``run`` refuses what it can decide without the data before it starts Ray or builds anything (dfsearch/preflight.py):
a pretrained weights file that is not there, a FaceForensics++ root that is not there or not prepared, a GPU request on a
machine without GPUs (dfsearch/tune/cluster.py::local_upper_bound)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import TINY

REPO = Path(__file__).resolve().parents[1]


def refuse(tmp_path, extra: dict, name: str):
    space_file = tmp_path / f"{name}.yaml"
    space_file.write_text(yaml.safe_dump({"name": name, **TINY, **extra}, sort_keys=False))
    cache, weights = tmp_path / "fresh-cache", tmp_path / "weights"
    weights.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env |= {"DFSEARCH_CACHE": str(cache), "DFSEARCH_WEIGHTS": str(weights), "RAY_TMPDIR": str(tmp_path / "ray-never")}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "dfsearch.run", str(space_file), "--work-dir", str(tmp_path / "runs")], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=180)
    took = time.monotonic() - t0
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "data:" not in out.stdout  # refused before any data step
    assert not (cache.exists() and any(cache.iterdir())) and not (tmp_path / "runs" / name).exists()
    assert not (tmp_path / "ray-never").exists()  # Ray was never started
    assert took < 120  # seconds in practice; the target (<= 15 s) is measured by hand, not in a timed test
    return out.stderr


def test_a_missing_weights_file_is_refused_before_the_data_and_ray(tmp_path):
    err = refuse(tmp_path, {"model": {**TINY["model"], "depth": 18, "widen_factor": 1.0, "pretrained": "kinetics400"}}, "weights")
    assert "resnet-18-kinetics.pth" in err and "not found" in err and str(tmp_path / "weights") in err


def test_a_dataset_root_that_is_not_there_is_refused_before_the_synthetic_data_is_built(tmp_path):
    # two data settings: the synthetic one would be built first; the missing FF++ root is refused before that
    data = {k: v for k, v in TINY["data"].items() if k != "root"}
    err = refuse(tmp_path, {"data": data, "cases": [{"data.root": "synthetic"}, {"data.root": str(tmp_path / "no-ffpp")}]}, "roots")
    assert str(tmp_path / "no-ffpp") in err


def test_a_gpu_request_on_a_machine_without_gpus_is_refused_before_ray_starts(tmp_path):
    import pytest

    from dfsearch.tune import cluster

    if cluster.local_upper_bound(None) is None:
        pytest.skip("this machine may have a GPU: Ray's own count decides, after it starts (tests/test_sweep.py)")
    err = refuse(tmp_path, {"resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1}}, "gpu")
    assert "asks for 1 GPU" in err and "a local cluster on this machine would have 0" in err
