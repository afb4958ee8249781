"""Bayar & Stamm (2016): the constrained convolutional layer stays a prediction-error filter after every step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dfsearch import config, models
from dfsearch.models.bayar import BayarNet


def constrained_ok(w: torch.Tensor) -> bool:
    c = w.shape[-1] // 2
    rest = w.sum(dim=(2, 3)) - w[:, :, c, c]
    return bool(torch.allclose(w[:, :, c, c], torch.full_like(rest, -1.0)) and torch.allclose(rest, torch.ones_like(rest), atol=1e-5))


def test_forward_shape_and_per_frame_average():
    model = models.create(config.from_flat({"model.name": "bayar", "data.clip_len": 3, "data.crop_size": 64})).eval()
    x = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (2, 2)
        assert torch.allclose(model(x), torch.stack([model.net(x[:, :, t]) for t in range(3)], 1).mean(1), atol=1e-5)
    assert constrained_ok(model.net.constrained.weight)  # projected at init


def test_the_filter_is_reprojected_after_an_optimiser_step():
    """A step moves the weights off the constraint; the spec's after_step hook (what the train loop calls) puts
    them back: centre -1, the other 24 weights of each (filter, channel) summing to 1."""
    torch.manual_seed(0)
    spec = models.get("bayar")
    model = models.create(config.from_flat({"model.name": "bayar", "data.crop_size": 64})).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = model.net.constrained.weight.detach().clone()
    loss = F.cross_entropy(model(torch.randn(4, 3, 1, 64, 64)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    opt.step()
    assert not constrained_ok(model.net.constrained.weight)  # the step alone breaks it
    spec.after_step(model)
    w = model.net.constrained.weight
    assert constrained_ok(w) and not torch.equal(w, before)  # constrained again, and it did learn


def test_projection_of_a_degenerate_filter():
    net = BayarNet(fc=8)
    with torch.no_grad():
        net.constrained.weight.zero_()
    net.project()
    assert constrained_ok(net.constrained.weight) and torch.isfinite(net.constrained.weight).all()


def test_a_tiny_trial_keeps_the_constraint(tiny_trial, tmp_path):
    final, state = tiny_trial({"model.name": "bayar", "model.bayar_fc": 16}, tmp_path / "run")
    assert 0.0 <= final["test/auc"] <= 1.0 and final["test/videos"] == final["test/videos_expected"]
    assert constrained_ok(state["model"]["net.constrained.weight"])  # after every step of the loop
