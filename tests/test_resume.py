"""What --resume keeps: a trial MLflow has as finished, with this very configuration (fast: no Ray cluster).

The end-to-end case (a SIGKILL while Tune's saved state lags behind MLflow) is
tests/test_sweep.py::test_sigkill_mid_sweep_then_resume."""

from __future__ import annotations

from conftest import TINY

from dfsearch import fingerprint, space
from dfsearch.tune.driver import KEPT_KEY, DriverSettings, finished_result


def settings_with(finished: dict) -> tuple[DriverSettings, dict]:
    spec = space.parse({"name": "res", **TINY, "cases": [{"model.attention": "none"}, {"model.attention": "se", "model.placement": "1,2"}]}, "res")
    return DriverSettings(train_storage="/tmp/unused", spec=spec, finished=finished), spec


def test_a_trial_finished_in_mlflow_is_handed_back_not_run():
    _, spec = settings_with({})
    trial_config = {space.CASE_KEY: 1}
    done = {"fingerprint": fingerprint.fingerprint(spec.resolve(trial_config)), "metrics": {"test/tcr": 75.0, "best/val/tcr": 80.0, "epoch": 5}}
    settings, _ = settings_with({"abc_00001": done})
    result = finished_result("abc_00001", trial_config, settings)
    assert result == {"test/tcr": 75.0, "best/val/tcr": 80.0, "epoch": 5, KEPT_KEY: True}


def test_a_trial_id_with_another_configuration_runs():
    """A sampled search may draw a different config under a trial id MLflow knows: that is a new trial."""
    _, spec = settings_with({})
    done = {"fingerprint": fingerprint.fingerprint(spec.resolve({space.CASE_KEY: 0})), "metrics": {"test/tcr": 75.0}}
    settings, _ = settings_with({"abc_00001": done})
    assert finished_result("abc_00001", {space.CASE_KEY: 1}, settings) is None
    assert finished_result("abc_00002", {space.CASE_KEY: 0}, settings) is None  # not finished in MLflow


def _checkpoint(folder, epochs: int, whole: bool = True) -> None:
    import json

    import torch

    folder.mkdir(parents=True)
    (folder / "history.json").write_text(json.dumps([{"epoch": e, "val/tcr": 50.0 + e} for e in range(1, epochs + 1)]))
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": epochs}, folder / "state.pt")
    if not whole:  # an upload the kill cut short
        (folder / "state.pt").write_bytes((folder / "state.pt").read_bytes()[:20])


def test_a_snapshot_cut_short_is_rebuilt_from_the_newest_whole_checkpoint(tmp_path):
    import json

    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import _CheckpointManagerState

    from dfsearch import ray_internals as RI
    from dfsearch.train.checkpoint import checkpointed_history, whole_history

    run = tmp_path / "train-abc_00001"
    _checkpoint(run / "checkpoint_2026-12-05_10-00-01.000000", 2)
    _checkpoint(run / "checkpoint_2026-12-05_10-00-02.000000", 3)
    _checkpoint(run / "checkpoint_2026-12-05_10-00-03.000000", 4, whole=False)
    snapshot = run / RI.SNAPSHOT_FILE
    snapshot.write_text("")  # killed while Ray wrote it
    note = RI.repair_snapshot(str(run), whole_history)
    assert note and "epoch 3" in note
    state = _CheckpointManagerState.parse_obj(json.loads(snapshot.read_text()))  # what Ray loads on resume (as Ray does)
    assert state.latest_checkpoint_result.checkpoint_dir_name == "checkpoint_2026-12-05_10-00-02.000000"
    assert state.checkpoint_report_indices == [2] and state.current_report_index == 3
    assert [row["epoch"] for row in checkpointed_history(str(run))] == [1, 2, 3]  # what MLflow catches up from
    assert RI.repair_snapshot(str(run), whole_history) is None  # a whole snapshot is left alone
    assert not (run / (RI.SNAPSHOT_FILE + ".tmp")).exists()


def test_a_snapshot_cut_short_without_a_whole_checkpoint_is_set_aside(tmp_path):
    from dfsearch import ray_internals as RI
    from dfsearch.train.checkpoint import whole_history

    run = tmp_path / "train-abc_00002"
    _checkpoint(run / "checkpoint_2026-12-05_10-00-01.000000", 1, whole=False)
    (run / RI.SNAPSHOT_FILE).write_text('{"ray_version": "2.6')
    note = RI.repair_snapshot(str(run), whole_history)
    assert note and "starts again" in note
    assert not (run / RI.SNAPSHOT_FILE).exists() and (run / (RI.SNAPSHOT_FILE + ".cut-short")).read_text() == '{"ray_version": "2.6'
    assert RI.repair_snapshot(str(tmp_path / "train-none"), whole_history) is None  # no snapshot: nothing to do
