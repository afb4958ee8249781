"""Pretrained weights: Hara's and TimeSformer's Kinetics-400 key formats, named files, clear errors, no network."""

from __future__ import annotations

import socket
from collections import OrderedDict

import pytest
import torch

from dfsearch import config
from dfsearch.config import TrialConfig
from dfsearch.errors import WeightsError
from dfsearch.models import create
from dfsearch.models import resnet3d as R3
from dfsearch.models import timesformer as TS
from dfsearch.models import weights as W
from dfsearch.models.resnet3d import DEPTH_LAYERS, ResNet3d
from dfsearch.models.timesformer import TimeSformer


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
            model = ResNet3d(depth=depth, shortcut=R3.hara_shortcut(sd))
        mapped, notes = R3.map_hara(sd)
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


# ------------------------------------------------------------------------------- TimeSformer Kinetics-400
# facebookresearch/TimeSformer's published files (TimeSformer_divST_8x32_224_K400.pyth, and the jointST / spaceOnly
# files its configs train) are torch.save({"epoch", "model_state", "optimizer_state", "cfg"}) of the
# vit_base_patch16_224 wrapper, whose .model is the ViT: every key carries "model.". The key -> shape table below is
# written out from that repository's timesformer/models/vit.py (VisionTransformer / Block / Attention / Mlp), not
# from dfsearch's model, so these tests catch a naming drift on either side.

FB_ATTENTION = {"divided": "divided_space_time", "joint": "joint_space_time", "space_only": "space_only"}


def fb_timesformer_shapes(attention: str, dim: int = 768, depth: int = 12, frames: int = 8, img: int = 224,
                          patch: int = 16, classes: int = 400) -> dict[str, tuple]:
    """``model_state`` of facebookresearch's ``vit_base_patch16_224(cfg)`` (qkv_bias=True, mlp_ratio=4)."""
    s: dict[str, tuple] = {
        "model.cls_token": (1, 1, dim),
        "model.pos_embed": (1, (img // patch) ** 2 + 1, dim),
        "model.patch_embed.proj.weight": (dim, 3, patch, patch),
        "model.patch_embed.proj.bias": (dim,),
    }
    if attention != "space_only":
        s["model.time_embed"] = (1, frames, dim)

    def linear(name, n_out, n_in):
        s[f"{name}.weight"], s[f"{name}.bias"] = (n_out, n_in), (n_out,)

    def norm(name):
        s[f"{name}.weight"], s[f"{name}.bias"] = (dim,), (dim,)

    for i in range(depth):
        b = f"model.blocks.{i}"
        norm(f"{b}.norm1")
        linear(f"{b}.attn.qkv", 3 * dim, dim)
        linear(f"{b}.attn.proj", dim, dim)
        if attention == "divided":
            norm(f"{b}.temporal_norm1")
            linear(f"{b}.temporal_attn.qkv", 3 * dim, dim)
            linear(f"{b}.temporal_attn.proj", dim, dim)
            linear(f"{b}.temporal_fc", dim, dim)
        norm(f"{b}.norm2")
        linear(f"{b}.mlp.fc1", 4 * dim, dim)
        linear(f"{b}.mlp.fc2", dim, 4 * dim)
    norm("model.norm")
    linear("model.head", classes, dim)
    return s


def save_pyth(path, shapes: dict[str, tuple], attention: str, seed: int = 0) -> OrderedDict:
    """A checkpoint as timesformer/utils/checkpoint.py's save_checkpoint writes it (SGD state, cfg.dump() YAML)."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict((k, torch.randn(s, generator=g) * 0.02) for k, s in shapes.items())
    optimizer_state = {
        "state": {0: {"momentum_buffer": torch.zeros(shapes["model.cls_token"])}},
        "param_groups": [{"lr": 0.005, "momentum": 0.9, "dampening": 0.0, "weight_decay": 1e-4, "nesterov": True,
                          "params": list(range(len(sd)))}],
    }
    cfg = f"MODEL:\n  MODEL_NAME: vit_base_patch16_224\n  NUM_CLASSES: 400\nTIMESFORMER:\n  ATTENTION_TYPE: {FB_ATTENTION[attention]}\n"
    torch.save({"epoch": 15, "model_state": sd, "optimizer_state": optimizer_state, "cfg": cfg}, path)
    return sd


@pytest.mark.parametrize("space_time", ["divided", "joint", "space_only"])
def test_published_structure_maps_onto_every_key_of_vit_base(space_time):
    """ViT-B/16 at 8×224²: after mapping, the file provides every model key but the 2-class head, shape for shape."""
    sd = {k: torch.empty(s, device="meta") for k, s in fb_timesformer_shapes(space_time).items()}
    with torch.device("meta"):
        model = TimeSformer(img_size=224, num_frames=8, space_time=space_time, vit_size="base")
    mapped, notes = TS.map_timesformer_k400(sd, model, "TimeSformer.pyth")
    own = model.state_dict()
    assert set(mapped) == set(own) - {"head.weight", "head.bias"}
    assert all(mapped[k].shape == own[k].shape for k in mapped)
    assert any("stripped 'model.'" in n for n in notes) and any("400 classes" in n for n in notes)
    res = W.load_into(model, mapped, "TimeSformer.pyth", lambda k: k.startswith("head."), notes)
    assert res.missing == ["head.bias", "head.weight"] and res.unexpected == []


@pytest.mark.parametrize("space_time", ["divided", "joint"])
def test_pyth_file_loads_strictly_and_reports_what_changed(tmp_path, space_time):
    """The full file format; a 4-frame, 32-px model: time_embed interpolated, pos_embed resampled, head new."""
    path = tmp_path / TS.TIMESFORMER_K400_FILES[space_time]
    shapes = fb_timesformer_shapes(space_time, dim=192, depth=2, frames=8, img=224)
    sd = save_pyth(path, shapes, space_time)
    model = TimeSformer(img_size=32, num_frames=4, space_time=space_time, vit_size="tiny")
    model.blocks = model.blocks[:2]  # a 2-block ViT-Ti keeps the file small; the key structure is the published one
    res = TS.load_timesformer(model, W.read_state_dict(path), path)

    assert res.missing == ["head.bias", "head.weight"] and res.unexpected == []
    notes = " | ".join(res.notes)
    assert "facebookresearch TimeSformer checkpoint" in notes and "stripped 'model.'" in notes
    assert "model.head" not in notes and "head.weight" in notes and "400 classes" in notes
    assert "interpolated time_embed (1, 8, 192) -> (1, 4, 192)" in notes
    assert "resampled pos_embed (1, 197, 192) -> (1, 5, 192)" in notes
    own = model.state_dict()
    assert torch.equal(own["blocks.1.attn.qkv.weight"], sd["model.blocks.1.attn.qkv.weight"])
    assert torch.equal(own["blocks.0.mlp.fc2.bias"], sd["model.blocks.0.mlp.fc2.bias"])
    assert torch.equal(own["time_embed"][0, 1], sd["model.time_embed"][0, 2])  # nearest: frame 1 of 4 <- frame 2 of 8
    if space_time == "divided":  # the temporal parts come from the file, not copied from the spatial attention
        assert torch.equal(own["blocks.1.temporal_fc.weight"], sd["model.blocks.1.temporal_fc.weight"])
        assert torch.equal(own["blocks.0.temporal_attn.qkv.weight"], sd["model.blocks.0.temporal_attn.qkv.weight"])
        assert not torch.equal(own["blocks.0.temporal_attn.qkv.weight"], own["blocks.0.attn.qkv.weight"])
    assert model.head.out_features == 2
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 4, 32, 32)).shape == (1, 2)


def _small_file(tmp_path, space_time="divided", edit=None):
    shapes = fb_timesformer_shapes(space_time, dim=192, depth=2, frames=4, img=32)
    path = tmp_path / "TimeSformer_divST_8x32_224_K400.pyth"
    sd = save_pyth(path, shapes, space_time)
    if edit is not None:
        edit(sd)
        torch.save({"epoch": 15, "model_state": sd}, path)
    model = TimeSformer(img_size=32, num_frames=4, space_time="divided", vit_size="tiny")
    model.blocks = model.blocks[:2]
    return path, model


def test_missing_key_fails_naming_file_and_key(tmp_path):
    path, model = _small_file(tmp_path, edit=lambda sd: sd.pop("model.blocks.1.temporal_fc.weight"))
    with pytest.raises(WeightsError, match=r"TimeSformer_divST_8x32_224_K400\.pyth does not fit.*missing 1 keys the file "
                                           r"should provide: blocks\.1\.temporal_fc\.weight.*'model\.' prefix"):
        TS.load_timesformer(model, W.read_state_dict(path), path)


def test_renamed_key_fails_naming_both_names(tmp_path):
    def rename(sd):
        sd["model.blocks.0.temporal_attention.qkv.weight"] = sd.pop("model.blocks.0.temporal_attn.qkv.weight")

    path, model = _small_file(tmp_path, edit=rename)
    with pytest.raises(WeightsError) as e:
        TS.load_timesformer(model, W.read_state_dict(path), path)
    msg = str(e.value)
    assert "missing 1 keys" in msg and "blocks.0.temporal_attn.qkv.weight" in msg
    assert "1 unexpected keys: blocks.0.temporal_attention.qkv.weight" in msg


def test_other_attention_scheme_or_width_is_refused(tmp_path):
    path, model = _small_file(tmp_path, space_time="joint")
    with pytest.raises(WeightsError, match=r"joint space-time attention but model\.space_time is 'divided'.*TimeSformer_divST"):
        TS.load_timesformer(model, W.read_state_dict(path), path)
    sd = {k: torch.empty(s, device="meta") for k, s in fb_timesformer_shapes("divided").items()}  # ViT-B into ViT-Ti
    with pytest.raises(WeightsError, match=r"embedding width 768.*model\.vit_size=base"):
        TS.map_timesformer_k400(sd, model, path)


def test_k400_file_names_and_sizes():
    arch = lambda st, size="base": type("Arch", (), {"space_time": st, "vit_size": size})()  # noqa: E731
    assert TS.timesformer_k400_file(arch("divided")) == "TimeSformer_divST_8x32_224_K400.pyth"
    assert TS.timesformer_k400_file(arch("joint")) == "TimeSformer_jointST_8x32_224_K400.pyth"
    with pytest.raises(WeightsError, match="ViT-Base/16.*model.vit_size is 'tiny'"):
        TS.timesformer_k400_file(arch("divided", "tiny"))


def test_named_kinetics400_timesformer_loads_through_create(tmp_path, monkeypatch):
    """``model.pretrained: kinetics400`` finds the K-400 file of the chosen attention scheme in the weights folder,
    loads it strictly (only the head is new) and normalises clips as those weights were trained."""
    from dfsearch.models import input_stats

    monkeypatch.setenv("DFSEARCH_WEIGHTS", str(tmp_path))
    shapes = fb_timesformer_shapes("joint")  # ViT-B/16, 8 x 224^2: the published file
    sd = save_pyth(tmp_path / "TimeSformer_jointST_8x32_224_K400.pyth", shapes, "joint")
    cfg = config.from_flat({"model.name": "timesformer", "model.space_time": "joint", "model.pretrained": "kinetics400",
                            "data.clip_len": 4, "data.crop_size": 32})
    model = create(cfg)
    res = model.pretrained_result
    assert res.file.endswith("TimeSformer_jointST_8x32_224_K400.pyth") and res.missing == ["head.bias", "head.weight"]
    assert any("interpolated time_embed (1, 8, 768) -> (1, 4, 768)" in n for n in res.notes)
    assert torch.equal(model.state_dict()["blocks.11.attn.proj.weight"], sd["model.blocks.11.attn.proj.weight"])
    assert input_stats(cfg) == (TS.TIMESFORMER_K400_MEAN, TS.TIMESFORMER_K400_STD)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 4, 32, 32)).shape == (1, 2)
    cfg = config.from_flat({"model.name": "timesformer", "model.pretrained": "kinetics400"})  # divided: not there
    with pytest.raises(WeightsError, match=r"TimeSformer_divST_8x32_224_K400\.pyth not found.*facebookresearch/TimeSformer"):
        create(cfg)
