"""The synthetic FF++ stand-in: its traces are what the module docstring says, and detectors recover the planted
answer (slow tests: real training through dfsearch.train, no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dfsearch.config import METHODS
from dfsearch.data import synthetic as S
from dfsearch.data.splits import check_disjoint, load_splits


def people(size=128):
    photos = S.face_photos()
    return [S.make_identity(i, np.random.default_rng([0, i]), size, photos) for i in (71, 54)]


def test_face_photos_are_package_data():
    photos = S.face_photos()
    assert len(photos) == 2 and all(p.shape == (S.PATCH, S.PATCH, 3) and p.dtype == np.uint8 for p in photos)
    assert not np.array_equal(photos[0], photos[1])


def test_splits_are_official_pairs_scaled_down():
    splits = S.scaled_official_splits(50)
    assert {k: len(v) for k, v in splits.items()} == {"train": 30, "val": 10, "test": 10}
    official = load_splits()
    assert all(splits[k] == official[k][: len(splits[k])] for k in splits)
    check_disjoint(splits)
    # >= 40 test videos per single-method protocol (2 reals + 2 fakes per pair), as issue 8 asks
    assert 4 * len(splits["test"]) >= 40
    assert S.split_counts(3) == {"train": 1, "val": 1, "test": 1}


def test_deepfakes_is_the_real_video_reordered(tmp_path):
    """The temporal family: each decoded Deepfakes frame is exactly a decoded frame of the real video, pixel for
    pixel after x264 (reordered, then stored losslessly), only the order differs."""
    from dfsearch.data.video import read_all

    t, _ = people(96)
    n = 24
    frames = S.render_video(t, None, "original", n, 96, seed=0)
    S.write_mp4(tmp_path / "real.mp4", frames, S.QP["c40"])
    S.write_reordered(tmp_path / "fake.mp4", frames, S.QP["c40"], np.random.default_rng(1))
    real, fake = read_all(tmp_path / "real.mp4"), read_all(tmp_path / "fake.mp4")
    keys = lambda ps: sorted(p.tobytes() for p in ps)  # noqa: E731
    assert keys(fake) == keys(real)  # the same multiset of frames: a per-frame detector cannot tell them apart
    moved = [i for i in range(n) if not np.array_equal(fake[i], real[i])]
    assert len(moved) >= n // 3
    for i in moved:  # ... moved by less than a block
        j = next(j for j in range(n) if np.array_equal(fake[i], real[j]))
        assert abs(i - j) < S.SHUFFLE_BLOCK
    # and it flickers: neighbouring frames differ more than the real video's do
    step = lambda ps: np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(ps, ps[1:])])  # noqa: E731
    assert step(fake) > 1.5 * step(real)


def test_face2face_flickers_in_skin_tone():
    """The second temporal family: the skin tone jumps between T's and S's from frame to frame, while the real
    video's tone holds still (its light changes brightness, not hue)."""
    t, s = people()
    real = np.array(S.face_patches(t, s, "original", 24, np.random.default_rng(0)), np.float32)
    fake = np.array(S.face_patches(t, s, "Face2Face", 24, np.random.default_rng(0)), np.float32)

    def hue_steps(frames):  # per-channel share of the mean colour, change from frame to frame
        rgb = frames.mean(axis=(1, 2))
        return np.abs(np.diff(rgb / rgb.mean(1, keepdims=True), axis=0))

    assert hue_steps(fake).mean() > 3 * hue_steps(real).max()
    ratio = fake.mean(axis=(1, 2)) / real.mean(axis=(1, 2))  # the light and the mouth cancel, the tint remains
    assert np.ptp(ratio / ratio.mean(1, keepdims=True), axis=0).max() > 0.1


def test_spatial_traces_are_in_every_frame_inside_the_face_box():
    t, s = people()
    real = np.array(S.face_patches(t, s, "original", 8, np.random.default_rng(0)), np.float32)
    inner = (slice(24, 88), slice(24, 88))  # inside the x1.3 face box the cache keeps
    for method in S.SPATIAL:
        fake = np.array(S.face_patches(t, s, method, 8, np.random.default_rng(0)), np.float32)
        diff = np.abs(fake - real).mean(axis=3)
        per_frame = diff[:, inner[0], inner[1]].mean(axis=(1, 2))
        assert per_frame.min() > 3.0, method  # visible in every frame
        assert diff[:, :10, :].mean() < 1.0, method  # and local: the top of the head is untouched


def test_generated_tree_is_ffpp_shaped_and_deterministic(tmp_path):
    from dfsearch.data.layout import index_tree
    from dfsearch.data.video import read_all

    params = S.SyntheticParams(pairs=3, frames=6, size=96, seed=2)
    a = S.generate_tree(tmp_path / "a", params)
    b = S.generate_tree(tmp_path / "b", params)
    index = index_tree(a, "c40")
    assert len(index.videos) == params.n_videos() == 30 and not index.missing
    pair = json.loads((a / "splits/test.json").read_text())[0]
    assert pair == list(load_splits()["test"][0])
    for m in METHODS:
        rel = f"manipulated_sequences/{m}/c40/videos/{pair[0]}_{pair[1]}.mp4"
        assert np.array_equal(read_all(a / rel), read_all(b / rel))
    # the tree's Deepfakes video holds the frames of its target's real video, as that file decodes
    real = read_all(a / f"original_sequences/youtube/c40/videos/{pair[0]}.mp4")
    fake = read_all(a / f"manipulated_sequences/Deepfakes/c40/videos/{pair[0]}_{pair[1]}.mp4")
    assert sorted(f.tobytes() for f in fake) == sorted(f.tobytes() for f in real)
    assert json.loads((a / S.MARKER).read_text())["generator"] == S.GENERATOR_VERSION


# ------------------------------------------------------------------------------------------ slow: learning


# The smoke sweep's detector at the smoke's clip size; Meso4 as the per-frame detector.
R3D = {"model.name": "resnet3d", "model.depth": 10, "model.widen_factor": 0.25, "model.conv1_t_size": 3}
MESO = {"model.name": "meso4"}
TRAIN = {"data.root": "synthetic", "data.clip_len": 8, "data.crop_size": 64, "data.num_workers": 0, "optim.name": "adam",
         "optim.lr": 1e-3, "train.batch_size": 8, "train.amp": False, "eval.batch_size": 32, "eval.select_metric": "val/auc"}


@pytest.fixture(scope="module")
def synthetic_cache():
    """The default synthetic tree, generated and prepared once, in the user's cache: the same data (same
    generator version, parameters and face settings, so the same cache key) as the README's main command, which
    CI runs first; building it privately again would cost ~2 minutes of every slow run."""
    from dfsearch import config, data

    data.ensure_prepared(config.from_flat(TRAIN).data)


def train_auc(tmp_path, **keys) -> float:
    import torch

    from dfsearch import config
    from dfsearch.train.loop import LocalSession, train_loop

    torch.set_num_threads(2)
    final = train_loop(config.from_flat({**TRAIN, **keys}), LocalSession(tmp_path))
    return final["test/auc"]


@pytest.mark.slow
def test_per_frame_detector_is_blind_to_the_temporal_family(synthetic_cache, tmp_path):
    """The planted answer: on Deepfakes (the real frames, reordered) Meso4 stays near chance, a 3D ResNet detects it.

    Measured on the 2-core dev machine (15 epochs, batch 8): Meso4 0.515 / 0.505 / 0.482 with seeds 0 / 1 / 2 (0.490
    with seed 0 on an earlier build), 3D ResNet 1.000 / 1.000 with seeds 0 / 1.  The thresholds are issue 8's."""
    per_frame = train_auc(tmp_path / "meso", **MESO, **{"protocol.name": "single:Deepfakes", "train.epochs": 15})
    three_d = train_auc(tmp_path / "r3d", **R3D, **{"protocol.name": "single:Deepfakes", "train.epochs": 15})
    assert per_frame <= 0.65
    assert three_d >= 0.85


@pytest.mark.slow
def test_3d_resnet_learns_all_four_manipulations(synthetic_cache, tmp_path):
    """The smoke sweep's detector (no attention) on ``all``, at smoke.yaml's batch and 2 epochs more than its 10.

    Measured on the 2-core dev machine (12 epochs, batch 4, 1 thread): test AUC 0.976 / 0.969 with seeds 0 / 2; the
    smoke sweep at 10 epochs: 0.978 (and 0.84-0.96 with attention)."""
    assert train_auc(tmp_path, **R3D, **{"protocol.name": "all", "train.epochs": 12, "train.batch_size": 4}) >= 0.85
