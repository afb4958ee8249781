"""The `run` command before anything runs: --dry-run, --help, bad input and an unreachable store, each in seconds."""

import subprocess
import sys
from pathlib import Path

from dfsearch import space

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "dfsearch.run", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_dry_run_and_help(tmp_path):
    out = run_cli("search_spaces/smoke.yaml", "--dry-run")
    assert out.returncode == 0, out.stderr
    trials = space.load(REPO / "search_spaces" / "smoke.yaml").trial_count()
    assert f"{trials} trial(s)" in out.stdout and "nonlocal" in out.stdout and "1 CPU, 0 GPU" in out.stdout
    help_text = run_cli("--help").stdout
    for flag in ("--resume", "--dry-run", "--address", "--tracking-uri", "--experiment", "--work-dir", "--name", "--num-cpus", "--debug"):
        assert flag in help_text


def test_cli_bad_input_is_one_line_without_traceback(tmp_path):
    bad = write(tmp_path, "model.attention: nonlocal\nmodel.placement: '1,9'\n")
    out = run_cli(str(bad), "--work-dir", str(tmp_path / "runs"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ") and "model.placement" in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing written before the config is valid


def test_cli_unreachable_mlflow_server_fails_before_anything_runs(tmp_path):
    out = run_cli("search_spaces/smoke.yaml", "--work-dir", str(tmp_path / "runs"), "--tracking-uri", "http://127.0.0.1:1")
    assert out.returncode == 2
    assert "cannot use the MLflow tracking store at http://127.0.0.1:1" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()
