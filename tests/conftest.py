"""Shared fixtures: an isolated environment for tests that start a Ray cluster."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest


def _belongs_to(proc, ray_tmp: str) -> bool:
    # Command lines are no use (Ray renames its processes) and a few agents drop RAY_TMPDIR from their
    # environment, but every process of the cluster either inherited it or writes its logs under it.
    if proc.environ().get("RAY_TMPDIR") == ray_tmp:
        return True
    return any(f.path.startswith(ray_tmp) for f in proc.open_files())


def kill_ray_under(ray_tmp: str) -> int:
    """SIGKILL the processes of *one* test Ray cluster, found by its temp dir.  Unlike `ray stop`, this
    leaves any other Ray cluster on the machine alone."""
    import psutil

    killed = 0
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and _belongs_to(proc, ray_tmp):
                proc.kill()
                killed += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return killed


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory):
    """Environment for subprocesses that start or join Ray: an isolated Ray temp dir (short: Ray's socket
    paths have a length limit), a shared synthetic-data cache, the venv's scripts on PATH."""
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env |= {
        "RAY_TMPDIR": ray_tmp,
        "DFSEARCH_CACHE": str(tmp_path_factory.mktemp("cache")),
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    }
    yield env
    kill_ray_under(ray_tmp)


# --- real multi-node Ray clusters on loopback -------------------------------------------------------------

# The smallest sweep that trains for real: a narrow 3D ResNet-10 on a 3-pair synthetic tree (sweep tests build on it).
TINY = {
    "data": {"root": "synthetic", "synthetic_pairs": 3, "synthetic_frames": 24, "synthetic_size": 96, "clip_len": 8, "crop_size": 64, "num_workers": 0},
    "model": {"name": "resnet3d", "depth": 10, "widen_factor": 0.125, "conv1_t_size": 3},
    "optim": {"name": "adam"},
    "train": {"batch_size": 4, "amp": False},
    "eval": {"batch_size": 8},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}


NODE_TAG = "DFS_TEST_NODE"  # marks every process of one test node (raylet, agents, workers inherit it)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_node_processes(tag: str) -> int:
    """SIGKILL every process of one node of a test cluster (its raylet and all it started), nothing else."""
    import psutil

    # The tag is read from /proc/PID/environ, which Ray's renamed processes (workers, agents) overwrite with
    # their new title: take the tagged processes (raylet, ray start's helpers) and everything below them.
    doomed = {}
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(NODE_TAG) == tag:
                doomed[proc.pid] = proc
                doomed |= {child.pid: child for child in proc.children(recursive=True)}
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    for proc in doomed.values():
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return len(doomed)


class LocalCluster:
    """A real Ray cluster of several nodes on this machine: one `ray start --head` plus `ray start --address`
    per worker node, each node with its own ports and a tag in its environment so a test can kill exactly
    one node (or the whole cluster) without touching any other Ray on the machine.  Custom resources
    (``resources={"node_b": 1}``) let a search space pin work to a node; a node can also live in its own
    mount namespace with private folders (``private=[path]``), to stand for a machine that does not share
    those folders."""

    def __init__(self, env: dict, name: str):
        import secrets

        # Token auth with the cluster's own token: Ray >= 2.52 turns it on for any `ray start` that finds
        # ~/.ray/auth_token, which any local ray.init() on this machine may have written.  Drivers that join
        # this cluster must use self.env.
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.name = name
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[str] = []

    def _ray_start(self, tag: str, args: list[str], private: list[str] | None = None) -> None:
        import subprocess

        cmd = ["ray", "start", "--disable-usage-stats", f"--dashboard-agent-listen-port={free_port()}", *args]
        if private:  # a node that sees its own (empty) copy of these folders: unshare -m, tmpfs over each
            mounts = " && ".join(f"mount -t tmpfs none '{p}'" for p in private)
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{mounts} && exec \"$@\"", "sh", *cmd]
        out = subprocess.run(cmd, env={**self.env, NODE_TAG: tag}, capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        self.nodes.append(tag)

    @staticmethod
    def _resource_args(num_cpus: int, num_gpus: int, resources: dict | None) -> list[str]:
        import json

        args = [f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}"]
        return args + ([f"--resources={json.dumps(resources)}"] if resources else [])

    def start_head(self, num_cpus: int = 0, num_gpus: int = 0, resources: dict | None = None) -> "LocalCluster":
        self._ray_start(f"{self.name}-head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                                             *self._resource_args(num_cpus, num_gpus, resources)])
        return self

    def add_node(self, tag: str, num_cpus: int = 1, num_gpus: int = 0, resources: dict | None = None,
                 private: list[str] | None = None) -> str:
        tag = f"{self.name}-{tag}"
        self._ray_start(tag, [f"--address={self.address}", *self._resource_args(num_cpus, num_gpus, resources)], private)
        return tag

    def kill_node(self, tag: str) -> int:
        self.nodes.remove(tag)
        return kill_node_processes(tag)

    def kill_all(self) -> int:
        killed = sum(kill_node_processes(tag) for tag in self.nodes)
        self.nodes.clear()
        return killed


@pytest.fixture
def local_cluster(ray_env, request):
    """A factory of LocalClusters sharing the module's Ray temp dir; every node is killed afterwards."""
    made: list[LocalCluster] = []

    def make() -> LocalCluster:
        made.append(LocalCluster(ray_env, f"{request.node.name[:20]}-{len(made)}"))
        return made[-1]

    yield make
    for cluster in made:
        cluster.kill_all()


def paper_with_space(tmp_path: Path, space_file: Path, tables: tuple[str, ...]) -> Path:
    """A copy of the paper's tables whose `space:` is ``space_file`` for ``tables``: a cell is exactly the trial
    its table's space generates (or that trial's --smoke twin), so a test space stands in for the real one."""
    import yaml

    from dfsearch import report

    doc = yaml.safe_load(Path(report.PAPER_FILE).read_text())
    for key in tables:
        doc["tables"][key]["space"] = str(space_file)
    out = tmp_path / "paper.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def cheap_pretext(cache: str, family: str = "resnet3d") -> Path:
    """Write ``family``'s --smoke pretext weights into the data cache ``cache``, trained by a 1-epoch recipe on 4 videos
    a class (seconds), at the path the full recipe's file has: a test sweep's pretrained rows then load it instead of
    building it inside a trial (~25 s on 2 cores, twice the trial).  Returns the file."""
    from dfsearch import config, sweeps
    from dfsearch.data import pretext
    from dfsearch.models import registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFSEARCH_CACHE", cache)
        arch = config.from_flat(sweeps.smoke_flat({"model.name": family})).model.arch
        path = pretext.weights_path(family, arch)  # of the full recipe: the file a trial asks for
        path.parent.mkdir(parents=True, exist_ok=True)
        recipe = registry.get(family).pretext.recipe
        mp.setitem(recipe, "per_class", 4)
        mp.setitem(recipe, "epochs", 1)
        pretext.build_weights(family, arch, path)
    return path


# A tiny synthetic FF++ tree for one-trial tests of the frame detectors (tests/test_models_<name>.py).
TINY_FRAME = {
    "data.root": "synthetic", "data.synthetic_pairs": 3, "data.synthetic_frames": 24, "data.synthetic_size": 96,
    "data.clip_len": 1, "data.crop_size": 32, "data.num_workers": 0,
    "optim.name": "adam", "train.batch_size": 4, "train.amp": False, "eval.batch_size": 24, "train.epochs": 1,
    "protocol.name": "single:FaceSwap",
}


@pytest.fixture(scope="session")
def tiny_trial(tmp_path_factory):
    """``tiny_trial(model_flat, out_dir) -> (final test metrics, checkpoint state)``: one trial through
    ``dfsearch.train.train_loop`` on the tiny synthetic tree (generated once per session in a private cache)."""
    import torch

    from dfsearch import config, data
    from dfsearch.train.loop import LocalSession, train_loop

    cache = str(tmp_path_factory.mktemp("frame-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFSEARCH_CACHE", cache)
        data.ensure_prepared(config.from_flat(TINY_FRAME).data)

    def run(model_flat: dict, out: Path):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DFSEARCH_CACHE", cache)
            cfg = config.from_flat({**TINY_FRAME, **model_flat})
            final = train_loop(cfg, LocalSession(out))
        ckpt = sorted((out / "checkpoints").glob("epoch_*"))[-1]
        return final, torch.load(ckpt / "state.pt", weights_only=True)

    return run
