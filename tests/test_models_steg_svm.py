"""Steganalysis rich-model features + linear SVM: the feature dimension, and a trial fitted in one pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dfsearch import config, models, sweeps
from dfsearch.errors import ConfigError
from dfsearch.models.steg_svm import RESIDUALS


def test_forward_shape_and_feature_dimension():
    model = models.create(config.from_flat({"model.name": "steg_svm", "train.epochs": 1, "data.clip_len": 2, "data.crop_size": 32}))
    x = torch.randn(2, 3, 2, 32, 32)
    f = model.net.features(x[:, :, 0])
    assert len(RESIDUALS) == 6 and f.shape == (2, 6 * 5**4) == (2, 3750)
    assert torch.allclose(f.view(2, 6, 625).sum(-1), torch.ones(2, 6), atol=1e-5)  # one histogram per residual
    with torch.no_grad():
        assert torch.allclose(torch.softmax(model(x), 1), torch.full((2, 2), 0.5))  # unfitted: every frame 0.5
    assert sum(p.numel() for p in model.parameters()) == 3751 and not any(p.requires_grad for p in model.parameters())


def test_one_pass_family_runs_one_epoch_whatever_was_asked(monkeypatch):
    """train.epochs is canonicalised to 1 for a one-pass family (what runs is what the params and fingerprint say):
    `run single_manipulation.yaml --smoke --set train.epochs=3` means 3 epochs for the SGD models, 1 fit for the SVM."""
    from dfsearch import fingerprint, run

    assert models.get("steg_svm").one_pass.frames_key == "svm_frames"
    cfg = config.from_flat({"model.name": "steg_svm", "train.epochs": 5})
    assert cfg.train.epochs == 1 and config.to_flat(cfg)["train.epochs"] == 1
    asked = fingerprint.fingerprint({"model.name": "steg_svm", "train.epochs": 5})
    assert asked == fingerprint.fingerprint({"model.name": "steg_svm", "train.epochs": 1})
    with pytest.raises(ConfigError, match="train.epochs"):
        config.from_flat({"model.name": "steg_svm", "train.epochs": 0})  # still validated before it is canonicalised

    monkeypatch.setenv("FFPP_ROOT", "synthetic")  # --smoke replaces data.root
    argv = [str(Path(__file__).parents[1] / "search_spaces/single_manipulation.yaml"), "--smoke", "--set", "train.epochs=3"]
    ran = [config.to_flat(config.from_flat(flat)) for flat in sweeps.trials(run.load_spec(run.parse_args(argv)))]
    assert len(ran) == 40
    assert sorted(f["train.epochs"] for f in ran if f["model.name"] == "steg_svm") == [1] * 4
    assert sorted(f["train.epochs"] for f in ran if f["model.name"] != "steg_svm") == [3] * 36
