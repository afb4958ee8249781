"""3D ResNet (Hara-compatible), SE / non-local blocks, placements, create(), complexity, input_stats."""

from __future__ import annotations

import pytest
import torch

from dfsearch.bench.models import NaiveNonLocal3d, nonlocal_naive, use_naive_nonlocal
from dfsearch import config, fingerprint
from dfsearch.errors import ConfigError
from dfsearch.config import TrialConfig
from dfsearch.models import complexity, create, input_stats
from dfsearch.models.attention import NonLocal3d, SE3d
from dfsearch.models.resnet3d import ResNet3d, blocks_per_stage



def parse_placement(placement) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``, validated as the typed config validates ``model.placement``."""
    return list(config.from_flat({"model.attention": "se", "model.placement": placement}).model.arch.placement)


PLACEMENTS = ["1,2", "3,4", "1,2,3", "4,4", "1,2,4", "1,2,3,4", "2"]


def tiny_cfg(**model) -> TrialConfig:
    flat = {"model.depth": 10, "model.widen_factor": 0.125, "data.clip_len": 4, "data.crop_size": 32}
    return config.from_flat({**flat, **{f"model.{k}": v for k, v in model.items()}})


def clip(b=2, t=4, s=32, seed=0):
    return torch.randn(b, 3, t, s, s, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- placements


def test_blocks_per_stage_follows_table_ii():
    assert blocks_per_stage(parse_placement("1,2")) == {1: 1, 2: 1}
    assert blocks_per_stage(parse_placement("1,2,3,4")) == {1: 1, 2: 1, 3: 1, 4: 1}
    assert blocks_per_stage(parse_placement("4,4")) == {4: 4}  # caption: 4 non-local blocks after stage 4
    assert blocks_per_stage(parse_placement("1,2,4")) == {1: 1, 2: 1, 4: 1}


CASES = [("none", "1,2,3,4")] + [(a, p) for a in ("se", "nonlocal") for p in PLACEMENTS]


@pytest.mark.parametrize("attention,placement", CASES)
def test_every_placement_runs_forward_backward(attention, placement):
    torch.manual_seed(0)
    model = create(tiny_cfg(attention=attention, placement=placement)).train()
    out = model(clip())
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    out.sum().backward()
    # DDP-safe: every parameter took part in the forward and got a gradient
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, unused
    expected = blocks_per_stage(parse_placement(placement)) if attention != "none" else {}
    for stage in (1, 2, 3, 4):
        blocks = getattr(model, f"attn{stage}", None)
        if stage in expected:
            kind = SE3d if attention == "se" else NonLocal3d
            assert len(blocks) == expected[stage] and all(type(b) is kind for b in blocks)
        else:
            assert blocks is None
    # Hara's own keys are untouched by the attention blocks
    assert all(k.startswith(("conv1", "bn1", "layer", "attn", "fc")) for k in model.state_dict())


def test_four_four_builds_four_blocks_after_stage_4():
    model = create(tiny_cfg(attention="nonlocal", placement="4,4"))
    assert len(model.attn4) == 4 and not hasattr(model, "attn1")
    assert model.attn4[0].channels == model.fc.in_features


@pytest.mark.parametrize("placement", ["1,2,3,4", "4,4"])
def test_zero_gamma_nonlocal_is_identity_at_init(placement):
    torch.manual_seed(0)
    plain = create(tiny_cfg())
    nl = create(tiny_cfg(attention="nonlocal", placement=placement))
    missing = nl.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("attn") for k in missing)
    x = clip()
    for mode in ("eval", "train"):
        getattr(plain, mode)(), getattr(nl, mode)()
        with torch.no_grad():
            a, b = plain(x), nl(x)
        assert torch.equal(a, b), (mode, (a - b).abs().max())
    # ...and not trivially: with γ != 0 the logits change
    for blk in nl.modules():
        if isinstance(blk, NonLocal3d):
            torch.nn.init.constant_(blk.bn.weight, 1.0)
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(x), nl.eval()(x))


# ---------------------------------------------------------------------------------------------- non-local


@pytest.mark.parametrize("subsample", [False, True])
@pytest.mark.parametrize("scale", [False, True])
def test_fused_nonlocal_matches_naive_reference(subsample, scale):
    torch.manual_seed(0)
    block = NonLocal3d(16, subsample=subsample, scale=scale).eval()
    torch.nn.init.normal_(block.bn.weight)  # γ != 0 so the attention path matters
    torch.nn.init.normal_(block.bn.bias)
    x = torch.randn(2, 16, 4, 14, 14, requires_grad=True)  # N = 784 positions
    fused = block(x)
    grad_fused = torch.autograd.grad(fused.square().sum(), [x, block.theta.weight, block.g.weight])
    naive = nonlocal_naive(block, x)
    grad_naive = torch.autograd.grad(naive.square().sum(), [x, block.theta.weight, block.g.weight])
    assert (fused - naive).abs().max().item() <= 1e-4
    assert (fused - x).abs().max().item() > 1e-2  # the block did something
    for gf, gn in zip(grad_fused, grad_naive):  # gradients agree to 1e-4 of their scale
        assert (gf - gn).abs().max() <= 1e-4 * gn.abs().max()


def test_naive_switch_keeps_parameters_and_outputs():
    torch.manual_seed(0)
    model = create(tiny_cfg(attention="nonlocal", placement="1,2,3,4")).eval()
    for m in model.modules():
        if isinstance(m, NonLocal3d):
            torch.nn.init.normal_(m.bn.weight)
    x = clip()
    with torch.no_grad():
        fused = model(x)
        keys = list(model.state_dict())
        assert use_naive_nonlocal(model) == 4
        assert all(type(m) is NaiveNonLocal3d for m in model.modules() if isinstance(m, NonLocal3d))
        naive = model(x)
    assert list(model.state_dict()) == keys
    assert (fused - naive).abs().max().item() <= 1e-4


def test_nonlocal_uses_linear_memory_kernel():
    """SDPA must not materialise N×N: the fused forward+backward stays far below one N×N matrix."""
    from dfsearch.bench.models import cpu_peak_bytes

    block = NonLocal3d(32).train()
    x = torch.randn(1, 32, 8, 28, 28, requires_grad=True)  # N = 6,272 as stage 1 of a 16×112² clip
    n = 8 * 28 * 28
    fused = cpu_peak_bytes(lambda: block(x).sum().backward())
    assert fused < 0.25 * n * n * 4, fused


def test_se_block_rescales_channels():
    se = SE3d(32, reduction=16, init="hu2018")
    assert se.fc1.out_features == 2
    x = torch.randn(2, 32, 2, 4, 4).abs()
    y = se(x)
    ratio = y / x  # one sigmoid gate per (sample, channel), in (0, 1)
    assert torch.allclose(ratio, ratio[:, :, :1, :1, :1].expand_as(ratio), atol=1e-5)
    assert (ratio > 0).all() and (ratio < 1).all()


def test_a_fresh_se_block_is_the_identity_and_then_learns_a_gate_per_channel():
    se = SE3d(32, reduction=16)  # init="identity", the default
    x = torch.randn(2, 32, 2, 4, 4).abs()
    assert torch.equal(se(x), x)  # a pretrained stage's output passes unchanged at the start
    se(x).square().mean().backward()  # a gradient reaches the zeroed W2, so the gate can move off 1
    assert se.fc2.weight.grad.abs().sum() > 0
    with torch.no_grad():
        se.fc2.bias.fill_(-20.0)
    ratio = se(x) / x  # 2·σ(·): the gate spans (0, 2) and can switch a channel off
    assert (ratio < 1e-6).all()


def test_se_init_is_a_model_setting_with_its_own_fingerprint():
    flat = {"model.attention": "se", "model.placement": "1,2"}
    assert config.to_flat(config.from_flat(flat))["model.se_init"] == "identity"
    assert fingerprint.fingerprint(flat) != fingerprint.fingerprint({**flat, "model.se_init": "hu2018"})
    assert "model.se_init" not in config.to_flat(config.from_flat({"model.attention": "nonlocal"}))
    model = create(tiny_cfg(attention="se", placement="1,2", se_init="hu2018"))
    assert {m.init for m in model.modules() if isinstance(m, SE3d)} == {"hu2018"}
    with pytest.raises(ConfigError, match="model.se_init: 'x' is not one of identity, hu2018"):
        config.from_flat({**flat, "model.se_init": "x"})


# ---------------------------------------------------------------------------------------------- shapes


def test_any_clip_length_including_a_250_frame_trunk():
    model = create(tiny_cfg(attention="nonlocal", placement="3,4")).eval()
    with torch.no_grad():
        assert model(clip(1, 250, 32)).shape == (1, 2)
        assert model(clip(1, 1, 48)).shape == (1, 2)


@pytest.mark.parametrize("depth", [34, 50])
def test_bottleneck_and_shortcut_options(depth):
    cfg = tiny_cfg(depth=depth, shortcut="A", conv1_t_size=3, conv1_t_stride=2, no_max_pool=True, dropout=0.2)
    model = create(cfg).train()
    assert not any("downsample" in k for k in model.state_dict())  # shortcut A has no parameters
    out = model(clip())
    out.sum().backward()
    assert out.shape == (2, 2) and model.conv1.kernel_size == (3, 7, 7) and model.conv1.stride == (2, 2, 2)
    assert all(p.grad is not None for p in model.parameters())
    b = create(tiny_cfg(depth=depth, shortcut="B"))
    assert "layer2.0.downsample.0.weight" in b.state_dict()


# ------------------------------------------------------------------------------------ complexity & stats


def test_complexity_reports_params_and_flops():
    plain = create(tiny_cfg())
    c = complexity(plain, tiny_cfg())
    assert c["params"] == sum(p.numel() for p in plain.parameters())
    assert c["gflops"] > 0 and c["gmacs"] == pytest.approx(c["gflops"] / 2)
    cfg = tiny_cfg(attention="nonlocal", placement="1,2,3,4")
    nl = complexity(create(cfg), cfg)
    assert nl["params"] > c["params"] and nl["gflops"] > c["gflops"]
    longer = complexity(plain, tiny_cfg(), frames=8)
    assert longer["gflops"] > 1.5 * c["gflops"]


def test_full_size_r3d50_complexity_on_meta():
    cfg = TrialConfig()  # r3d-50, 16×112²
    with torch.device("meta"):
        model = ResNet3d(depth=50)
    c = complexity(model, cfg)
    assert 45e6 < c["params"] < 47e6  # Hara's r3d-50: 46.2M parameters with a 2-class head
    assert 15 < c["gflops"] < 25


def test_input_stats_match_the_weights():
    stats = lambda **flat: input_stats(config.from_flat({f"model.{k}": v for k, v in flat.items()}))  # noqa: E731
    assert stats() == ((0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737))
    mean, std = stats(pretrained="kinetics400")  # Hara's CVPR-2018 files: 0-255 minus the ActivityNet mean
    assert mean[0] == pytest.approx(114.7748 / 255) and std == (1 / 255,) * 3
    assert stats(pretrained="kinetics700") == stats()
    assert stats(name="timesformer") == ((0.5,) * 3, (0.5,) * 3)
    assert stats(name="meso4") == ((0.0,) * 3, (1.0,) * 3)
