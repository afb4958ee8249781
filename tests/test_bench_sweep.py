"""`python -m dfsearch.bench sweep` in its CPU mode (logical GPUs, a tiny model): the plumbing of the GPU bench of
issue 20, run through `run`'s own path at one packing, one trial (CI time: each packing is a sweep), with the overhead
calibrated from it.  Its numbers are not checked (speed claims live in the bench), only that every row is there, every
number in it was measured, and the calibrated overhead is a machine `run --dry-run --overhead FILE` can price with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_sweep_cpu_mode(tmp_path, ray_env):
    out_json = tmp_path / "sweep.json"
    calibrated = tmp_path / "overhead.yaml"
    cmd = [sys.executable, "-m", "dfsearch.bench", "sweep", "--device", "cpu", "--trials", "1", "--packings", "0.5", "--out", str(out_json),
           "--overhead-out", str(calibrated)]
    out = subprocess.run(cmd, env=ray_env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "| bare train loop (no Ray), 1 trial |" in out.stdout
    assert "| sweep, gpus_per_worker 0.5 |" in out.stdout
    numbers = json.loads(out_json.read_text())
    for row in [numbers["bare"], *numbers["packings"].values()]:
        assert row["trials"] >= 1 and row["clips"] > 0 and row["clips_per_s"] > 0
        assert 0 <= row["data_wait"] <= 1 and row["peak_mb"] > 0 and row["trials_per_hour"] > 0
    assert list(numbers["packings"]) == ["0.5"] and numbers["packings"]["0.5"]["trials"] == 1
    assert not numbers["packings"]["0.5"]["errors"]
    assert numbers["estimate_s"] > 0

    from dfsearch import overhead

    machine = overhead.load(str(calibrated))
    assert machine.measured and machine.device == "cpu" and "bench sweep" in machine.source["command"]
    assert machine.sweep_s >= 0 and list(machine.families) == ["resnet3d"]
    assert machine.families["resnet3d"].startup_s > 0
