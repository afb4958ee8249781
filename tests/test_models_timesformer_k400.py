"""TimeSformer Kinetics-400: facebookresearch/TimeSformer's own checkpoint format loads strictly.

The published files (``TimeSformer_divST_8x32_224_K400.pyth``, and the jointST / spaceOnly files its configs
train) are ``torch.save({"epoch", "model_state", "optimizer_state", "cfg"})`` of the ``vit_base_patch16_224``
wrapper, whose ``.model`` is the ViT: every key carries ``model.``. The key → shape table below is written out
from that repository's ``timesformer/models/vit.py`` (VisionTransformer / Block / Attention / Mlp), not from
dfsearch's model, so these tests catch a naming drift on either side. Nothing is downloaded.
"""

from __future__ import annotations

import socket
from collections import OrderedDict

import pytest
import torch

from dfsearch.errors import WeightsError
from dfsearch.models import weights as W
from dfsearch.models.timesformer import TimeSformer

FB_ATTENTION = {"divided": "divided_space_time", "joint": "joint_space_time", "space_only": "space_only"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


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
    mapped, notes = W.map_timesformer_k400(sd, model, "TimeSformer.pyth")
    own = model.state_dict()
    assert set(mapped) == set(own) - {"head.weight", "head.bias"}
    assert all(mapped[k].shape == own[k].shape for k in mapped)
    assert any("stripped 'model.'" in n for n in notes) and any("400 classes" in n for n in notes)
    res = W.load_into(model, mapped, "TimeSformer.pyth", lambda k: k.startswith("head."), notes)
    assert res.missing == ["head.bias", "head.weight"] and res.unexpected == []


@pytest.mark.parametrize("space_time", ["divided", "joint"])
def test_pyth_file_loads_strictly_and_reports_what_changed(tmp_path, space_time):
    """The full file format; a 4-frame, 32-px model: time_embed interpolated, pos_embed resampled, head new."""
    path = tmp_path / W.TIMESFORMER_K400_FILES[space_time]
    shapes = fb_timesformer_shapes(space_time, dim=192, depth=2, frames=8, img=224)
    sd = save_pyth(path, shapes, space_time)
    model = TimeSformer(img_size=32, num_frames=4, space_time=space_time, vit_size="tiny")
    model.blocks = model.blocks[:2]  # a 2-block ViT-Ti keeps the file small; the key structure is the published one
    res = W.load_timesformer(model, W.read_state_dict(path), path)

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
        W.load_timesformer(model, W.read_state_dict(path), path)


def test_renamed_key_fails_naming_both_names(tmp_path):
    def rename(sd):
        sd["model.blocks.0.temporal_attention.qkv.weight"] = sd.pop("model.blocks.0.temporal_attn.qkv.weight")

    path, model = _small_file(tmp_path, edit=rename)
    with pytest.raises(WeightsError) as e:
        W.load_timesformer(model, W.read_state_dict(path), path)
    msg = str(e.value)
    assert "missing 1 keys" in msg and "blocks.0.temporal_attn.qkv.weight" in msg
    assert "1 unexpected keys: blocks.0.temporal_attention.qkv.weight" in msg


def test_other_attention_scheme_or_width_is_refused(tmp_path):
    path, model = _small_file(tmp_path, space_time="joint")
    with pytest.raises(WeightsError, match=r"joint space-time attention but model\.space_time is 'divided'.*TimeSformer_divST"):
        W.load_timesformer(model, W.read_state_dict(path), path)
    sd = {k: torch.empty(s, device="meta") for k, s in fb_timesformer_shapes("divided").items()}  # ViT-B into ViT-Ti
    with pytest.raises(WeightsError, match=r"embedding width 768.*model\.vit_size=base"):
        W.map_timesformer_k400(sd, model, path)


def test_k400_file_names_and_sizes():
    arch = lambda st, size="base": type("Arch", (), {"space_time": st, "vit_size": size})()  # noqa: E731
    assert W.timesformer_k400_file(arch("divided")) == "TimeSformer_divST_8x32_224_K400.pyth"
    assert W.timesformer_k400_file(arch("joint")) == "TimeSformer_jointST_8x32_224_K400.pyth"
    with pytest.raises(WeightsError, match="ViT-Base/16.*model.vit_size is 'tiny'"):
        W.timesformer_k400_file(arch("divided", "tiny"))
