"""The typed trial config (dfsearch.config): building, coercion, per-detector settings, errors that name the key."""

import pytest

from dfsearch import config
from dfsearch.errors import ConfigError


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
