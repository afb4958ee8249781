"""What of the container set-up can run without a Docker engine: the entrypoint's roles against a real
`ray start` cluster on this machine, and the consistency of the Dockerfile and compose file."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import kill_ray_under

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def roles() -> set[str]:
    return set(re.findall(r"^  ([a-z|-]+)\)$", ENTRYPOINT.read_text(), flags=re.M)) - {"*"}


def test_entrypoint_is_valid_bash_and_documents_its_roles():
    assert subprocess.run(["bash", "-n", str(ENTRYPOINT)]).returncode == 0
    out = subprocess.run([str(ENTRYPOINT), "help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for role in ("head", "worker", "run", "prepare", "mlflow"):
        assert role in roles()
        assert re.search(rf"^\s*{role}\b", out.stdout, flags=re.M), out.stdout


def test_compose_and_dockerfile_agree_with_the_repo():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"mlflow", "ray-head", "ray-worker"}
    for name, service in services.items():
        assert service["command"][0] in roles(), name
    assert services["ray-worker"]["environment"]["RAY_HEAD_ADDRESS"] == "ray-head:6379"
    assert services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["ray-head"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"Dockerfile copies {path}, which does not exist"
    assert "dfsearch-entrypoint" in dockerfile


@pytest.mark.slow
def test_head_role_then_run_role_on_a_ray_start_cluster(tmp_path, ray_env):
    """`entrypoint.sh head` starts a real cluster with `ray start`; `entrypoint.sh run` joins it (--address auto) and
    runs a one-trial sweep whose workers find the driver's data cache."""
    # free ports, so a Ray cluster or anything else already on this machine cannot collide with the test's
    gcs_port, dashboard_port = free_port(), free_port()
    env = {**ray_env, "DFSEARCH_DETACH": "1", "RAY_PORT": str(gcs_port),
           "RAY_START_ARGS": f"--num-cpus=2 --include-dashboard=true --dashboard-port={dashboard_port}"}
    try:
        head = subprocess.run([str(ENTRYPOINT), "head"], env=env, capture_output=True, text=True, timeout=180)
        assert head.returncode == 0, head.stderr[-2000:]
        space_file = tmp_path / "one.yaml"
        space_file.write_text(yaml.safe_dump({
            "name": "one",
            "data": {"root": "synthetic", "synthetic_pairs": 3, "synthetic_frames": 24, "synthetic_size": 96,
                     "clip_len": 8, "crop_size": 64, "num_workers": 0},
            "model": {"depth": 10, "widen_factor": 0.125, "conv1_t_size": 3},
            "train": {"epochs": 1, "batch_size": 4, "amp": False},
        }))
        work = tmp_path / "runs"
        out = subprocess.run([str(ENTRYPOINT), "run", str(space_file), "--work-dir", str(work)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        mlflow.set_tracking_uri(f"sqlite:///{work / 'one' / 'mlflow.db'}")
        runs = mlflow.search_runs(experiment_names=["one"])
        assert len(runs) == 1 and runs["status"].iloc[0] == "FINISHED"
        assert 0 <= runs["metrics.test/tcr"].iloc[0] <= 100
    finally:
        kill_ray_under(ray_env["RAY_TMPDIR"])
