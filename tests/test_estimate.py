"""The sweep estimate's arithmetic (dfsearch.estimate + dfsearch.overhead) and the report's estimate-vs-measured
hours, with hand-made numbers: no Ray, no training."""

from __future__ import annotations

import pytest

from dfsearch import config, estimate, fingerprint, overhead
from dfsearch.errors import ConfigError
from dfsearch.report import hours, render
from dfsearch.report.runs import RunRecord


def full(**flat):
    return fingerprint.canonical({**config.default_flat(), "data.root": "synthetic", "data.synthetic_pairs": 5, "data.synthetic_frames": 16,
                                  "train.epochs": 2, **flat})


def machine(**family):
    o = overhead.FamilyOverhead(**({"startup_s": 10.0, "data_wait": 0.2, "eval_factor": 2.0, "tflops": 1.0} | family))
    return overhead.Machine("test-box", "cpu", True, {"machine": "box", "command": "bench", "date": "2026-01-01"}, 5.0,
                            {full()["model.name"]: o})


def test_a_trial_is_startup_plus_steps_slowed_by_batch_waits_plus_evaluation_scaled():
    f = full()
    train, evals = estimate.trial_gflop(f)
    t = estimate.trial(f, machine())
    assert t.measured and t.compute_s == pytest.approx((train + evals) / 1e3)  # at the machine's 1 TFLOP/s
    assert t.total_s == pytest.approx(10.0 + train / 1e3 / 0.8 + 2.0 * evals / 1e3)


def test_synthetic_sizes_follow_the_config_and_epochs_scale_training_and_validation():
    videos, frames = estimate.sizes(full())
    assert frames == 16 and videos == {"train": 2 * 3 * 5, "val": 2 * 1 * 5, "test": 2 * 1 * 5}  # 5 pairs: 3/1/1, 'all': real + 4 fakes
    one, two = estimate.trial_gflop(full(), 1), estimate.trial_gflop(full(), 2)
    assert two[0] == pytest.approx(2 * one[0])
    g = estimate.eval_gflops(full(), 16)
    assert two[1] - one[1] == pytest.approx(videos["val"] * g)  # one more validation pass over every val video


def frame_model(**flat):
    """A per-frame detector (MesoNet) on the same synthetic sizes as :func:`full`."""
    base = {k: v for k, v in config.default_flat().items() if not k.startswith("model.")}
    return fingerprint.canonical({**base, "model.name": "meso4", "data.crop_size": 64, "data.root": "synthetic",
                                  "data.synthetic_pairs": 5, "data.synthetic_frames": 16, "train.epochs": 2, **flat})


def test_val_frames_prices_a_per_frame_detectors_validation_on_those_frames_only():
    meso, few = frame_model(), frame_model(**{"eval.val_frames": 4})
    videos, frames = estimate.sizes(meso)
    g = estimate.eval_gflops(meso, 1)  # one frame
    assert estimate.trial_gflop(meso)[1] - estimate.trial_gflop(few)[1] == pytest.approx(2 * videos["val"] * (frames - 4) * g)
    assert estimate.trial_gflop(few)[0] == estimate.trial_gflop(meso)[0]  # training unchanged
    r3d = full()
    assert estimate.trial_gflop(full(**{"eval.val_frames": 4})) == estimate.trial_gflop(r3d)  # trunks: ignored


def test_val_frames_at_its_default_keeps_the_fingerprint_of_runs_logged_before_it_existed():
    now = frame_model()
    before = {k: v for k, v in now.items() if k != "eval.val_frames"}  # a run's params from before the setting
    assert now["eval.val_frames"] == 0
    assert fingerprint.of_canonical(now) == fingerprint.of_canonical(before)
    assert fingerprint.of_canonical(frame_model(**{"eval.val_frames": 8})) != fingerprint.of_canonical(now)


def test_a_sweep_adds_its_start_once_and_says_where_the_numbers_come_from():
    m = machine()
    fulls = [full(), full(**{"train.seed": 1})]
    s = estimate.sweep(fulls, m)
    trials = [estimate.trial(f, m) for f in fulls]
    assert s.total_h * 3600 == pytest.approx(5.0 + sum(t.total_s for t in trials))
    assert s.compute_h * 3600 == pytest.approx(sum(t.compute_s for t in trials))
    text = s.describe("h")
    assert text.startswith(f"estimate of the sweep: {s.total_h:.3g} h (compute lower bound {s.compute_h:.3g}, overhead ")
    assert "test-box: measured 2026-01-01 on box by `bench`" in text


def test_an_unmeasured_machine_adds_nothing_and_says_it_is_a_lower_bound():
    m = overhead.Machine("gpu-box", "cuda", False, {"note": "no GPU run yet"})
    s = estimate.sweep([full()], m)
    assert s.overhead_h == 0 and s.unmeasured == [full()["model.name"]]
    videos, frames = estimate.sizes(full())
    assert s.compute_h == pytest.approx(estimate.gpu_hours(full(), split_videos=videos, frames_per_video=frames))  # the family's H200 rate
    assert "overhead not measured on gpu-box, so this is a lower bound: no GPU run yet" in s.describe()


def test_calibrating_from_timings_makes_the_estimate_reproduce_the_sweep():
    """Timings made by the model itself (two trials one after another, the second's run opened while the first
    trained, as Tune opens them) come back as the same numbers, and the estimate then gives the sweep's wall time."""
    m = machine()
    o = m.families[full()["model.name"]]
    timings, clock = [], 100.0
    for f in (full(), full(**{"train.seed": 1})):
        train, evals = estimate.trial_gflop(f)
        train_s = train / 1e3 / (1 - o.data_wait)
        eval_s = o.eval_factor * evals / 1e3
        test_s = eval_s / 3  # any split of the evaluation time between validation and test
        epoch_s = train_s + eval_s - test_s
        end = clock + o.startup_s + epoch_s + test_s
        timings.append(overhead.TrialTiming("resnet3d", start_s=100.0, end_s=end, train_s=train_s, data_wait_s=o.data_wait * train_s,
                                            epoch_s=epoch_s, test_s=test_s, train_tflop=train / 1e3, eval_tflop=evals / 1e3))
        clock = end
    wall = clock - 100.0 + 5.0
    got = overhead.calibrate(timings, wall, "test-box", "cpu", {"date": "2026-01-01"})
    g = got.families["resnet3d"]
    assert (g.startup_s, g.data_wait, g.eval_factor, g.tflops, got.sweep_s) == pytest.approx((10.0, 0.2, 2.0, 1.0, 5.0))
    assert estimate.sweep([full(), full(**{"train.seed": 1})], got).total_h * 3600 == pytest.approx(wall)


def test_overhead_files_round_trip_and_name_their_machine(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(overhead.dump(machine()))
    assert overhead.load(str(path)) == overhead.load(f"{path}#test-box") == machine()
    with pytest.raises(ConfigError, match="no machine 'other'"):
        overhead.load(f"{path}#other")


def test_the_shipped_file_marks_the_gpu_unmeasured_and_the_cpu_entry_with_its_source():
    gpu, cpu = overhead.load(None, "cuda"), overhead.load(None, "cpu")
    assert gpu.device == "cuda" and not gpu.measured and not gpu.families  # no GPU number is invented
    assert cpu.measured and cpu.device == "cpu" and {"machine", "command", "date"} <= set(cpu.source)
    assert all(o.tflops and 0 <= o.data_wait < 1 and o.startup_s >= 0 for o in cpu.families.values())


def record(hours_, *, gpus=None, cpus=None, status="FINISHED", outcome="tested", value=80.0):
    return RunRecord(run_id="r", experiment="e", status=status, outcome=outcome, start_ms=1, end_ms=1 + int(hours_ * 3.6e6), sweep="s",
                     trial_id="t", config={"model.name": "m"}, fingerprint="f", seed_group="g", synthetic=True, smoke=True, value=value,
                     gpus=gpus, cpus=cpus)


def test_the_report_sets_the_estimate_beside_the_measured_hours_of_the_tested_runs():
    runs = [record(1.0, gpus=1.0), record(0.5, gpus=0.5), record(2.0, cpus=2.0), record(3.0, gpus=1.0, status="FAILED", outcome="")]
    seen = []

    def price(cfg, device):
        seen.append(device)
        return (0.8, "box (measured 2026-01-01)", True) if device == "cuda" else (0.5, "cpu-box (measured 2026-01-01)", True)

    e = hours.compare(runs, price)
    assert seen == ["cuda", "cuda", "cpu"]  # the failed run is not compared
    assert e.runs == 3 and e.measured == pytest.approx({"GPU-h": 1.0 + 0.25, "CPU-h": 4.0})
    assert e.estimated == pytest.approx({"GPU-h": 0.8 + 0.4, "CPU-h": 1.0})
    assert e.ratio("CPU-h") == pytest.approx(4.0)
    text = render.estimate_text(e)
    assert text == ("estimate 1.20 GPU-h vs measured 1.25 (1.04x), estimate 1.00 CPU-h vs measured 4.00 (4.00x) for 3 tested run(s) "
                    "(box (measured 2026-01-01); cpu-box (measured 2026-01-01))")
    assert hours.compare([runs[-1]], price) is None
    assert render.estimate_text(hours.compare(runs[:1], lambda c, d: None)) == "no estimate (1 tested run(s) could not be priced)"


def test_a_run_priced_by_compute_alone_makes_the_estimate_a_lower_bound_without_a_ratio():
    e = hours.compare([record(1.0, gpus=1.0), record(1.0, gpus=1.0)],
                      lambda cfg, device: (0.25, "gpu-box (overhead not measured: compute lower bound)", False))
    assert e.lower_bound == 2 and e.ratio("GPU-h") is None
    assert render.estimate_text(e) == ("estimate >= 0.50 GPU-h vs measured 2.00 for 2 tested run(s), 2 priced by compute alone, "
                                       "no overhead measured (gpu-box (overhead not measured: compute lower bound))")


def test_the_real_pricer_uses_the_shipped_machine_of_the_runs_device():
    cpu_price = hours.pricer()(full(), "cpu")
    gpu_price = hours.pricer()(full(), "cuda")
    assert cpu_price[2] and cpu_price[1].startswith("cpu-2core (measured ")
    assert not gpu_price[2] and gpu_price[1] == "h200 (overhead not measured: compute lower bound)"
    assert gpu_price[0] == pytest.approx(estimate.sweep([full()], overhead.load(None, "cuda")).compute_h)
