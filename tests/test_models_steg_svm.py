"""Steganalysis rich-model features + linear SVM: the feature dimension, and a trial fitted in one pass."""

from __future__ import annotations

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
    assert fingerprint.of({"model.name": "steg_svm", "train.epochs": 5}) == fingerprint.of({"model.name": "steg_svm", "train.epochs": 1})
    with pytest.raises(ConfigError, match="train.epochs"):
        config.from_flat({"model.name": "steg_svm", "train.epochs": 0})  # still validated before it is canonicalised

    monkeypatch.delenv("FFPP_ROOT", raising=False)
    spec = run.load_spec(run.parse_args(["search_spaces/single_manipulation.yaml", "--smoke", "--set", "train.epochs=3"]))
    epochs = {}
    for flat in sweeps.trials(spec):
        epochs.setdefault(flat["model.name"], set()).add(config.to_flat(config.from_flat(flat))["train.epochs"])
    assert epochs.pop("steg_svm") == {1}
    assert len(epochs) == 9 and all(e == {3} for e in epochs.values()), epochs


def test_a_trial_fits_in_one_pass(tiny_trial, tmp_path):
    """Through the train loop: one epoch that fits (svm_frames frames of each training video), then validation,
    checkpoint and test as for any detector; the checkpoint holds the fitted hyperplane."""
    final, state = tiny_trial({"model.name": "steg_svm", "model.svm_frames": 3}, tmp_path / "run")
    assert final["test/videos"] == final["test/videos_expected"] and 0.0 <= final["test/auc"] <= 1.0
    history = state["history"]
    assert len(history) == 1 and history[0]["train/features"] == 3750
    assert history[0]["train/frames"] > 0 and history[0]["train/frames"] % 3 == 0  # 3 frames of each training video
    assert state["model"]["net.coef"].abs().sum() > 0
