"""Cozzolino et al. (2017): the recast descriptor (fixed residual filter, quantisation, co-occurrence) + classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dfsearch import config, models
from dfsearch.models import residuals as R


def test_forward_shape_and_descriptor_is_a_histogram():
    model = models.create(config.from_flat({"model.name": "cozzolino", "data.clip_len": 2, "data.crop_size": 32})).eval()
    x = torch.randn(2, 3, 2, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 2)
        f = model.net.descriptor(x[:, :, 0])
    assert f.shape == (2, 1250) and (f >= 0).all()
    assert torch.allclose(f[:, :625].sum(1), torch.ones(2), atol=1e-4) and torch.allclose(f[:, 625:].sum(1), torch.ones(2), atol=1e-4)


def test_soft_cooccurrence_equals_the_hard_one_on_integer_residuals():
    r = torch.randint(-4, 5, (2, 1, 9, 11)).float()
    q = torch.ones(1)
    soft = R.soft_cooccurrence(R.soft_levels(r, q, 2), 4, vertical=False)
    hard = R.cooccurrence(R.quantise(r, q, 2), 5, 4, vertical=False)
    assert torch.allclose(soft, hard, atol=1e-6)


def test_the_residual_filters_stay_fixed_and_the_classifier_learns():
    torch.manual_seed(0)
    model = models.create(config.from_flat({"model.name": "cozzolino", "data.crop_size": 32})).train()
    names = {n for n, _ in model.named_parameters()}
    assert not any("kernel" in n or n.endswith(".q") for n in names)  # buffers: no optimiser can move them
    fixed = {k: v.clone() for k, v in model.state_dict().items() if "kernel" in k or k.endswith(".q")}
    assert torch.equal(fixed["net.kernel_h"][0, 0, 2, 0:4], torch.tensor([-1.0, 3.0, -3.0, 1.0]))  # 3rd order, centred
    head = model.net.head.weight.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        loss = F.cross_entropy(model(torch.randn(4, 3, 1, 32, 32)), torch.tensor([0, 1, 0, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in fixed.items())
    assert not torch.equal(model.net.head.weight, head)


def test_a_tiny_trial(tiny_trial, tmp_path):
    final, state = tiny_trial({"model.name": "cozzolino"}, tmp_path / "run")
    assert 0.0 <= final["test/auc"] <= 1.0 and final["test/videos"] == final["test/videos_expected"]
    assert torch.equal(state["model"]["net.kernel_v"][0, 0, 0:4, 2], torch.tensor([-1.0, 3.0, -3.0, 1.0]))
