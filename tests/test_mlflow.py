"""A smoke-sized sweep on a real local Ray cluster, read back from its real MLflow store: one parent run per
sweep, readable child runs with the dataset input, config / score / plot artifacts, the best model as an MLflow
model that ``mlflow.pytorch.load_model`` loads and ``dfsearch.predict`` scores with the trial's own test
probability; Ray Train's checkpoint snapshot has the fields dfsearch reads; a resume keeps one parent and one
child per trial.  Run it under ``flock /tmp/dfsearch-heavy.lock`` (it starts Ray twice; ~2-3 min on 2 cores).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from dfsearch import ray_internals as RI

REPO = Path(__file__).resolve().parents[1]

SPACE = {
    "name": "ui",
    "description": "two tiny trials for the MLflow UI test",
    "paper": {"table": "II", "cell": "{model.attention}"},
    "data": {"root": "synthetic", "synthetic_pairs": 3, "synthetic_frames": 24, "synthetic_size": 96, "clip_len": 8, "crop_size": 64,
             "num_workers": 0},
    "protocol.name": "single:DF",
    "model": {"name": "resnet3d", "depth": 10, "widen_factor": 0.125, "conv1_t_size": 3},
    "optim": {"name": "adam"},
    "train": {"batch_size": 4, "amp": False, "epochs": 2},
    "eval": {"batch_size": 8},
    "resources": {"workers": 1, "cpus_per_worker": 1},
    "search": {"max_concurrent": 2},
    "cases": [{"model.attention": "none"}, {"model.attention": "nonlocal", "model.placement": "2,3"}],
}
PNG = b"\x89PNG\r\n\x1a\n"


def cli(module: str, args, env, timeout=600, cwd=REPO):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> list[str]:
    out = []
    for f in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, f.path) if f.is_dir else [f.path]
    return out


@pytest.mark.slow
def test_smoke_sweep_mlflow_and_predict(tmp_path, ray_env, monkeypatch):
    """One two-trial sweep, everything a user then sees: the summary table, the MLflow layout, tags and artifacts,
    the best model, predict with it, and the same command again (one sweep: each costs minutes on 2 cores)."""
    space = tmp_path / "ui.yaml"
    space.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    work = tmp_path / "runs"
    # a relative --work-dir, as users type it (Ray itself only takes absolute storage paths)
    out = cli("dfsearch.run", [space, "--work-dir", "runs", "--num-cpus", "2"], ray_env, timeout=420, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for noise in ("invalid value", "best model not logged", "cannot read Ray Train"):
        assert noise not in out.stdout + out.stderr, out.stderr[-2000:]
    assert "mlflow ui --backend-store-uri sqlite:///" in out.stdout
    # the summary table marks the trial the search picked: the best val/tcr (the default search.metric)
    table = out.stdout[out.stdout.index("sweep 'ui' finished"):]
    assert "test_tcr" in table and table.count("<- best val/tcr") == 1 and "SYNTHETIC" in table.splitlines()[0]
    best_row = next(line for line in table.splitlines() if "<- best" in line)

    record = json.loads((work / "ui" / "sweep.json").read_text())
    uri = record["tracking_uri"]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(record["experiment"])
    # Artifacts live in the sweep's folders, not in ./mlruns of the working directory.
    assert exp.artifact_location.startswith((work / "ui").resolve().as_uri()), exp.artifact_location
    assert not (tmp_path / "mlruns").exists() and not (REPO / "mlruns").exists()
    # MLflow opens the experiment as model training (not GenAI)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"

    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("dfsearch.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("dfsearch.role") == "trial"]
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "sweep ui"
    assert set(artifact_paths(client, parent.info.run_id)) >= {"space/ui.yaml", "trials.csv"}

    names = set()
    for run in children:
        tags = run.data.tags
        assert run.info.status == "FINISHED" and tags["dfsearch.outcome"] == "tested"
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["mlflow.source.name"] == str(space.resolve())
        assert re.fullmatch(r"[0-9a-f]{16}", tags["dfsearch.fingerprint"])
        assert tags["dfsearch.face_detector"] == "opencv" and tags["dfsearch.failed_videos"].isdigit()
        assert tags["dfsearch.paper_cell"] == run.data.params["model.attention"] and tags["dfsearch.synthetic"] == "true"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/tcr")] == [1, 2]
        names.add(run.info.run_name)
        (dataset,) = run.inputs.dataset_inputs
        assert dataset.dataset.name == "synthetic FF++ c40 single:Deepfakes"
        profile = json.loads(dataset.dataset.profile)
        assert profile["protocol"] == "single:Deepfakes" and profile["compression"] == "c40" and profile["fingerprint"]
        files = artifact_paths(client, run.info.run_id)
        assert {"config/trial.yaml", "test/scores.csv", "test/roc.png", "test/score_hist.png"} <= set(files), files
        local = Path(client.download_artifacts(run.info.run_id, "test", str(tmp_path / run.info.run_id)))
        assert (local / "roc.png").read_bytes()[:8] == PNG and (local / "score_hist.png").read_bytes()[:8] == PNG
        scores = (local / "scores.csv").read_text().splitlines()
        assert scores[0] == "video_id,label,prob_fake,predicted" and len(scores) - 1 == run.data.metrics["test/videos"]
    assert names == {"resnet3d-10 · single:Deepfakes · seed 0", "nonlocal@2,3 · single:Deepfakes · seed 0"}

    # Ray Train's checkpoint snapshot of each trial still has the fields ray_internals reads.
    for train_run in sorted((work / "ui" / "train").glob("train-*")):
        raw = json.loads((train_run / RI.SNAPSHOT_FILE).read_text())
        assert raw["latest_checkpoint_result"]["checkpoint_dir_name"] and raw["ray_version"]
        snap = RI.read_snapshot(train_run)
        assert (train_run / snap.latest_checkpoint_dir / "history.json").is_file()

    # The best trial on validation carries an MLflow model; mlflow.pytorch.load_model returns the detector.
    model_uri = parent.data.tags["dfsearch.best_model"]
    best = client.get_run(parent.data.tags["dfsearch.best_run"])
    assert best.data.tags["dfsearch.logged_model"] == model_uri and best.info.status == "FINISHED"
    assert best.data.tags["dfsearch.trial_id"] in best_row  # the table's pick is the parent's best run
    assert parent.data.tags["dfsearch.best_run_id"] == best.info.run_id
    assert parent.data.metrics["best_trial/test/tcr"] == best.data.metrics["test/tcr"]
    assert best.data.metrics["best/val/tcr"] == max(r.data.metrics["best/val/tcr"] for r in children)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # ... named for what it is, carrying the trial's test metrics (the Models tab); counts are not per-epoch curves
    logged = client.get_logged_model(model_uri.removeprefix("models:/"))
    assert logged.name == re.sub(r"^(?!resnet3d)", "resnet3d ", best.info.run_name).replace(":", "-"), logged.name
    on_model = {m.key: m for m in logged.metrics}
    assert on_model["test/tcr"].value == best.data.metrics["test/tcr"] and on_model["test/auc"].value == best.data.metrics["test/auc"]
    assert on_model["test/tcr"].dataset_name == "synthetic FF++ c40 single:Deepfakes"
    assert len(client.get_metric_history(best.info.run_id, "test/tcr")) == 1  # the run's own history is unchanged
    for run in children:
        assert not {"val/videos", "val/videos_expected", "best/val/videos"} & set(run.data.metrics), sorted(run.data.metrics)
        assert re.fullmatch(r"\d+/\d+", run.data.tags["dfsearch.val_videos"])
        assert len(client.get_metric_history(run.info.run_id, "test/videos")) == 1
    module = mlflow.pytorch.load_model(model_uri)
    import torch

    assert module(torch.zeros(1, 3, 8, 64, 64)).shape == (1, 2)
    maps = [f for f in artifact_paths(client, best.info.run_id) if f.startswith("explain/")]
    if best.data.params["model.attention"] == "nonlocal":
        assert len(maps) == 1 and maps[0].endswith(".nonlocal.png"), maps
    else:
        assert maps == []

    # The trial's config artifact is a trial config again.
    cfg_file = Path(client.download_artifacts(best.info.run_id, "config/trial.yaml", str(tmp_path / "cfg")))
    from dfsearch import config

    doc = yaml.safe_load(cfg_file.read_text())
    cfg = config.from_flat({f"{s}.{k}": v for s, values in doc.items() for k, v in values.items()})
    assert cfg.protocol.name == "single:Deepfakes" and cfg.model.name == "resnet3d"

    # predict, with the logged model and with the run id, gives the trial's test probability for a test video.
    local = Path(client.download_artifacts(best.info.run_id, "test/scores.csv", str(tmp_path / "best")))
    from dfsearch import data
    from dfsearch.tracking.run_view import read_scores_csv

    expected = read_scores_csv(local)
    monkeypatch.setenv("DFSEARCH_CACHE", ray_env["DFSEARCH_CACHE"])
    paths = {v.video_id: str(v.path) for v in data.load_prepared(cfg.data)[2]}
    video_id = sorted(expected)[0]
    for ref in (model_uri, best.info.run_id):
        out = cli("dfsearch.predict", [paths[video_id], "--model", ref, "--tracking-uri", uri, "--json"], ray_env, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        (row,) = json.loads(out.stdout)
        assert row["prob_fake"] == pytest.approx(expected[video_id][1], abs=1e-4), (ref, row)

    # Resume of the finished sweep: nothing to continue, said without starting Ray; still one parent and one child per trial.
    ray_sessions = lambda: set((Path(ray_env["RAY_TMPDIR"]) / "ray").glob("session_2*"))  # noqa: E731 - one per Ray started
    sessions = ray_sessions()
    again = cli("dfsearch.run", [space, "--work-dir", work, "--num-cpus", "2", "--resume"], ray_env, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "nothing to resume: sweep 'ui' has finished" in again.stdout and "resuming sweep" not in again.stdout, again.stdout
    assert all(r.data.tags["dfsearch.trial_id"] in again.stdout for r in children)
    assert sessions and ray_sessions() == sessions
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags.get("dfsearch.role") for r in runs) == ["sweep", "trial", "trial"]
    assert {r.info.status for r in runs} == {"FINISHED"}

    # The same command again: nothing to run, the sweep's trials and its report, exit 0, nothing touched.
    ends = {r.info.run_id: r.info.end_time for r in runs}
    again = cli("dfsearch.run", [space, "--work-dir", work], ray_env, timeout=120)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "nothing to run: sweep 'ui' has finished" in again.stdout
    assert all(r.data.tags["dfsearch.trial_id"] in again.stdout for r in children)
    assert {r.info.run_id: r.info.end_time for r in client.search_runs([exp.experiment_id])} == ends
    # A changed space under the same name is refused with what to do; so is --rerun.
    changed = cli("dfsearch.run", [space, "--work-dir", work, "--set", "train.epochs=3"], ray_env, timeout=120)
    assert changed.returncode == 2 and "2 trial(s) it never ran" in changed.stderr and "--name NEW" in changed.stderr
    rerun = cli("dfsearch.run", [space, "--work-dir", work, "--rerun"], ray_env, timeout=120)
    assert rerun.returncode == 2 and "--name NEW" in rerun.stderr


def test_unreadable_snapshot_is_a_warning_that_says_what_may_be_missing(tmp_path, caplog):
    """No snapshot (a trial before its first checkpoint) is normal and quiet; a snapshot in a format this Ray
    pin does not know is a WARNING naming the file, the Ray that wrote it and what a resume may lose."""
    run = tmp_path / "train-abc_00000"
    run.mkdir()
    with caplog.at_level("INFO", logger="dfsearch.ray_internals"):
        assert RI.read_snapshot(run) is None
    assert caplog.records == []
    (run / RI.SNAPSHOT_FILE).write_text(json.dumps({"ray_version": "9.1.0", "latest": {"dir": "checkpoint_x"}}))
    with caplog.at_level("WARNING", logger="dfsearch.ray_internals"):
        assert RI.read_snapshot(run) is None
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    for text in (RI.SNAPSHOT_FILE, "Ray 9.1.0", f"{RI.TESTED_RAY_SERIES}.x", "may be missing from its MLflow run"):
        assert text in record.getMessage()
    from dfsearch.train.checkpoint import checkpointed_history

    assert checkpointed_history(str(run)) == []  # a resume goes on without the history
