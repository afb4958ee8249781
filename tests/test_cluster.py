"""Sweeps on real multi-node Ray clusters on this machine (`ray start` on loopback, see conftest.LocalCluster):
a node lost while its trial trains, the whole cluster lost and a sweep resumed on a new one, storage that not
every node can see, fractional GPUs on logical GPUs, and a local cluster's workers finding their own state API beside
another Ray instance.

Each failure is real (SIGKILL of the node's processes); what is asserted is what a user relies on: every
trial finishes once, every epoch is logged once, one MLflow run per trial, nothing finished is rerun.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import TINY

from dfsearch import storage

REPO = Path(__file__).resolve().parents[1]


def write_space(path: Path, name: str, **extra) -> Path:
    doc = {"name": name, **TINY}
    for key, value in extra.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "dfsearch.run", *map(str, args)]


def start_sweep(args, env, log_path: Path) -> subprocess.Popen:
    return subprocess.Popen(cli(*args), env=env, cwd=REPO, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(log_path: Path, proc: subprocess.Popen, done, what: str, timeout: float = 420) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text()
        if done(text):
            return text
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (rc {proc.returncode}) before {what}:\n{text[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}:\n{log_path.read_text()[-4000:]}")


def progress(text: str, kind: str) -> list[str]:
    """The sweep's own progress lines of one kind ('epoch', 'done', 'start', ...)."""
    return [line for line in text.splitlines() if re.match(rf"\[\d\d:\d\d:\d\d\] {kind}\s", line)]


def trial_runs(work: Path, name: str):
    """The sweep's trial runs (its parent run, if any, left out) and the store's URI."""
    import json

    record = json.loads((work / name / "sweep.json").read_text())
    mlflow.set_tracking_uri(record["tracking_uri"])
    exp = mlflow.get_experiment_by_name(record["experiment"])
    runs = mlflow.search_runs([exp.experiment_id], filter_string=f"tags.`dfsearch.sweep` = '{name}'")
    runs = runs[runs["tags.dfsearch.trial_id"].notna()]
    return runs.reset_index(drop=True), record


def history(uri: str, run_id: str, key: str):
    return sorted((m.step, m.timestamp, m.value) for m in mlflow.MlflowClient(uri).get_metric_history(run_id, key))


def assert_each_epoch_once(runs, uri: str, epochs: int) -> None:
    assert runs["tags.dfsearch.trial_id"].is_unique, runs[["run_id", "tags.dfsearch.trial_id"]]
    assert set(runs["status"]) == {"FINISHED"}, runs[["run_id", "status"]]
    for run_id in runs["run_id"]:
        assert [s for s, _, _ in history(uri, run_id, "val/tcr")] == list(range(1, epochs + 1)), run_id
        assert len(history(uri, run_id, "test/tcr")) == 1


# ------------------------------------------------------------------------------------------- no Ray needed


def test_storage_locations_folders_and_uris(tmp_path):
    assert storage.resolve(None, tmp_path / "a") == str(tmp_path / "a")
    assert storage.resolve(f"file://{tmp_path}/b", tmp_path) == str(tmp_path / "b")
    assert storage.resolve("s3://bucket/sweeps/", tmp_path) == "s3://bucket/sweeps"
    # a URI's query (pyarrow options) stays at the end when a folder is appended
    assert storage.join("s3://bucket/x?endpoint_override=127.0.0.1:9000&scheme=http", "s", "tune") == \
        "s3://bucket/x/s/tune?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.join(str(tmp_path), "s", "tune") == str(tmp_path / "s" / "tune")
    target = storage.join(f"file://{tmp_path}", "deep", "f.txt")
    storage.write_text(target, "hello")
    assert storage.exists(target) and storage.read_text(target) == "hello"
    assert (tmp_path / "deep" / "f.txt").read_text() == "hello"
    storage.check_writable(str(tmp_path / "w"))
    assert list((tmp_path / "w").iterdir()) == []  # the probe is removed again


def test_unknown_storage_scheme_is_one_clear_error(tmp_path):
    space_file = write_space(tmp_path / "s.yaml", "s", train={"epochs": 1})
    out = subprocess.run(cli(space_file, "--work-dir", tmp_path / "runs", "--storage", "nosuchfs://bucket/x"),
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "--storage nosuchfs://bucket/x/s: unknown scheme nosuchfs://" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs" / "s").exists()


# ---------------------------------------------------------------------------------------- real clusters


@pytest.mark.slow
def test_node_lost_mid_trial_continues_from_its_checkpoint(tmp_path, local_cluster):
    """Kill every process of the worker node (raylet, Train worker) after the trial's first epoch: Train sees the
    worker group die, waits for a node, and the replacement node continues from the epoch-1 checkpoint."""
    cluster = local_cluster().start_head(num_cpus=0)  # the head schedules; only worker nodes can train
    node_a = cluster.add_node("a", num_cpus=1)
    epochs = 3
    space_file = write_space(tmp_path / "lost.yaml", "lost", train={"epochs": epochs})
    work, shared = tmp_path / "runs", tmp_path / "shared"
    log_path = tmp_path / "sweep.log"
    proc = start_sweep([space_file, "--work-dir", work, "--storage", shared, "--address", cluster.address], cluster.env, log_path)
    try:
        text = wait_for(log_path, proc, lambda t: any(" 1/3:" in l for l in progress(t, "epoch")), "the first epoch")
        killed_at = time.monotonic()
        assert cluster.kill_node(node_a) >= 2  # raylet and the Train worker at least
        cluster.add_node("b", num_cpus=1)  # the replacement (a real cluster's autoscaler or a restarted machine)
        proc.wait(timeout=420)
        finished_after = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log_path.read_text()
    assert proc.returncode == 0, text[-4000:]
    epoch_lines = progress(text, "epoch")
    assert [l.split(f"/{epochs}:")[0][-1] for l in epoch_lines] == ["1", "2", "3"], epoch_lines  # 2 comes after 1, once
    # Train restarted its worker, not Tune the trial: the trial's driver runs on the sweep driver's node, which lived
    assert len(progress(text, "start")) == 1 and "Trial task failed" not in text, text[-4000:]
    after_kill = text[text.index(epoch_lines[0]) + len(epoch_lines[0]):]
    print(f"node lost: trial finished {finished_after:.0f} s after the kill; what the terminal showed after epoch 1:\n"
          + "\n".join(l for l in after_kill.splitlines() if "synthetic FF++" not in l)[:3000])

    runs, record = trial_runs(work, "lost")
    assert len(runs) == 1
    assert_each_epoch_once(runs, record["tracking_uri"], epochs)
    # the checkpoints are on the shared storage, not in the driver's sweep folder
    assert list((shared / "lost" / "train").glob("train-*/checkpoint_*"))
    assert not (work / "lost" / "train").exists()


@pytest.mark.slow
def test_whole_cluster_restarted_then_resume_with_address_auto(tmp_path, local_cluster):
    """The headline: head, worker node and driver all SIGKILLed while the second trial trains; a new cluster;
    `run --resume --address auto` keeps the finished trial, continues the other from its checkpoint."""
    first = local_cluster().start_head(num_cpus=0)
    first.add_node("a", num_cpus=1)
    epochs = 5  # the progress line reaches the log an epoch or two late (tiny epochs): the kill must still land mid-training
    space_file = write_space(tmp_path / "restart.yaml", "restart", train={"epochs": epochs},
                             cases=[{"model.attention": "none"}, {"model.attention": "se", "model.placement": "1,2"}],
                             search={"max_concurrent": 1})
    work, shared = tmp_path / "runs", tmp_path / "shared"
    log_path = tmp_path / "first.log"
    env = {**first.env, "DFSEARCH_STORAGE": str(shared)}
    proc = start_sweep([space_file, "--work-dir", work, "--address", "auto"], env, log_path)
    try:
        # at once: a kill after the trial's test report would make it test again (and log test/* twice)
        wait_for(log_path, proc, lambda t: len(progress(t, "done")) == 1 and sum(" 1/5:" in l for l in progress(t, "epoch")) == 2,
                 "the second trial's first epoch")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver
        first.kill_all()  # and the cluster: head (GCS), both raylets, every worker
        killed_at_epoch_s = time.time()
        proc.wait(timeout=60)

    before, record = trial_runs(work, "restart")
    finished = before.loc[before["status"] == "FINISHED", ["run_id", "end_time"]]
    assert len(finished) == 1
    assert sorted(before["status"]) == ["FINISHED", "RUNNING"]  # what MLflow shows until the resume: nobody closed it

    second = local_cluster().start_head(num_cpus=0)
    second.add_node("a", num_cpus=1)
    t0 = time.monotonic()
    out = subprocess.run(cli(space_file, "--work-dir", work, "--resume", "--address", "auto"), env=second.env, cwd=REPO,
                         capture_output=True, text=True, timeout=420)
    resumed_in = time.monotonic() - t0
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    # (the kill lands after the second trial's first epoch; by then it may have checkpointed one or two more)
    assert "kept (finished)" in out.stdout and re.search(r"continues after epoch [1-4]\b", out.stdout), out.stdout
    # The project's own resume table, not Tune's missing-result.json warnings, which read as failures.
    assert "Could not fetch metrics" not in text and "FileNotFoundError" not in text, text[-4000:]
    print(f"whole cluster restarted: the resume took {resumed_in:.0f} s\n{out.stdout[:1500]}")

    after, _ = trial_runs(work, "restart")
    assert len(after) == 2  # no second run for the interrupted trial
    assert_each_epoch_once(after, record["tracking_uri"], epochs)
    # the finished trial was not rerun: nothing of its run was logged after the cluster died
    kept_id = finished["run_id"].iloc[0]
    assert max(ts for _, ts, _ in history(record["tracking_uri"], kept_id, "val/tcr")) / 1000 <= killed_at_epoch_s + 1


@pytest.mark.slow
def test_storage_not_shared_with_a_node_is_refused_before_any_trial(tmp_path, local_cluster):
    """The worker node sees its own empty copy of the storage folder (a machine whose disk is not the
    driver's): the sweep stops before any trial, saying which node cannot see it."""
    private = tmp_path / "node-local"
    private.mkdir()
    cluster = local_cluster().start_head(num_cpus=0)
    cluster.add_node("a", num_cpus=1, private=[str(private)])
    space_file = write_space(tmp_path / "unshared.yaml", "unshared", train={"epochs": 1})
    work = tmp_path / "runs"
    t0 = time.monotonic()
    out = subprocess.run(cli(space_file, "--work-dir", work, "--address", cluster.address),
                         env={**cluster.env, "DFSEARCH_STORAGE": str(private)}, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"storage {private}/unshared is not shared: 1 of 2 node(s) cannot read the file the driver wrote there" in out.stderr
    assert "Traceback" not in out.stderr
    print(f"refused in {time.monotonic() - t0:.0f} s: {out.stderr.strip()}")
    # nothing started: no Tune state, no MLflow run
    assert not storage.exists(str(private / "unshared" / "tune"))
    store = work / "mlflow.db"
    if store.exists():
        mlflow.set_tracking_uri(f"sqlite:///{store}")
        assert len(mlflow.search_runs(search_all_experiments=True)) == 0


STATE_API_FROM_A_WORKER = """
import ray
from dfsearch.tune import cluster

cluster.connect(None, num_cpus=1, log_to_driver=False)

@ray.remote(num_cpus=0)
def placement_groups():  # what Ray Train's placement-group cleaner (an actor of the trial) asks the state API
    from ray.util.state import list_placement_groups

    return len(list_placement_groups())

print("placement groups:", ray.get(placement_groups.remote()))
"""


@pytest.mark.slow
def test_a_local_clusters_workers_find_its_state_api_beside_another_ray_instance(ray_env, local_cluster):
    """With a second Ray instance on the machine (another sweep, another test process), Ray's state API guessed its
    cluster from the machine and gave up ("Found multiple active Ray instances"): Ray Train's placement-group cleaner
    could not tell that a trial ASHA stopped had ended, so its CPUs stayed held and the next trial's workers timed out.
    cluster.connect hands every worker of a local cluster the state API's address."""
    local_cluster().start_head(num_cpus=1)  # the other instance
    out = subprocess.run([sys.executable, "-c", STATE_API_FROM_A_WORKER], env=ray_env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "placement groups: 0" in out.stdout, out.stdout[-2000:]


@pytest.mark.slow
def test_fractional_gpus_pack_two_trials_on_one_logical_gpu(tmp_path, local_cluster):
    """A node with one logical GPU (`ray start --num-gpus=1` on this CPU machine) and CPUs for three trials: of three
    trials at 0.5 GPU, two train at the same time and the third waits for a half to be freed (the GPU, not the CPUs,
    binds); the loop itself runs on the CPU (gloo, no CUDA).  One sweep: each costs a driver's and Tune's start-up."""
    cluster = local_cluster().start_head(num_cpus=3, num_gpus=1)
    # 8 epochs: a trial's training (~0.5 s an epoch here) must outlast the jitter of the trials' Ray start-up
    space_file = write_space(tmp_path / "half.yaml", "half", train={"epochs": 8},
                             cases=[{"model.attention": "none"}, {"model.attention": "se", "model.placement": "1,2"},
                                    {"model.attention": "nonlocal", "model.placement": "3,4"}],
                             resources={"gpus_per_worker": 0.5}, search={"max_concurrent": 3})
    work = tmp_path / "runs"
    # Logical GPUs: NCCL cannot start without CUDA, so the sweep says gloo (dfsearch.tune.driver.TORCH_BACKEND_ENV).
    out = subprocess.run(cli(space_file, "--work-dir", work, "--address", cluster.address), env={**cluster.env, "DFSEARCH_TORCH_BACKEND": "gloo"},
                         cwd=REPO, capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs, record = trial_runs(work, "half")
    assert len(runs) == 3
    assert_each_epoch_once(runs, record["tracking_uri"], 8)
    assert set(runs["tags.dfsearch.gpus_per_trial"].astype(float)) == {0.5}
    spans = []
    for run_id in runs["run_id"]:
        (_, first_ts, _) = history(record["tracking_uri"], run_id, "val/tcr")[0]  # epoch 1
        (_, _, epoch_s) = history(record["tracking_uri"], run_id, "time/epoch_s")[0]
        (_, test_ts, _), = history(record["tracking_uri"], run_id, "test/tcr")
        spans.append((first_ts / 1000 - epoch_s, test_ts / 1000))  # training start .. test report (s)
    spans.sort()
    print("training spans (s):", [(round(a % 1000, 1), round(b % 1000, 1)) for a, b in spans])
    (a0, a1), (b0, b1), (c0, c1) = spans
    assert b0 < a1 - 1, spans  # 0.5 + 0.5: the second trained while the first still held its half
    assert c0 >= min(a1, b1) - 1, spans  # 0.5 + 0.5 + 0.5 > 1: the third waited for a half (timestamps are whole seconds)
