"""``prepare --address``: one Ray task per video over a real 2-node cluster on loopback (conftest.LocalCluster)
writes the cache the single-process path writes, and a worker node killed mid-prepare only costs its unfinished
videos; the slot arithmetic and the CLI's refusals are checked without Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dfsearch.data import cache as C
from dfsearch.data.cache_builder import TrackSettings, plan_tree, prepare_tree
from dfsearch.data.synthetic import SyntheticParams, generate_tree

REPO = Path(__file__).resolve().parents[1]
SMALL = SyntheticParams(pairs=3, frames=24, size=96, seed=5)


# ------------------------------------------------------------------------------------------------ no Ray


def test_task_slots_gpu_fraction_cpu_rest_and_never_zero():
    from dfsearch.tune.prepare import task_slots

    fa, cv = TrackSettings(detector="face_alignment"), TrackSettings(detector="opencv")
    assert task_slots({"CPU": 16, "GPU": 2}, fa, 0.25) == (8, 8)  # 4 per GPU, each with a CPU; the other CPUs detect too
    assert task_slots({"CPU": 4, "GPU": 2}, fa, 0.25) == (4, 0)  # a GPU task holds a CPU as well
    assert task_slots({"CPU": 16, "GPU": 2}, cv, 0.25) == (0, 16)  # OpenCV's detector: CPU only
    assert task_slots({"CPU": 16, "GPU": 2}, TrackSettings(detector="face_alignment", device="cpu"), 0.25) == (0, 16)
    assert task_slots({"CPU": 16, "GPU": 1}, TrackSettings(detector="face_alignment", device="cuda"), 0.5) == (2, 0)
    assert task_slots({"CPU": 3.0}, fa, 0.25) == (0, 3)  # no GPU anywhere: face_alignment on the CPUs
    assert task_slots({}, cv, 0.25) == (0, 1)  # every node lost for now: one task waits in Ray's queue


@pytest.mark.parametrize("argv, expect", [
    (["--address", "auto", "--workers", "4"], "--workers and --address: choose one"),
    (["--gpus-per-task", "0.5"], "--gpus-per-task applies to --address"),
    (["--address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
])
def test_cluster_options_bad_input_is_one_line(tmp_path, capsys, argv, expect):
    from dfsearch.prepare import main

    assert main([str(tmp_path), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert expect in err and len(err.strip().splitlines()) == 1


def test_check_args_refuses_what_cannot_run():
    from dfsearch.errors import DfsearchError
    from dfsearch.tune.prepare import check_args

    with pytest.raises(DfsearchError, match="has no GPU"):
        check_args(TrackSettings(detector="face_alignment", device="cuda"), 0.25, {"CPU": 4})
    with pytest.raises(DfsearchError, match=r"expected a fraction of a GPU in \(0, 1\]"):
        check_args(TrackSettings(detector="face_alignment"), 2.0, {"CPU": 4, "GPU": 1})
    with pytest.raises(DfsearchError, match="no CPU"):
        check_args(TrackSettings(detector="opencv"), 0.25, {"GPU": 1})


# ------------------------------------------------------------------------------------------------ a real cluster


def entries(cache_dir: Path) -> dict[str, Path]:
    return {str(p.relative_to(cache_dir)): p for p in sorted(cache_dir.rglob("*" + C.SUFFIX))}


# The driver, in its own process (it joins the cluster with the cluster's token): prepares the jobs on the cluster
# and kills node b from inside the result callback at node b's second result.  The driver keeps two videos per
# CPU in flight, so node b's worker is already on its next video (queued to it by Ray as the last one ended) and
# dies with it; at most four of the 30 videos are in flight, so the kill always leaves work for the head.
DRIVER = """
import json, sys
import ray
from conftest import kill_node_processes
from dfsearch.data import cache as C
from dfsearch.data.cache_builder import TrackSettings, plan_tree
from dfsearch.tune import cluster, prepare as P

tree, shared, address, tag = sys.argv[1:5]
settings = TrackSettings(detector="opencv")
jobs, summary = plan_tree(tree, "c40", cache_dir=shared, settings=settings)
seen, before_kill = {}, {}

def on_result(node, res, summ):
    seen[res.video_id] = node
    if not before_kill and list(seen.values()).count(b_id) == 2:
        for vid in seen:  # only videos whose result reached the driver: those are finished for good
            st = C.entry_path(shared, "c40", vid).stat()
            before_kill[vid] = [st.st_ino, st.st_mtime_ns]
        assert kill_node_processes(tag) >= 1

cluster.connect(address, log_to_driver=False)
b_id = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node_b" in n["Resources"])
out = P.prepare_on_cluster(jobs, summary, settings, on_result=on_result, connect=False)
cluster.disconnect()
print(json.dumps({"jobs": len(jobs), "b": b_id, "seen": seen, "before_kill": before_kill, "done": out.done,
                  "failed": out.failed, "unfinished": out.unfinished}))
"""


@pytest.mark.slow
def test_cluster_prepare_same_cache_and_a_killed_node_only_costs_its_unfinished_videos(tmp_path, local_cluster):
    import json

    tree = generate_tree(tmp_path / "tree", SMALL)
    settings = TrackSettings(detector="opencv")
    single = prepare_tree(tree, "c40", cache_dir=tmp_path / "single", settings=settings)
    assert single.done > 10 and not single.failed

    cluster = local_cluster()
    # Node death noticed in a few seconds, not Ray's default ~15-30 s (GCS health checks of the raylets).
    cluster.env |= {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
                    "RAY_health_check_initial_delay_ms": "0"}
    cluster.start_head(num_cpus=1)
    node_b = cluster.add_node("b", num_cpus=1, resources={"node_b": 1})
    env = {**cluster.env, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}

    shared = tmp_path / "shared"
    run = subprocess.run([sys.executable, "-c", DRIVER, str(tree), str(shared), cluster.address, node_b], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    cluster.nodes.remove(node_b)  # killed by the driver

    # The kill happened with work left, both nodes prepared videos, and every video was recorded once.
    n = r["jobs"]
    assert n == single.done and r["before_kill"] and len(r["before_kill"]) < n - 4
    assert r["b"] in r["seen"].values() and len(set(r["seen"].values())) == 2
    assert r["done"] == n and not r["failed"] and not r["unfinished"] and len(r["seen"]) == n
    # The videos finished before the kill were not prepared again.
    for vid, (ino, mtime) in r["before_kill"].items():
        st = C.entry_path(shared, "c40", vid).stat()
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime), vid

    # The same cache as the single-process path: same videos, same frame counts, same boxes.
    a, b = entries(tmp_path / "single"), entries(shared)
    assert a.keys() == b.keys() and len(a) == n
    for key in a:
        ma, mb = C.read_header(a[key])[0], C.read_header(b[key])[0]
        assert ma["n_frames"] == mb["n_frames"] and ma["detector"] == mb["detector"] == "opencv"
        np.testing.assert_allclose(np.array(ma["boxes"]), np.array(mb["boxes"]), atol=0.5, err_msg=key)
    assert not list(shared.rglob("*.tmp"))  # nothing half-written left behind, not even by the killed node

    # Resumable through the CLI on the surviving cluster: only the two deleted entries are prepared again.
    for key in list(b)[:2]:
        b[key].unlink()
    cmd = [sys.executable, "-m", "dfsearch.prepare", str(tree), "--cache-dir", str(shared), "--detector", "opencv",
           "--address", cluster.address, "--no-progress"]
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"2 prepared, {n - 2} skipped (already done), 0 failed, of {n} videos" in res.stdout
