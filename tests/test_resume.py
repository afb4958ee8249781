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
