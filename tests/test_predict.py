"""dfsearch.predict without Ray: a model folder (weights-only state dict + trial config) scores real mp4 files
of the synthetic tree exactly as the train loop's test evaluation scores them, and bad files get one line each.

The end-to-end path (a sweep's logged MLflow model, loaded with mlflow.pytorch.load_model and by run id) is in
tests/test_mlflow.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dfsearch import config, data, models
from dfsearch.models.attention import SE3d
from dfsearch.tracking.run_view import config_yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "data.root": "synthetic", "data.synthetic_pairs": 3, "data.synthetic_frames": 24, "data.synthetic_size": 96,
    "data.clip_len": 8, "data.crop_size": 64, "data.num_workers": 0, "data.test_trunk": 10,
    "model.name": "resnet3d", "model.depth": 10, "model.widen_factor": 0.125, "model.conv1_t_size": 3,
    "model.attention": "nonlocal", "model.placement": "2,3", "train.amp": False, "eval.batch_size": 2,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A prepared tiny synthetic tree and a random-init model folder (state_dict.pt + trial.yaml)."""
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("DFSEARCH_CACHE", str(cache))
    cfg = config.from_flat(TINY)
    data.ensure_prepared(cfg.data)
    torch.manual_seed(0)
    model = models.build(cfg)
    for p in model.parameters():  # break the zero-init of the non-local output BN, so attention matters
        if p.dim() == 1:
            torch.nn.init.normal_(p, 0.0, 0.5)
    folder = tmp_path_factory.mktemp("model")
    torch.save(model.state_dict(), folder / "state_dict.pt")
    (folder / "trial.yaml").write_text(config_yaml(config.to_flat(cfg)))
    yield cfg, folder, cache
    mp.undo()


def test_predict_equals_the_test_evaluation(tiny):
    """Same face track, same test view (10-frame trunks of a 24-frame video: 3 views), same batching: the
    probability predict gives a test video equals what the train loop's evaluation gives it."""
    from dfsearch.inference import load_detector, predict
    from dfsearch.train.loop import Normalizer, Ranks, score_videos

    cfg, folder, _ = tiny
    det = load_detector(str(folder), device="cpu")
    test = data.build_datasets(cfg).test
    expected = {vid: p for vid, _, p in score_videos(det.model, test, Normalizer(cfg, det.device), cfg, Ranks())}
    videos = {v.video_id: str(v.path) for v in test.r.videos}
    picked = sorted(videos)[:3]
    results = predict(det, [videos[v] for v in picked])
    for vid, r in zip(picked, results):
        assert not r.error, r.error
        assert r.views == 3 and r.frames == 24
        assert r.prob_fake == pytest.approx(expected[vid], abs=1e-5), vid
    assert len({round(r.prob_fake, 6) for r in results}) > 1  # the videos really score differently


def write_faceless(path: Path) -> None:
    import av

    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 96, 96, "yuv420p"
        for i in range(12):
            img = np.zeros((96, 96, 3), np.uint8)
            img[:, :, 0] = np.linspace(0, 255, 96, dtype=np.uint8)[None, :]
            img[:, :, 1] = (i * 20) % 255
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_bad_videos_get_one_line_each_and_exit_1(tiny, tmp_path):
    cfg, folder, cache = tiny
    good = str(data.build_datasets(cfg).test.r.videos[0].path)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    faceless = tmp_path / "faceless.mp4"
    write_faceless(faceless)
    missing = tmp_path / "missing.mp4"
    env = {"DFSEARCH_CACHE": str(cache), "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run([sys.executable, "-m", "dfsearch.predict", good, str(corrupt), str(faceless), str(missing),
                          "--model", str(folder), "--json", "--device", "cpu"], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3, out.stderr
    for path, why in ((corrupt, "not a readable video"), (faceless, "no face"), (missing, "no such file")):
        assert sum(str(path) in e for e in errors) == 1, (path, errors)
        assert any(str(path) in e and why in e for e in errors), (path, why, errors)
    rows = json.loads(out.stdout)
    assert [r["video"] for r in rows] == [good, str(corrupt), str(faceless), str(missing)]
    assert 0.0 <= rows[0]["prob_fake"] <= 1.0 and rows[0]["label"] in ("real", "fake") and "error" not in rows[0]
    assert all(r["prob_fake"] is None and r["error"] for r in rows[1:])


def test_unusable_model_is_one_clear_line(tiny, tmp_path):
    _, folder, cache = tiny
    env = {"DFSEARCH_CACHE": str(cache), "PATH": str(Path(sys.executable).parent)}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "trial.yaml").write_text((folder / "trial.yaml").read_text().replace("depth: 10", "depth: 18"))
    (bad / "state_dict.pt").write_bytes((folder / "state_dict.pt").read_bytes())
    for model, why in ((tmp_path / "nothing", "not a folder"), (bad, "do not fit")):
        out = subprocess.run([sys.executable, "-m", "dfsearch.predict", "x.mp4", "--model", str(model)], capture_output=True, text=True,
                             cwd=REPO, env=env, timeout=300)
        assert out.returncode == 2 and why in out.stderr and "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize("arch", [
    {"model.attention": "nonlocal", "model.placement": "2,3"},
    {"model.attention": "se", "model.placement": "1,4"},
    {"model.name": "timesformer", "model.space_time": "divided", "model.vit_size": "tiny", "data.crop_size": 32, "data.clip_len": 4},
    {"model.name": "timesformer", "model.space_time": "joint", "model.vit_size": "tiny", "data.crop_size": 32, "data.clip_len": 4},
])
def test_explain_writes_attention_pngs(arch, tmp_path):
    """Attention maps are distributions (the non-local query's weights and the CLS rollout sum to 1 over the
    clip), SE weights lie in (0, 2) (the gate of an SE block that starts as the identity), and each kind becomes
    one non-empty PNG."""
    from dfsearch.inference import attention as explain
    from dfsearch.inference import Detector

    base = {k: v for k, v in TINY.items() if not k.startswith("model.") or arch.get("model.name", "resnet3d") == "resnet3d"}
    cfg = config.from_flat({**base, **arch})
    torch.manual_seed(0)
    model = models.build(cfg).eval()
    det = Detector(cfg, model, {}, "test", torch.device("cpu"))
    t, s = cfg.data.clip_len, cfg.data.crop_size
    clip = torch.randint(0, 256, (1, 3, t, s, s), dtype=torch.uint8)
    if arch.get("model.attention") == "nonlocal":
        maps, prob = explain.nonlocal_maps(det, clip)
        assert len(maps) == 2 and 0.0 <= prob <= 1.0
        for _, m in maps:
            assert m.ndim == 3 and m.sum() == pytest.approx(1.0, abs=1e-4) and (m >= 0).all()
    elif arch.get("model.attention") == "se":
        blocks = [m for m in model.modules() if isinstance(m, SE3d)]
        for block in blocks:  # off the identity start, so the weights differ from channel to channel
            torch.nn.init.normal_(block.fc2.weight, 0.0, 1.0)
            torch.nn.init.normal_(block.fc2.bias, 0.0, 1.0)
        weights, _ = explain.se_weights(det, clip)
        assert [len(w) for _, w in weights] == [b.channels for b in blocks] and len(weights) == 2
        assert all(((w > 0) & (w < 2)).all() and w.std() > 0 for _, w in weights)  # 2·σ: the identity-start gate
    else:
        from dfsearch.models.timesformer import attention_rollout
        from dfsearch.train.loop import Normalizer

        [(_, rollout)], _ = attention_rollout(model, Normalizer(cfg, det.device)(clip))
        assert rollout.shape == (t, s // 16, s // 16)
        assert 0.0 < rollout.sum() <= 1.0 + 1e-4  # the CLS row of a row-stochastic product, minus its CLS->CLS part
    pngs = explain.explain_clip(det, clip, tmp_path, "clip")
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pngs[0].stat().st_size > 5000


def test_a_model_logged_before_se_init_existed_loads_with_the_se_blocks_it_was_trained_with(tmp_path):
    """A logged trial.yaml lacks settings added since (config.as_logged): an SE model logged before model.se_init
    existed had Hu et al.'s gate, and must not come back with today's identity-start gate around its weights."""
    from dfsearch.inference import load_detector

    arch = {**{k: v for k, v in TINY.items() if k.startswith("model.")}, "model.attention": "se", "model.placement": "1,4"}
    cfg = config.from_flat({**TINY, **arch, "model.se_init": "hu2018"})
    torch.manual_seed(0)
    trained = models.build(cfg).eval()
    flat = {k: v for k, v in config.to_flat(cfg).items() if k != "model.se_init"}  # as an older dfsearch logged it
    torch.save(trained.state_dict(), tmp_path / "state_dict.pt")
    (tmp_path / "trial.yaml").write_text(config_yaml(flat, "trial config of MLflow run 0123"))
    det = load_detector(str(tmp_path), device="cpu")
    assert det.cfg.model.arch.se_init == "hu2018"
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(det.model(clip), trained(clip))
    # the same file without dfsearch's header is a config of the user's: today's defaults
    assert config.is_logged_yaml(tmp_path / "trial.yaml")
    (tmp_path / "mine.yaml").write_text(config_yaml(flat))
    assert not config.is_logged_yaml(tmp_path / "mine.yaml")
    assert config.from_flat(config.flat_from_yaml(tmp_path / "mine.yaml")).model.arch.se_init == "identity"
    # a run's params read back (the report, run's skip): the same value it trained with
    from dfsearch import fingerprint

    params = {k: str(v) for k, v in flat.items()}
    assert fingerprint.from_params(params)["model.se_init"] == "hu2018"
    assert fingerprint.of_run({}, params) == fingerprint.fingerprint({**flat, "model.se_init": "hu2018"})
