"""What of the container set-up can run without a Docker engine: the entrypoint's roles for real on this machine
(an MLflow server on a real PostgreSQL with served artifacts; a token-protected `ray start` head, a worker node
joining it, and a sweep submitted to them), and the consistency of the Dockerfile and the compose file."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import free_port, kill_ray_under

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def roles() -> set[str]:
    return set(re.findall(r"^  ([a-z|-]+)\)$", ENTRYPOINT.read_text(), flags=re.M)) - {"*"}


def test_entrypoint_is_valid_bash_and_documents_its_roles():
    assert subprocess.run(["bash", "-n", str(ENTRYPOINT)]).returncode == 0
    out = subprocess.run([str(ENTRYPOINT), "help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for role in ("head", "worker", "run", "prepare", "mlflow"):
        assert role in roles()
        assert re.search(rf"^\s*{role}\b", out.stdout, flags=re.M), out.stdout
    assert "set -euo" not in out.stdout  # the help is the header comment, nothing past it


def test_compose_and_dockerfile_agree_with_the_repo():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "mlflow", "ray-head", "ray-worker"}
    for name in ("mlflow", "ray-head", "ray-worker"):
        assert services[name]["command"][0] in roles(), name
    # MLflow on PostgreSQL, artifacts in their own volume, served by MLflow itself
    mlflow_env = services["mlflow"]["environment"]
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://mlflow:")
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert "--serve-artifacts" in ENTRYPOINT.read_text()
    assert any(v.endswith(":/mlartifacts") for v in services["mlflow"]["volumes"])
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # nothing published beyond localhost (MLflow UI and Ray dashboard: SSH tunnel); the workers scale (no host ports)
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    worker = services["ray-worker"]
    assert "ports" not in worker and "container_name" not in worker
    assert worker["environment"]["RAY_HEAD_ADDRESS"] == "ray-head:6379"
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    # head and workers: one token, the MLflow server, and the same runs and cache volumes (checkpoints, face cache)
    for name in ("ray-head", "ray-worker"):
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")
        assert env["DFSEARCH_STORAGE"] == "/runs"
        mounts = {v.split(":")[-1] for v in services[name]["volumes"]}
        assert {"/runs", "/cache"} <= mounts
    assert {"pgdata", "mlartifacts", "runs", "cache"} <= set(compose["volumes"])
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"Dockerfile copies {path}, which does not exist"
    assert "dfsearch-entrypoint" in dockerfile and "psycopg[binary]" in dockerfile


# ------------------------------------------------------------------------------- MLflow server on PostgreSQL


def _pg_bin() -> Path | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None)
    return Path(found).resolve().parent if found else None  # the real bin folder (Debian links a few into /usr/local/bin)


@pytest.fixture
def postgres(tmp_path):
    """A throwaway PostgreSQL server (initdb in tmp, trust auth on 127.0.0.1, a free port), removed afterwards.
    Skips when the server binaries (Debian: apt-get install postgresql) or psycopg are not installed."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server here (initdb not found; Debian: apt-get install postgresql)")
    # SQLAlchemy 2.1 (MLflow's store) reaches postgresql:// through psycopg 3
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'psycopg[binary]')")
    # /tmp directly (pytest's tmp_path is private to root), short (the server's socket path has a length limit)
    data = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use its own system user
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            pytest.skip("running as root without a 'postgres' user to run the server as")
        shutil.chown(data, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    init = subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8"],
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stdout + init.stderr
    start = subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(data / "server.log"),
                            "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"], capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"], check=True, timeout=60)
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def _get(url: str, host: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # not listening (yet)
        return 0


@pytest.mark.slow
def test_mlflow_role_on_postgresql_serves_runs_and_artifacts(tmp_path, postgres):
    """`entrypoint.sh mlflow` as compose runs it: backend store on PostgreSQL, artifacts uploaded through the
    server into the artifact volume; the Host header other containers send (mlflow:5000) is accepted."""
    port = free_port()
    artifacts = tmp_path / "mlartifacts"
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": postgres, "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
           "MLFLOW_PORT": str(port), "MLFLOW_HOST": "127.0.0.1", "MLFLOW_HOME": str(tmp_path / "home"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(tmp_path / "mlflow.log", "w")
    server = subprocess.Popen([str(ENTRYPOINT), "mlflow", "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # a loaded 2-core machine: see test_tracking_outbox.start_server
        while _get(f"{url}/health") != 200:
            assert server.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the MLflow server did not answer /health in 240 s"
            time.sleep(0.5)
        client = mlflow.MlflowClient(url)
        exp = client.create_experiment("compose")
        run = client.create_run(exp, tags={"dfsearch.sweep": "compose"})
        client.log_metric(run.info.run_id, "val/tcr", 75.0, step=1)
        (tmp_path / "table.md").write_text("| a |\n")
        client.log_artifact(run.info.run_id, str(tmp_path / "table.md"), "report")
        client.set_terminated(run.info.run_id)
        assert client.get_run(run.info.run_id).info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
        assert [p.path for p in client.list_artifacts(run.info.run_id, "report")] == ["report/table.md"]
        assert list(artifacts.rglob("table.md"))  # landed in the artifact volume, uploaded over HTTP
        search = f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=compose"
        assert _get(search, host=f"mlflow:{port}") == 200  # how the head and workers address it
        assert _get(search, host="evil.example.com") == 403  # DNS-rebinding guard still on
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 9)  # the whole group: uvicorn and MLflow's job consumers outlive the entrypoint
        server.wait(timeout=30)
    import psycopg

    with psycopg.connect(postgres) as conn:  # the run is in PostgreSQL, not in a file next to the server
        cur = conn.cursor()
        cur.execute("SELECT count(*), min(status) FROM runs")
        assert cur.fetchone() == (1, "FINISHED")
        cur.execute("SELECT value FROM metrics WHERE key = 'val/tcr'")
        assert cur.fetchall() == [(75.0,)]


# ------------------------------------------------------------------- Ray head + worker + run, token auth


@pytest.mark.slow
def test_head_worker_and_run_roles_with_token_auth(tmp_path, ray_env):
    """`entrypoint.sh head` starts a token-protected head without CPUs, `entrypoint.sh worker` joins it as a second
    node (the one that can train), and `entrypoint.sh run` submits a one-trial sweep (--address auto) whose
    worker finds the driver's data cache and writes its checkpoints to DFSEARCH_STORAGE."""
    gcs_port = free_port()
    env = {**ray_env, "DFSEARCH_DETACH": "1", "RAY_PORT": str(gcs_port), "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "DFSEARCH_STORAGE": str(tmp_path / "shared")}
    env.pop("RAY_AUTH_MODE", None)  # the entrypoint turns token mode on when it sees a token
    try:
        head = subprocess.run([str(ENTRYPOINT), "head"], env={**env, "RAY_START_ARGS": "--num-cpus=0 --include-dashboard=false"},
                              capture_output=True, text=True, timeout=180)
        assert head.returncode == 0, head.stderr[-2000:]
        worker = subprocess.run([str(ENTRYPOINT), "worker"], env={**env, "RAY_HEAD_ADDRESS": f"127.0.0.1:{gcs_port}",
                                "RAY_START_ARGS": f"--num-cpus=1 --dashboard-agent-listen-port={free_port()}"},
                                capture_output=True, text=True, timeout=180)
        assert worker.returncode == 0, worker.stderr[-2000:]
        # a client with another token is turned away
        wrong = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        denied = subprocess.run(["ray", "status", "--address", f"127.0.0.1:{gcs_port}"], env=wrong, capture_output=True, text=True, timeout=120)
        assert denied.returncode != 0 and "InvalidAuthToken" in denied.stdout + denied.stderr, denied.stderr[-2000:]
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
        mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
        runs = mlflow.search_runs(experiment_names=["one"], filter_string="tags.`dfsearch.role` = 'trial'")
        assert len(runs) == 1 and runs["status"].iloc[0] == "FINISHED"
        assert 0 <= runs["metrics.test/tcr"].iloc[0] <= 100
        assert list((tmp_path / "shared" / "one" / "train").glob("train-*/checkpoint_*"))
    finally:
        kill_ray_under(ray_env["RAY_TMPDIR"])
