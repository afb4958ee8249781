"""Rahmouni et al. (2017): the statistical pooling layer's four statistics per channel."""

from __future__ import annotations

import torch

from dfsearch import config, models
from dfsearch.models.rahmouni import StatPool


def test_forward_shape():
    model = models.create(config.from_flat({"model.name": "rahmouni", "data.clip_len": 2, "data.crop_size": 48})).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, 2, 48, 48)).shape == (3, 2)
    assert model.net.mlp[0].in_features == 4 * 32  # 4 statistics of 32 filters, whatever the input size


def test_stat_pool_is_mean_variance_max_min_per_channel():
    x = torch.randn(2, 5, 7, 9)
    out = StatPool()(x)
    flat = x.flatten(2)
    assert out.shape == (2, 20)
    assert torch.allclose(out[:, 0:5], flat.mean(-1))
    assert torch.allclose(out[:, 5:10], flat.var(-1, unbiased=False), atol=1e-6)
    assert torch.equal(out[:, 10:15], flat.max(-1).values) and torch.equal(out[:, 15:20], flat.min(-1).values)


def test_a_tiny_trial(tiny_trial, tmp_path):
    final, state = tiny_trial({"model.name": "rahmouni", "model.rahmouni_layers": 1}, tmp_path / "run")
    assert 0.0 <= final["test/auc"] <= 1.0 and final["test/videos"] == final["test/videos_expected"]
    assert "net.filters.0.weight" in state["model"] and "net.filters.2.weight" not in state["model"]  # 1 layer
