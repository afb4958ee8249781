"""Pretrained weights: Hara's key format for every depth, named files, clear errors, no network."""

from __future__ import annotations

import socket

import pytest
import torch

from dfsearch import config
from dfsearch.config import TrialConfig
from dfsearch.errors import WeightsError
from dfsearch.models import create
from dfsearch.models import weights as W
from dfsearch.models.resnet3d import DEPTH_LAYERS, ResNet3d


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: nothing may be downloaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# Hara et al.'s ResNet written out independently of dfsearch.models.resnet3d: key -> shape, as in their
# models/resnet.py (BN keys of PyTorch >= 0.4.1; the CVPR-2018 files lack num_batches_tracked).
HARA = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
        50: ("bottle", [3, 4, 6, 3]), 101: ("bottle", [3, 4, 23, 3]), 152: ("bottle", [3, 8, 36, 3]),
        200: ("bottle", [3, 24, 36, 3])}


def hara_shapes(depth: int, shortcut: str, n_classes: int, nbt: bool = True) -> dict[str, tuple]:
    kind, layers = HARA[depth]
    exp = 1 if kind == "basic" else 4
    shapes: dict[str, tuple] = {}

    def bn(name, c):
        shapes.update({f"{name}.weight": (c,), f"{name}.bias": (c,), f"{name}.running_mean": (c,), f"{name}.running_var": (c,)})
        if nbt:
            shapes[f"{name}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 7, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for i, (planes, n) in enumerate(zip([64, 128, 256, 512], layers)):
        stride = 1 if i == 0 else 2
        for j in range(n):
            p = f"layer{i + 1}.{j}."
            if kind == "basic":
                shapes[p + "conv1.weight"] = (planes, inplanes, 3, 3, 3)
                bn(p + "bn1", planes)
                shapes[p + "conv2.weight"] = (planes, planes, 3, 3, 3)
                bn(p + "bn2", planes)
            else:
                shapes[p + "conv1.weight"] = (planes, inplanes, 1, 1, 1)
                bn(p + "bn1", planes)
                shapes[p + "conv2.weight"] = (planes, planes, 3, 3, 3)
                bn(p + "bn2", planes)
                shapes[p + "conv3.weight"] = (planes * 4, planes, 1, 1, 1)
                bn(p + "bn3", planes * 4)
            if j == 0 and (stride != 1 or inplanes != planes * exp) and shortcut == "B":
                shapes[p + "downsample.0.weight"] = (planes * exp, inplanes, 1, 1, 1)
                bn(p + "downsample.1", planes * exp)
            inplanes = planes * exp
    shapes["fc.weight"] = (n_classes, 512 * exp)
    shapes["fc.bias"] = (n_classes,)
    return shapes


def hara_state_dict(shapes: dict, device="meta", prefix="") -> dict[str, torch.Tensor]:
    return {prefix + k: (torch.zeros(s, dtype=torch.long, device=device) if k.endswith("num_batches_tracked")
                         else torch.empty(s, device=device)) for k, s in shapes.items()}


@pytest.mark.parametrize("prefix", ["module.", ""])
@pytest.mark.parametrize("depth", sorted(DEPTH_LAYERS))
def test_hara_state_dict_loads_strictly_into_every_depth(depth, prefix):
    """Both releases: CVPR-2018 (module., 400 classes, A for 10/18/34 and B for 50+) and r3d*_K_200ep (B, 700)."""
    release = [("A" if depth <= 34 else "B", 400, False), ("B", 700, True)]
    for shortcut, classes, nbt in release:
        sd = hara_state_dict(hara_shapes(depth, shortcut, classes, nbt), prefix=prefix)
        with torch.device("meta"):
            model = ResNet3d(depth=depth, shortcut=W.hara_shortcut(sd))
        mapped, notes = W.map_hara(sd)
        res = W.load_into(model, mapped, "hara.pth", model.is_new_key, notes)
        assert res.missing == ["fc.bias", "fc.weight"] and res.unexpected == []
        assert set(mapped) == set(model.state_dict()) - {"fc.weight", "fc.bias"}


def _save_hara_2018(path, depth=10, seed=0):
    """A file in the CVPR-2018 format: {'arch','epoch','state_dict','optimizer'} saved from DataParallel,
    legacy (pre-1.6, non-zip) serialisation, no BN num_batches_tracked."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: (torch.zeros(s, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g))
          for k, s in hara_shapes(depth, "A", 400, nbt=False).items()}
    torch.save({"arch": f"resnet-{depth}", "epoch": 200, "state_dict": {"module." + k: v for k, v in sd.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}}, path,
               _use_new_zipfile_serialization=False)  # 2018 files predate the zip format
    return sd


def test_named_kinetics400_file_loads_through_create(tmp_path, monkeypatch):
    monkeypatch.setenv("DFSEARCH_WEIGHTS", str(tmp_path))
    sd = _save_hara_2018(tmp_path / "resnet-10-kinetics.pth")
    cfg = config.from_flat({"model.depth": 10, "model.pretrained": "kinetics400", "model.attention": "nonlocal", "model.placement": "3,4"})
    model = create(cfg)
    res = model.pretrained_result
    assert model.shortcut == "A"
    assert set(res.missing) == {"fc.weight", "fc.bias"} | {k for k in model.state_dict() if k.startswith("attn")}
    assert any("module." in n for n in res.notes) and any("num_batches_tracked" in n for n in res.notes)
    assert torch.equal(model.state_dict()["layer3.0.conv2.weight"], sd["layer3.0.conv2.weight"])
    assert model.fc.out_features == 2
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 4, 32, 32)).shape == (1, 2)


def test_named_kinetics700_file_and_plain_path(tmp_path, monkeypatch):
    monkeypatch.setenv("DFSEARCH_WEIGHTS", str(tmp_path))
    g = torch.Generator().manual_seed(1)
    sd = {k: (torch.zeros(s, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g))
          for k, s in hara_shapes(10, "B", 700).items()}
    torch.save({"arch": "resnet", "epoch": 200, "state_dict": sd, "optimizer": {}, "scheduler": {}}, tmp_path / "r3d10_K_200ep.pth")
    cfg = config.from_flat({"model.depth": 10, "model.pretrained": "kinetics700"})
    model = create(cfg)
    assert model.shortcut == "B" and model.pretrained_result.missing == ["fc.bias", "fc.weight"]
    assert torch.equal(model.state_dict()["layer2.0.downsample.0.weight"], sd["layer2.0.downsample.0.weight"])
    cfg.model.pretrained = str(tmp_path / "r3d10_K_200ep.pth")  # the same file as a path
    assert create(cfg).pretrained_result.missing == ["fc.bias", "fc.weight"]


def test_missing_named_file_gives_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("DFSEARCH_WEIGHTS", str(tmp_path / "weights"))
    cfg = TrialConfig()
    cfg.model.pretrained = "kinetics400"
    with pytest.raises(WeightsError) as e:
        create(cfg)
    msg = str(e.value)
    assert "resnet-50-kinetics.pth" in msg and str(tmp_path / "weights") in msg
    assert "DFSEARCH_WEIGHTS" in msg and "3D-ResNets-PyTorch" in msg
    cfg = config.from_flat({"model.name": "timesformer", "model.pretrained": "imagenet"})
    with pytest.raises(WeightsError, match=r"vit_base_patch16_224\.augreg2_in21k_ft_in1k\.safetensors.*huggingface\.co/timm"):
        create(cfg)


def test_default_weights_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("DFSEARCH_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert W.weights_dir() == tmp_path / ".cache" / "dfsearch" / "weights"


@pytest.mark.parametrize("name", ["resnet-10-kinetics.pth", "vit.safetensors"])
def test_corrupt_file_names_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    with pytest.raises(WeightsError, match=f"{name}.*corrupt"):
        W.read_state_dict(path)
    cfg = config.from_flat({"model.depth": 10, "model.pretrained": str(path)})
    with pytest.raises(WeightsError, match=name):
        create(cfg)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(WeightsError, match="evil.pth"):
        W.read_state_dict(path)


def test_wrong_depth_is_refused_with_the_keys(tmp_path):
    path = tmp_path / "resnet-18-kinetics.pth"
    _save_hara_2018(path, depth=18)
    cfg = config.from_flat({"model.depth": 10, "model.pretrained": str(path)})
    with pytest.raises(WeightsError, match=r"resnet-18-kinetics\.pth does not fit.*unexpected keys: layer1\.1"):
        create(cfg)


def test_named_weight_not_offered_for_the_model():
    cfg = TrialConfig()
    cfg.model.pretrained = "imagenet"
    with pytest.raises(WeightsError, match="kinetics400, kinetics700"):
        create(cfg)
    cfg.model.pretrained = "no/such/file.pth"
    with pytest.raises(WeightsError, match="no/such/file.pth"):
        create(cfg)
