"""TimeSformer: joint / divided / space_only; ImageNet ViT initialisation from a local timm state dict."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from dfsearch import config
from dfsearch.config import TrialConfig
from dfsearch.errors import WeightsError
from dfsearch.models import complexity, create
from dfsearch.models.timesformer import DividedBlock, TimeSformer


def ts_cfg(space_time="divided", size="tiny", frames=4, crop=32, pretrained="none") -> TrialConfig:
    return config.from_flat({"model.name": "timesformer", "model.space_time": space_time, "model.vit_size": size,
                             "model.pretrained": pretrained, "data.clip_len": frames, "data.crop_size": crop})


def clip(b=2, t=4, s=32):
    return torch.randn(b, 3, t, s, s, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("space_time", ["joint", "divided", "space_only"])
def test_each_attention_runs_forward_backward(space_time):
    torch.manual_seed(0)
    model = create(ts_cfg(space_time)).train()
    out = model(clip())
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    out.sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, unused  # DDP: no unused parameters
    keys = model.state_dict()
    assert ("time_embed" in keys) == (space_time != "space_only")
    assert any(".temporal_attn." in k for k in keys) == (space_time == "divided")


def test_divided_temporal_projection_starts_at_zero_and_time_embed_at_zero():
    model = TimeSformer(img_size=32, num_frames=4, vit_size="tiny", space_time="divided")
    assert all(isinstance(b, DividedBlock) for b in model.blocks)
    assert all(b.temporal_fc.weight.abs().sum() == 0 and b.temporal_fc.bias.abs().sum() == 0 for b in model.blocks)
    assert model.time_embed.abs().sum() == 0


def test_other_clip_lengths_interpolate_the_time_embedding():
    model = create(ts_cfg("joint")).eval()
    with torch.no_grad():
        assert model(clip(1, 2)).shape == (1, 2)
        assert model(clip(1, 8)).shape == (1, 2)
    with pytest.raises(ValueError, match="32x32"):
        model(clip(1, 4, 48))


def first_block_io(model, x: torch.Tensor, perturb_frame: int):
    """Block 0's output for its real input tokens and for the same tokens with one frame's patches changed
    (token layout: CLS, then patches ordered (n t)); returns (tokens index of each frame, out, out_changed)."""
    seen = {}
    hook = model.blocks[0].register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))  # returns None: args unchanged
    with torch.no_grad():
        model(x)
    hook.remove()
    t, (gh, gw) = x.shape[2], model.patch_embed.grid_size
    frame = lambda k: [1 + i * t + k for i in range(gh * gw)]  # noqa: E731
    tokens = seen["x"]
    changed = tokens.clone()
    changed[:, frame(perturb_frame)] += torch.randn(changed[:, frame(perturb_frame)].shape, generator=torch.Generator().manual_seed(1))
    blk = model.blocks[0]
    run = (lambda z: blk(z, t, gh, gw)) if isinstance(blk, DividedBlock) else blk
    with torch.no_grad():
        return frame, run(tokens), run(changed)


@pytest.mark.parametrize("space_time, temporal_on, sees_other_frames", [
    ("joint", None, True),       # every token attends over every frame's patches
    ("divided", False, False),   # temporal projection at zero (its init): spatial attention stays within the frame
    ("divided", True, True),     # trained temporal attention: a frame's tokens see the same position in other frames
])
def test_only_joint_or_temporal_attention_lets_a_frame_see_the_others(space_time, temporal_on, sees_other_frames):
    """Fails if `divided` were built as `joint` (its frames would see each other with the temporal path off), or if
    its temporal attention were not wired in."""
    torch.manual_seed(0)
    model = create(ts_cfg(space_time)).eval()
    if temporal_on:
        for b in model.blocks:
            torch.nn.init.normal_(b.temporal_fc.weight, std=0.1)
    frame, out, out_changed = first_block_io(model, clip(1), perturb_frame=0)
    assert not torch.allclose(out[:, frame(0)], out_changed[:, frame(0)])  # the changed frame itself moves
    assert torch.allclose(out[:, frame(1)], out_changed[:, frame(1)], atol=1e-6) != sees_other_frames


@pytest.mark.parametrize("space_time", ["divided", "joint"])
def test_imagenet_vit_initialises_timesformer(tmp_path, monkeypatch, space_time):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    vit_sd = vit.state_dict()
    monkeypatch.setenv("DFSEARCH_WEIGHTS", str(tmp_path))
    save_file(vit_sd, str(tmp_path / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"))
    model = create(ts_cfg(space_time, pretrained="imagenet"))
    res = model.pretrained_result
    depth = len(model.blocks)
    expected = {"head.weight", "head.bias", "time_embed"}
    if space_time == "divided":
        expected |= {f"blocks.{i}.temporal_fc.{p}" for i in range(depth) for p in ("weight", "bias")}
    assert set(res.missing) == expected and res.unexpected == []
    sd = model.state_dict()
    assert torch.equal(sd["blocks.3.mlp.fc1.weight"], vit_sd["blocks.3.mlp.fc1.weight"])
    assert torch.equal(sd["patch_embed.proj.weight"], vit_sd["patch_embed.proj.weight"])
    assert sd["pos_embed"].shape == (1, 2 * 2 + 1, 192)  # resampled 14×14 → 2×2 (+ CLS)
    assert torch.equal(sd["pos_embed"][:, 0], vit_sd["pos_embed"][:, 0])
    if space_time == "divided":  # temporal attention initialised by copying the spatial attention
        assert torch.equal(sd["blocks.5.temporal_attn.qkv.weight"], vit_sd["blocks.5.attn.qkv.weight"])
        assert torch.equal(sd["blocks.5.temporal_norm1.weight"], vit_sd["blocks.5.norm1.weight"])
        assert any("copying the spatial" in n for n in res.notes)
    assert model(clip()).shape == (2, 2)


def test_vit_b16_state_dict_file_initialises_default_timesformer(tmp_path):
    """The paper's size: a timm ViT-B/16 state dict saved to a file, given as a path (8 frames at 224²)."""
    vit_sd = timm.create_model("vit_base_patch16_224", pretrained=False).state_dict()
    path = tmp_path / "vit_b16.pth"
    torch.save(vit_sd, path)
    del vit_sd
    cfg = ts_cfg("divided", size="base", frames=8, crop=224, pretrained=str(path))
    model = create(cfg)
    res = model.pretrained_result
    assert set(res.missing) == {"head.weight", "head.bias", "time_embed"} | {
        f"blocks.{i}.temporal_fc.{p}" for i in range(12) for p in ("weight", "bias")}
    c = complexity(model, cfg)
    assert 121e6 < c["params"] < 122e6  # TimeSformer (divided) ViT-B/16: 121.4M
    assert 350 < c["gflops"] < 420


def test_a_checkpoint_of_the_wrong_size_is_refused(tmp_path):
    path = tmp_path / "vit_small.safetensors"
    save_file(timm.create_model("vit_small_patch16_224", pretrained=False).state_dict(), str(path))
    with pytest.raises(WeightsError, match="vit_small.safetensors.*shape mismatch"):
        create(ts_cfg("joint", size="tiny", pretrained=str(path)))


def test_own_timesformer_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    a = create(ts_cfg("divided"))
    path = tmp_path / "ts.pt"
    torch.save({"model": a.state_dict()}, path)
    b = create(ts_cfg("divided", frames=8, pretrained=str(path)))
    assert set(b.pretrained_result.missing) == {"head.weight", "head.bias"}
    assert b.time_embed.shape[1] == 8
    assert torch.equal(a.state_dict()["blocks.0.temporal_attn.qkv.weight"], b.state_dict()["blocks.0.temporal_attn.qkv.weight"])
