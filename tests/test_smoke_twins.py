"""The --smoke twins of the paper's spaces: same grid and differences, per-family budgets that learn, and pretext
weights in the families' published formats standing in for Kinetics (dfsearch/data/pretext.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import cheap_pretext, paper_with_space

from dfsearch import config, fingerprint, space, sweeps
from dfsearch.data import pretext
from dfsearch.errors import ConfigError
from dfsearch.models import registry

REPO = Path(__file__).resolve().parents[1]
PAPER_SPACES = ("placement", "all_manipulations", "timesformer", "single_manipulation", "pretraining", "cross_manipulation")


def twin(name: str, monkeypatch) -> sweeps.SweepSpec:
    monkeypatch.setenv("FFPP_ROOT", "synthetic")
    return sweeps.smoke(space.load(REPO / "search_spaces" / f"{name}.yaml"))


@pytest.mark.parametrize("name", PAPER_SPACES)
def test_every_paper_space_keeps_its_grid_and_its_differences(name, monkeypatch):
    monkeypatch.setenv("FFPP_ROOT", "/data/ffpp")
    spec = space.load(REPO / "search_spaces" / f"{name}.yaml")
    smoke = twin(name, monkeypatch)
    real, fake = sweeps.trials(spec), sweeps.trials(smoke)
    assert len(real) == len(fake)
    # two trials that differ in the space differ in its twin (no pair collapses, pretrained/scratch included)
    assert len({fingerprint.fingerprint(f) for f in fake}) == len({fingerprint.fingerprint(f) for f in real})
    assert sweeps.plan(smoke, set()).duplicates == 0
    for r, f in zip(real, fake):
        full = fingerprint.canonical(f)
        assert full["data.root"] == "synthetic" and full["optim.name"] == "adam"
        for key in ("model.name", "model.attention", "model.placement", "model.space_time", "protocol.name"):
            assert r.get(key) == f.get(key)
        named = r.get("model.pretrained", "none") != "none"
        if registry.get(r["model.name"]).pretext is not None:
            assert full["model.pretrained"] == (pretext.PRETEXT if named else "none")
        else:
            assert full["model.pretrained"] == "none"


def test_budgets_per_family():
    for family, epochs in (("resnet3d", 5), ("timesformer", 6), ("xception", 5), ("meso4", 8)):
        full = fingerprint.canonical(sweeps.smoke_flat({"model.name": family, "protocol.name": "single:DF"}))
        assert full["train.epochs"] == epochs and full["data.root"] == "synthetic"
        assert config.from_flat(full).data.crop_size in (32, 64)
    # on `all` (four families to learn) the 3D ResNet trains longer; the others keep their budget
    on_all = {f: fingerprint.canonical(sweeps.smoke_flat({"model.name": f, "protocol.name": "all"}))["train.epochs"] for f in ("resnet3d", "meso4")}
    assert on_all == {"resnet3d": 10, "meso4": 8}


def test_set_overrides_a_smoke_budget_in_every_trial(monkeypatch):
    smoke = sweeps.apply_sets(twin("single_manipulation", monkeypatch), ["train.epochs=1", "optim.lr=0.01"])
    flats = [fingerprint.canonical(f) for f in sweeps.trials(smoke)]
    assert {f["train.epochs"] for f in flats} == {1} and {f["optim.lr"] for f in flats} == {0.01}
    assert {f["model.name"] for f in flats} == {"resnet3d", "timesformer", "xception", "meso4", "steg_svm", "cozzolino", "bayar", "rahmouni"}
    # a family setting is changed only where the family has it
    smoke = sweeps.apply_sets(twin("single_manipulation", monkeypatch), ["model.widen_factor=0.125"])
    assert {f["model.widen_factor"] for f in sweeps.trials(smoke) if f["model.name"] == "resnet3d"} == {0.125}
    # the real space still refuses to change what it varies between trials
    monkeypatch.setenv("FFPP_ROOT", "/data/ffpp")
    with pytest.raises(ConfigError, match="varies train.epochs|varies train.batch_size"):
        sweeps.apply_sets(space.load(REPO / "search_spaces/single_manipulation.yaml"), ["train.batch_size=2"])


def test_the_pretext_value_is_a_valid_weight_and_its_file_depends_on_the_backbone_only():
    base = {"model.name": "resnet3d", "model.pretrained": pretext.PRETEXT, "model.depth": 10, "model.widen_factor": 0.25}
    plain = config.from_flat(base).model.arch
    with_nl = config.from_flat({**base, "model.attention": "nonlocal", "model.placement": "1,2"}).model.arch
    wider = config.from_flat({**base, "model.widen_factor": 0.5}).model.arch
    assert pretext.weights_path("resnet3d", plain) == pretext.weights_path("resnet3d", with_nl)  # attention blocks are new
    assert pretext.weights_path("resnet3d", plain) != pretext.weights_path("resnet3d", wider)
    assert pretext.weights_path("resnet3d", plain).name == "resnet-10-pretext.pth"
    ts = config.from_flat({"model.name": "timesformer", "model.vit_size": "tiny", "model.space_time": "divided"}).model.arch
    assert pretext.weights_path("timesformer", ts).name.startswith("TimeSformer_divST_") and pretext.weights_path("timesformer", ts).suffix == ".pyth"


def test_pretext_videos_are_new_identities_whose_classes_differ_only_in_time():
    clips, labels = pretext.pretext_clips(2, clip_len=4, stride=1, crop=32)
    assert clips.shape == (8, 3, 4, 32, 32) and clips.dtype.name == "uint8" and list(labels) == [0, 0, 1, 1, 2, 2, 3, 3]
    # a still head under steady light changes little from frame to frame (talking, brows), a moving one in changing light much more
    def change(clip):
        return float(abs(clip.astype(float)[:, 1:] - clip.astype(float)[:, :-1]).mean())

    assert change(clips[6]) > 2 * change(clips[0]) and change(clips[7]) > 2 * change(clips[1])
    assert pretext.ID_OFFSET > 999  # the stand-in's identities are FF++'s ids 000-999


@pytest.mark.parametrize("family, extra", [("resnet3d", {"model.attention": "se", "model.placement": "1,2,3,4"}),
                                           ("timesformer", {"model.space_time": "joint"})])
def test_a_smoke_trial_loads_the_pretext_file_through_the_real_loader(family, extra, tmp_path, monkeypatch):
    """Built on demand in the family's published format (no training here: 0 epochs), then read like a real file."""
    from dfsearch import models

    monkeypatch.setenv("DFSEARCH_CACHE", str(tmp_path))
    recipe = registry.get(family).pretext.recipe
    monkeypatch.setitem(recipe, "per_class", 1)
    monkeypatch.setitem(recipe, "epochs", 0)
    flat = sweeps.smoke_flat({"model.name": family, "model.pretrained": "kinetics400", **extra})
    model = models.create(config.from_flat(flat), makers=pretext.MAKERS)
    result = model.pretrained_result
    path = Path(result.file)
    assert path.is_file() and path.is_relative_to(tmp_path / "pretext")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if family == "resnet3d":  # Hara: {"arch", "epoch", "state_dict"}, DataParallel keys, a 4-way fc
        assert path.suffix == ".pth" and raw["arch"] == "resnet-10"
        assert all(k.startswith("module.") for k in raw["state_dict"]) and raw["state_dict"]["module.fc.weight"].shape[0] == 4
        assert any("stripped 'module.'" in n for n in result.notes) and all(k.startswith(("fc.", "attn")) for k in result.missing)
    else:  # facebookresearch: {"epoch", "model_state"} with the wrapper's model.* keys
        assert path.suffix == ".pyth" and all(k.startswith("model.") for k in raw["model_state"])
        assert "facebookresearch TimeSformer checkpoint" in result.notes and result.missing == ["head.bias", "head.weight"]
    mtime = path.stat().st_mtime_ns
    models.create(config.from_flat(flat), makers=pretext.MAKERS)  # cached: a second trial reads the same file
    assert path.stat().st_mtime_ns == mtime


def test_the_trial_that_builds_the_pretext_file_trains_like_one_that_finds_it(tmp_path, monkeypatch):
    """The build seeds torch's generator; the trial that builds the file must go on from its own state (it did not:
    two runs of one Table II twin differed in the one trial that had built the file)."""
    from dfsearch import models

    monkeypatch.setenv("DFSEARCH_CACHE", str(tmp_path))
    recipe = registry.get("resnet3d").pretext.recipe
    monkeypatch.setitem(recipe, "per_class", 1)
    monkeypatch.setitem(recipe, "epochs", 0)  # no training: seeding and initialising its model are enough
    flat = sweeps.smoke_flat({"model.name": "resnet3d", "model.pretrained": "kinetics400",
                              "model.attention": "nonlocal", "model.placement": "1,2"})

    def trial_start():
        torch.manual_seed(1234)  # what the train loop does before it builds the model
        model = models.create(config.from_flat(flat), makers=pretext.MAKERS)
        return model.state_dict(), torch.rand(8)  # the new blocks' weights, and what the loop draws next

    built, built_next = trial_start()
    assert list((tmp_path / "pretext").rglob("*.pth"))
    found, found_next = trial_start()
    assert torch.equal(built_next, found_next)
    assert all(torch.equal(built[k], found[k]) for k in built)


# ------------------------------------------------------------------------------------------------ slow: a sweep


@pytest.mark.slow
def test_a_tiny_twin_trains_pretrained_and_scratch_as_two_cells(tmp_path, ray_env, monkeypatch):
    """`run --smoke` on a space with a pretrained and a scratch row: two trials, the pretrained one loads the pretext
    file (built on demand; here made beforehand with a 1-epoch recipe at the path the trial asks for).  The trials
    train at the smoke budget itself (no --set): a run with other epochs would be a variant, not the cell."""
    from dfsearch import report

    doc = {
        "name": "tiny-v",
        "data": {"root": "synthetic", "synthetic_pairs": 3, "synthetic_frames": 24, "synthetic_size": 96},
        "protocol.name": "single:DF",
        "cases": [{"model.name": "resnet3d", "model.pretrained": "kinetics400"}, {"model.name": "resnet3d", "model.pretrained": "none"}],
        "search": {"algorithm": "grid", "metric": "val/auc"},
    }
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(doc))
    path = cheap_pretext(ray_env["DFSEARCH_CACHE"])
    mtime = path.stat().st_mtime_ns

    out = subprocess.run([sys.executable, "-m", "dfsearch.run", str(space_file), "--smoke",
                          "--work-dir", str(tmp_path / "runs"), "--num-cpus", "2"], env=ray_env, cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = [r for r in report.read_runs(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}").runs if r.tested]
    assert sorted(r.config["model.pretrained"] for r in runs) == ["none", pretext.PRETEXT]
    assert len({r.fingerprint for r in runs}) == 2
    assert path.stat().st_mtime_ns == mtime  # the trial read the cached file, it did not build another

    # The claim verdicts, end to end: the report of Table V, its cells pointed at this twin, checks claims in the
    # planted format on the two runs (MLflow -> cells -> verdicts -> claims.csv, the parent run's tags, --check).
    verdicts = check_tiny_v_claims(tmp_path, space_file, runs, ray_env)
    assert verdicts["tiny.scratch-only-F2F"] == "not enough cells"  # no run on F2F


def check_tiny_v_claims(tmp_path: Path, space_file: Path, runs, env) -> dict[str, str]:
    """Run `report V --check` with Table V's space = ``space_file`` and two planted claims on its DF cells, and
    assert its verdicts are those the two runs' test TCR and N give; returns claim id -> verdict."""
    import csv

    from mlflow.tracking import MlflowClient

    from dfsearch.report import claims

    paper_file = paper_with_space(tmp_path, space_file, ("V",))
    planted_file = tmp_path / "planted.yaml"
    planted_file.write_text(yaml.safe_dump({"claims": [
        {"id": "tiny.pretrained-above-scratch", "table": "V", "quote": "q", "kind": "greater",
         "a": ["3D ResNet, pretrained"], "b": ["3D ResNet, no pretraining"], "columns": ["DF"], "verified": False},
        {"id": "tiny.scratch-only-F2F", "table": "V", "quote": "q", "kind": "greater",
         "a": ["3D ResNet, pretrained"], "b": ["3D ResNet, no pretraining"], "columns": ["F2F"], "verified": False},
    ]}))
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    out = subprocess.run([sys.executable, "-m", "dfsearch.report", "V", "--tracking-uri", uri, "--paper", str(paper_file),
                          "--planted", str(planted_file), "--out", str(tmp_path / "rep"), "--check"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=300)

    # what the two runs say, through the documented rule (Wilson interval on the run's N test videos; separate or not)
    by = {r.config["model.pretrained"]: r for r in runs}
    pre, scratch = (claims.interval(r.value, r.videos) for r in (by[pretext.PRETEXT], by["none"]))
    expected = claims.HOLDS if pre.lo > scratch.hi else claims.FAILS if pre.hi < scratch.lo else claims.UNDECIDED
    rows = {r["claim"]: r for r in csv.DictReader((tmp_path / "rep" / "claims.csv").open())}
    assert rows["tiny.pretrained-above-scratch"]["verdict"] == expected, rows
    assert rows["tiny.pretrained-above-scratch"]["data"] == "SYNTHETIC" and rows["tiny.pretrained-above-scratch"]["source"] == "planted"
    assert f"**{expected}** tiny.pretrained-above-scratch" in out.stdout
    assert out.returncode == (1 if expected == claims.FAILS else 0), out.stdout[-2000:] + out.stderr[-2000:]
    client = MlflowClient(uri)
    parents = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`dfsearch.role` = 'sweep'")
    tags = [p.data.tags for p in parents if "dfsearch.claims.V" in p.data.tags]  # the report logged to the sweep's parent
    assert tags and tags[0]["dfsearch.claims.V"] == claims.summary([claims.Verdict(None, v["verdict"], "") for v in rows.values()])
    return {k: v["verdict"] for k, v in rows.items()}
