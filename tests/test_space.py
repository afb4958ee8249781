"""Search-space YAML and trial-config validation: fast, no Ray."""

import subprocess
import sys
from pathlib import Path

import pytest

from dfsearch import config, space
from dfsearch.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_from_flat_builds_typed_tree_and_coerces():
    cfg = config.from_flat({"model.attention": "nonlocal", "model.placement": [4, 1, 2], "optim.lr": 1, "train.amp": "false"})
    assert cfg.model.arch.placement == (1, 2, 4)  # a tuple of stages, parsed once
    assert config.from_flat({"model.attention": "se", "model.placement": "1, 2,4"}).model.arch.placement == (1, 2, 4)
    assert config.from_flat({"model.attention": "se", "model.placement": 4}).model.arch.placement == (4,)
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    assert cfg.train.amp is False
    assert config.from_flat({"optim.lr": "3e-3"}).optim.lr == 0.003  # PyYAML reads 3e-3 as a string
    with pytest.raises(ConfigError, match="optim.lr: expected float"):
        config.from_flat({"optim.lr": "fast"})
    flat = config.to_flat(cfg)
    assert flat["model.attention"] == "nonlocal" and flat["model.placement"] == "1,2,4"
    assert config.to_flat(config.from_flat(flat)) == flat  # the flat form round-trips


def test_each_detector_has_its_own_settings_and_clip():
    ts = config.from_flat({"model.name": "timesformer", "model.space_time": "joint"})
    assert ts.model.arch.space_time == "joint"
    assert (ts.data.clip_len, ts.data.frame_stride, ts.data.crop_size) == (8, 32, 224)  # the paper's TimeSformer clip
    flat = config.to_flat(ts)
    assert "model.placement" not in flat and "model.depth" not in flat and "model.attention" not in flat
    r3d = config.from_flat({})
    assert (r3d.data.clip_len, r3d.data.frame_stride, r3d.data.crop_size) == (16, 1, 112)
    assert "model.placement" not in config.to_flat(r3d)  # no attention: no placement logged
    assert config.from_flat({"model.name": "xception"}).data.crop_size == 299
    with pytest.raises(ConfigError, match=r"model.depth is a setting of resnet3d, not of model.name 'timesformer'"):
        config.from_flat({"model.name": "timesformer", "model.depth": 18})
    with pytest.raises(ConfigError, match="model.space_time is a setting of timesformer"):
        config.from_flat({"model.space_time": "joint"})
    with pytest.raises(ConfigError, match=r"model.name: 'resnet' is not one of .*did you mean 'resnet3d'"):
        config.from_flat({"model.name": "resnet"})
    with pytest.raises(ConfigError, match=r"'imagenet' is not available for model 'resnet3d' \(named weights: kinetics400, kinetics700"):
        config.from_flat({"model.pretrained": "imagenet"})


@pytest.mark.parametrize(
    "flat, message",
    [
        ({"model.atention": "se"}, "did you mean 'model.attention'"),
        ({"lr": 0.1}, "did you mean 'optim.lr'"),
        ({"model.attention": "nonlocal", "model.placement": "1,5"}, "model.placement: '1,5' names a stage that does not exist"),
        ({"model.attention": "selfattn"}, "model.attention: 'selfattn' is not one of none, se, nonlocal"),
        ({"protocol.name": "cross"}, "needs a method"),
        ({"protocol.name": "single:Foo"}, "protocol.name: 'Foo' is not one of"),
        ({"train.epochs": 1.5}, "train.epochs: expected int"),
        ({"model.depth": 20}, "model.depth: 20 is not one of"),
    ],
)
def test_bad_values_name_the_key(flat, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.from_flat(flat)


def test_protocol_aliases():
    assert config.parse_protocol("cross:NT") == ("cross", "NeuralTextures")
    assert config.parse_protocol("single:Face2Face") == ("single", "Face2Face")
    assert config.parse_protocol("all") == ("all", None)
    assert config.from_flat({"protocol.name": "single:DF"}).protocol.name == "single:Deepfakes"  # canonical everywhere


def test_space_values_are_canonical_and_search_metric_picks_the_tested_epoch(tmp_path):
    spec = space.load(write(tmp_path, """
protocol.name: {grid: [single:DF, cross:NT]}
cases:
  - {model.attention: none}
  - {model.attention: se, model.placement: [2, 1]}
search: {metric: val/loss}
paper: {cell: "{model.attention} {model.placement} / {protocol.name}"}
"""))
    assert spec.searched["protocol.name"].values == ("single:Deepfakes", "cross:NeuralTextures")
    assert spec.cases[1]["model.placement"] == "2,1"
    assert spec.fixed["eval.select_metric"] == "val/loss" and spec.search.mode == "min"
    cells = [spec.cell_for(p) for p in spec.grid_points()]
    assert cells == ["none / single:Deepfakes", "none / cross:NeuralTextures", "se 1,2 / single:Deepfakes", "se 1,2 / cross:NeuralTextures"]
    ts = space.load(write(tmp_path, "model: {name: timesformer, space_time: {grid: [joint, divided]}}\npaper: {cell: '{model.space_time} {model.placement}'}\n"))
    assert [ts.cell_for(p) for p in ts.grid_points()] == ["joint", "divided"]


def test_yaml_grid_cases_env_and_seeds(tmp_path, monkeypatch):
    monkeypatch.setenv("FFPP_ROOT", "/data/ffpp")
    path = write(
        tmp_path,
        """
name: t2
paper: {table: II, cell: "{model.placement}"}
data.root: ${FFPP_ROOT}
data:
  compression: ${COMPRESSION:-c40}
model:
  depth: 18
  placement: {grid: ["1,2", "4,4"]}
model.attention: nonlocal
protocol.name: {grid: [single:DF, single:NT]}
search: {num_samples: 2}
resources: {workers: 2, gpus_per_worker: 0.5, cpus_per_worker: 4}
""",
    )
    spec = space.load(path)
    assert spec.name == "t2"
    assert spec.fixed["data.root"] == "/data/ffpp" and spec.fixed["data.compression"] == "c40"
    # 2 placements x 2 protocols x 2 seeds: num_samples on a grid repeats it with distinct seeds
    assert spec.trial_count() == 8
    assert spec.searched["train.seed"].values == (0, 1)
    assert spec.resources.per_trial() == {"CPU": 8, "GPU": 1.0}
    assert spec.cell_for({"model.placement": "4,4"}) == "4,4"
    rows = space.expand(spec)
    assert len(rows) == 8 and {r["model.placement"] for r in rows} == {"1,2", "4,4"}


def test_cases_are_crossed_with_the_grid_and_resolved(tmp_path):
    spec = space.load(write(tmp_path, """
cases:
  - {model.attention: none}
  - {model: {attention: nonlocal, placement: "1,2,3,4"}}
protocol.name: {grid: [all, cross:FS]}
"""))
    assert spec.trial_count() == 4
    assert spec.varied_keys() == ["model.attention", "model.placement", "protocol.name"]
    flat = spec.resolve({"protocol.name": "all", "case": 1})
    assert flat == {"protocol.name": "all", "model.attention": "nonlocal", "model.placement": "1,2,3,4"}


def test_random_and_optuna_leaves(tmp_path):
    spec = space.load(write(tmp_path, """
optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
train.batch_size: {choice: [4, 8]}
train.epochs: {randint: [1, 4]}
search: {algorithm: optuna, num_samples: 5, scheduler: asha}
"""))
    assert spec.trial_count() == 5
    assert spec.searched["optim.lr"] == space.Dist("loguniform", (1e-4, 1e-2))


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: {attention: [se\n", "YAML syntax error at line"),
        ("model.atention: se\n", "unknown key 'model.atention'; did you mean 'model.attention'"),
        ("modle: {attention: se}\n", "unknown key 'modle'"),
        ("optim.lr: {uniform: [0.1]}\n", r"optim.lr: uniform needs \[low, high\]"),
        ("optim.lr: {loguniform: [0, 1]}\n", "needs low > 0"),
        ("optim.lr: {uniform: [0.1, 0.01]}\n", "needs low < high"),
        ("model.attention: nonlocal\nmodel.placement: {grid: ['1,2', '5']}\n", "names a stage that does not exist"),
        ("optim.lr: {uniform: [0.1, 0.2]}\n", "needs search.algorithm random or optuna"),
        ("model.attention: {grid: [se]}\nsearch: {algorithm: optuna}\n", "Optuna cannot search"),
        ("search: {algoritm: grid}\n", "unknown key 'search.algoritm'; did you mean 'search.algorithm'"),
        ("search: {metric: test/tcr}\n", "test metrics never drive the search"),
        ("search: {metric: val/loss, mode: max}\n", "search.mode max contradicts search.metric val/loss"),
        ("eval.select_metric: val/auc\n", "eval.select_metric is set by search.metric"),
        ("", "the search space is empty"),
        ("# nothing but a comment\n", "the search space is empty"),
        ("model: {name: timesformer, depth: 18}\n", "model.depth is a setting of resnet3d, not of model.name 'timesformer'"),
        ("resources: {workers: 0}\n", "resources.workers must be a positive integer"),
        ("data.root: ${NOT_SET_ANYWHERE_42}\n", r"environment variable \$\{NOT_SET_ANYWHERE_42\} is not set"),
        ("cases: [{model.attention: se}]\nmodel.attention: none\n", "also set outside 'cases:'"),
    ],
)
def test_bad_spaces_fail_with_one_clear_message(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        space.load(path)
    assert str(path) in str(info.value)


def test_repo_search_spaces_are_valid(monkeypatch):
    monkeypatch.setenv("FFPP_ROOT", "/data/ffpp")  # the paper tables read the dataset root from the environment
    files = sorted((REPO / "search_spaces").glob("*.yaml"))
    assert any(f.name == "smoke.yaml" for f in files)
    for f in files:
        spec = space.load(f)
        assert spec.trial_count() >= 1
    table2 = space.load(REPO / "search_spaces" / "placement.yaml")
    assert table2.trial_count() == 24  # 6 placements x 4 manipulations, as in the paper's Table II


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
