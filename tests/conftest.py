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
