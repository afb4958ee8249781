"""Frame baselines (XceptionNet, Meso4, MesoInception4) and DDP compatibility of the zoo."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from dfsearch import config
from dfsearch.config import TrialConfig
from dfsearch.models import complexity, create
from dfsearch.models.frame import MesoInception4, Meso4


def frame_cfg(name, frames=3, crop=64, pretrained="none") -> TrialConfig:
    return config.from_flat({"model.name": name, "model.pretrained": pretrained, "data.clip_len": frames, "data.crop_size": crop})


@pytest.mark.parametrize("name", ["xception", "meso4", "mesoinception4"])
def test_frame_model_scores_frames_and_averages_over_time(name):
    torch.manual_seed(0)
    model = create(frame_cfg(name)).train()
    x = torch.randn(2, 3, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 2)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():  # clip logits == mean of the per-frame logits
        per_frame = torch.stack([model.net(x[:, :, t]) for t in range(3)], dim=1).mean(dim=1)
        assert torch.allclose(model(x), per_frame, atol=1e-5)
        assert model(x[:, :, :1]).shape == (2, 2)  # a single frame works too


def test_meso_parameter_counts_match_afchar():
    # Keras Meso4 / MesoInception4 have 27,977 / 28,615 parameters with one sigmoid output; ours has 2 logits (+17)
    assert sum(p.numel() for p in Meso4().parameters()) == 27977 + 17
    assert sum(p.numel() for p in MesoInception4().parameters()) == 28615 + 17
    with torch.no_grad():
        assert Meso4().eval()(torch.randn(1, 3, 256, 256)).shape == (1, 2)


def test_xception_imagenet_file_loads_with_only_the_head_new(tmp_path, monkeypatch):
    monkeypatch.setenv("DFSEARCH_WEIGHTS", str(tmp_path))
    ref = timm.create_model("legacy_xception", pretrained=False).state_dict()
    save_file(ref, str(tmp_path / "legacy_xception.tf_in1k.safetensors"))
    model = create(frame_cfg("xception", pretrained="imagenet"))
    assert model.pretrained_result.missing == ["net.fc.bias", "net.fc.weight"]
    assert torch.equal(model.state_dict()["net.block3.rep.1.conv1.weight"], ref["block3.rep.1.conv1.weight"])
    c = complexity(model, frame_cfg("xception", frames=1, crop=299))
    assert 20e6 < c["params"] < 21.5e6 and 15 < c["gflops"] < 18


def test_models_train_under_ddp(tmp_path):
    """Each family under DDP (gloo, find_unused_parameters=False): every parameter gets a finite gradient, equal
    to the gradient without DDP; an SGD step moves every parameter whose gradient is non-zero; a second step
    succeeds (DDP raises there when a parameter went unused in the first)."""
    import copy

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        cfgs = [
            {"model.depth": 10, "model.widen_factor": 0.125, "model.attention": "nonlocal", "model.placement": "1,2,4",
             "data.clip_len": 4, "data.crop_size": 32},
            {"model.depth": 18, "model.widen_factor": 0.125, "model.attention": "se", "model.placement": "4,4",
             "data.clip_len": 4, "data.crop_size": 32},
            {"model.name": "timesformer", "model.vit_size": "tiny", "model.space_time": "divided", "data.clip_len": 4,
             "data.crop_size": 32},
            {"model.name": "mesoinception4", "data.clip_len": 2, "data.crop_size": 64},
        ]
        for flat in cfgs:
            cfg = config.from_flat(flat)
            torch.manual_seed(0)
            plain = create(cfg).train()
            model = DDP(copy.deepcopy(plain), find_unused_parameters=False)
            x = torch.randn(2, 3, cfg.data.clip_len, cfg.data.crop_size, cfg.data.crop_size)
            for m in (plain, model):
                torch.manual_seed(1)  # same dropout / drop-path draws
                m(x).sum().backward()
            name = flat.get("model.name", "resnet3d")
            for (key, p), q in zip(plain.named_parameters(), model.module.parameters()):
                assert q.grad is not None and torch.isfinite(q.grad).all(), f"{name}: {key}"
                assert torch.allclose(q.grad, p.grad, rtol=1e-4, atol=1e-6), f"{name}: {key}"
            before = {k: p.detach().clone() for k, p in model.module.named_parameters()}
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            opt.step()
            moved = {k for k, p in model.module.named_parameters() if not torch.equal(p, before[k])}
            assert moved == {k for k, p in model.module.named_parameters() if p.grad.abs().sum() > 0}, name
            assert any(k.endswith("weight") and ("head" in k or "fc" in k) for k in moved), name  # the classifier learns
            opt.zero_grad()
            loss = model(x).sum()
            loss.backward()
            opt.step()
            assert torch.isfinite(loss), name
    finally:
        dist.destroy_process_group()
