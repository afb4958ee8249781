"""Search-space YAML (dfsearch.space): grids, cases, searched leaves, the repository's spaces; fast, no Ray."""

from pathlib import Path

import pytest

from dfsearch import space
from dfsearch.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


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
