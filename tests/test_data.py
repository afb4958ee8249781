"""Data pipeline: layout, official splits, protocols, face tracks, the clip cache, datasets, synthetic data."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dfsearch.config import METHODS, TrialConfig
from dfsearch.data import build_datasets, ensure_prepared
from dfsearch.data import cache as C
from dfsearch.data.cache_builder import TrackSettings, prepare_tree
from dfsearch.data.clips import clip_indices, frame_indices, pick_reduction, trunk_starts
from dfsearch.data.faces import box_iou, interpolate_boxes, square_box, track_faces
from dfsearch.data.layout import index_tree
from dfsearch.data.protocols import cap_videos, class_weights, protocol_methods, protocol_videos
from dfsearch.data.splits import PACKAGE_SPLITS, identities, load_splits, split_of_identity
from dfsearch.data.synthetic import MARKER, SyntheticParams, generate_tree
from dfsearch.errors import DataError

PROTOCOLS = ["all"] + [f"{k}:{m}" for k in ("single", "cross") for m in METHODS]
SMALL = SyntheticParams(pairs=3, frames=24, size=128, seed=1)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A small synthetic FF++ tree (3 pairs: one per split), prepared with the opencv detector."""
    root = generate_tree(tmp_path_factory.mktemp("ffpp") / "tree", SMALL)
    summary = prepare_tree(root, "c40", settings=TrackSettings(detector="opencv"), workers=1)
    assert summary.done == summary.total == 6 + 4 * 6 and not summary.failed, summary.lines()
    return root


def cfg_for(root: Path, **over) -> TrialConfig:
    from dfsearch import config

    return config.from_flat({"data.root": str(root), **{key.replace("__", "."): value for key, value in over.items()}})


# ------------------------------------------------------------------------------------------------ splits


def test_official_splits_are_disjoint_and_complete():
    splits = load_splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 360, "val": 70, "test": 70}
    ids = {s: identities(p) for s, p in splits.items()}
    assert len(ids["train"]) == 720 and len(ids["val"]) == 140 and len(ids["test"]) == 140
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert (PACKAGE_SPLITS / "LICENSE").is_file()


@pytest.fixture(scope="module")
def official_tree(tmp_path_factory) -> Path:
    """The official split's full c40 layout as empty placeholder files (indexing never opens them)."""
    root = tmp_path_factory.mktemp("official")
    splits = load_splits()
    orig = root / "original_sequences/youtube/c40/videos"
    orig.mkdir(parents=True)
    dirs = {m: root / f"manipulated_sequences/{m}/c40/videos" for m in METHODS}
    for d in dirs.values():
        d.mkdir(parents=True)
    for pairs in splits.values():
        for a, b in pairs:
            for i in (a, b):
                (orig / f"{i}.mp4").touch()
            for d in dirs.values():
                (d / f"{a}_{b}.mp4").touch()
                (d / f"{b}_{a}.mp4").touch()
    return root


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_protocol_lists_follow_the_official_splits(official_tree, protocol):
    index = index_tree(official_tree, "c40")
    assert len(index.videos) == 1000 + 4 * 1000 and not index.missing
    where = split_of_identity(index.splits)
    lists = protocol_videos(index.videos, protocol)
    methods = protocol_methods(protocol)
    seen: dict[str, str] = {}
    for split, videos in lists.items():
        n_real = sum(v.label == 0 for v in videos)
        assert n_real == 2 * len(index.splits[split])  # every original of the split
        assert sum(v.label == 1 for v in videos) == 2 * len(index.splits[split]) * len(methods[split])
        for v in videos:
            assert v.split == split and all(where[i] == split for i in v.identities)
            assert v.method == "original" or v.method in methods[split]
            for i in v.identities:
                assert seen.setdefault(i, split) == split  # no identity in two splits
    kind = protocol.split(":")[0]
    if kind == "cross":
        m = protocol.split(":")[1]
        assert {v.method for v in lists["test"]} == {"original", m}
        assert m not in {v.method for v in lists["train"] + lists["val"]}
    if protocol == "all":
        w = class_weights(lists["train"])
        assert torch.allclose(w, torch.tensor([1.6, 0.4]))  # 720 real vs 2880 fake, mean 1
        assert torch.equal(class_weights(lists["train"], weighted=False), torch.ones(2))


def test_cap_videos_keeps_both_classes(official_tree):
    test = protocol_videos(index_tree(official_tree, "c40").videos, "all")["test"]
    capped = cap_videos(test, 6)
    assert len(capped) == 6 and {v.label for v in capped} == {0, 1}
    assert len({v.method for v in capped if v.label}) == 3  # fakes spread over methods
    assert cap_videos(test, 0) == test


# ------------------------------------------------------------------------------------------------ layout


def test_index_reports_missing_and_unknown_without_crashing(tree, tmp_path, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy, ignore=shutil.ignore_patterns(".dfsearch_cache"))
    victim = next((copy / "manipulated_sequences/Face2Face/c40/videos").glob("*.mp4"))
    victim.unlink()
    (copy / "manipulated_sequences/DeepFakeDetection/c40/videos").mkdir(parents=True)
    index = index_tree(copy, "c40")
    assert len(index.videos) == 29 and len(index.missing) == 1 and victim.stem in index.missing[0]
    assert any("DeepFakeDetection" in d for d in index.unknown_dirs)
    report = "\n".join(index.report())
    assert "missing on disk" in report and "unknown method folder" in report
    # the missing video is simply not prepared; the rest prepare fine
    summary = prepare_tree(copy, "c40", settings=TrackSettings(detector="opencv"), workers=1)
    assert summary.done == 29 and not summary.failed


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda p: p / "nope", "no such folder"),
        (lambda p: p, r"not a FaceForensics\+\+ tree"),
        (lambda p: (p / "original_sequences/youtube/c23/videos").mkdir(parents=True) or p, "this tree has c23"),
        (lambda p: (p / "original_sequences/youtube/c40/videos").mkdir(parents=True) or p, "empty"),
    ],
    ids=["missing-root", "wrong-root", "wrong-compression", "empty-tree"],
)
def test_bad_roots_give_one_clear_error(tmp_path, make, expect):
    root = make(tmp_path)
    with pytest.raises(DataError, match=expect) as err:
        index_tree(root, "c40")
    assert str(root.resolve() if root.exists() else root).split("/")[-1] in str(err.value)


# ------------------------------------------------------------------------------------------------ faces


def test_square_box_is_enlarged_square_and_inside():
    b = square_box([40, 50, 80, 100], 200, 150)  # 40x50 face -> 65x65 square about (60, 75)
    assert np.allclose(b[2] - b[0], 65) and np.allclose(b[3] - b[1], 65)
    assert np.allclose((b[:2] + b[2:]) / 2, [60, 75])
    edge = square_box([0, 0, 60, 60], 100, 70)  # sticks out: moved inside, clipped to the short side
    assert edge[0] >= 0 and edge[1] >= 0 and edge[2] <= 100 and edge[3] <= 70 and np.isclose(edge[3] - edge[1], 70)


def test_interpolation_takes_nearest_outside_and_linear_inside():
    boxes = interpolate_boxes(10, {2: np.array([0, 0, 10, 10.0]), 6: np.array([4, 0, 14, 10.0])})
    assert np.allclose(boxes[0], [0, 0, 10, 10]) and np.allclose(boxes[9], [4, 0, 14, 10])
    assert np.allclose(boxes[4], [2, 0, 12, 10])


def test_every_k_tracking_matches_every_frame(tree):
    from dfsearch.data.faces import OpenCVDetector
    from dfsearch.data.video import read_all

    frames = read_all(next((tree / "original_sequences/youtube/c40/videos").glob("*.mp4")))
    det = OpenCVDetector()
    calls = []

    def counting(img):
        calls.append(1)
        return det.detect(img)

    dense = track_faces(frames, det.detect, every=1)
    sparse = track_faces(frames, counting, every=5)
    assert len(calls) == len(range(0, 24, 5)) + 1  # keyframes + the last frame
    assert box_iou(dense.boxes, sparse.boxes).mean() > 0.8


# ------------------------------------------------------------------------------------------------ cache


def test_cache_entries_are_complete_and_resumable(tree):
    cache = C.default_cache_dir(tree)
    index = index_tree(tree, "c40")
    for v in index.videos:
        f = C.ClipFile(C.entry_path(cache, "c40", v.video_id))
        assert f.n_frames == 24 and f.meta["detector"] == "opencv" and f.meta["version"] == C.CACHE_VERSION
        boxes = np.array(f.meta["boxes"])
        assert boxes.shape == (24, 4) and np.allclose(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], atol=0.2)
        assert (boxes >= -0.1).all() and (boxes <= 128.1).all()
        assert f.frames([0, 23]).shape == (2, 256, 256, 3) and f.frames([5], reduce=2).shape == (1, 128, 128, 3)
    assert not list(cache.rglob("*.tmp"))
    mtimes = {p: p.stat().st_mtime_ns for p in cache.rglob("*.clips")}
    again = prepare_tree(tree, "c40", settings=TrackSettings(detector="opencv"))
    assert again.done == 0 and again.skipped == again.total == len(mtimes)
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.clips")} == mtimes
    with pytest.raises(DataError, match="other settings"):
        prepare_tree(tree, "c40", settings=TrackSettings(detector="opencv", size=192))


def test_truncated_cache_entry_is_detected(tree, tmp_path):
    src = next(C.default_cache_dir(tree).rglob("*.clips"))
    bad = tmp_path / "x.clips"
    bad.write_bytes(src.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated cache entry"):
        C.ClipFile(bad)


# ------------------------------------------------------------------------------------------------ sampling


def test_clip_indices_stride_wrap_and_middle():
    assert list(clip_indices(100, 4, 10, start=5)) == [5, 15, 25, 35]
    assert list(clip_indices(100, 4, 10)) == [34, 44, 54, 64]  # middle clip: span 31, 69 free frames, start 69 // 2
    assert list(clip_indices(24, 8, 32)) == [1, 4, 7, 10, 13, 16, 19, 22]  # stride shrinks to 3 to fit, middle clip
    assert list(clip_indices(5, 8, 1, rng=None)) == [0, 1, 2, 3, 4, 0, 1, 2]  # loops a too-short video
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = clip_indices(40, 16, 1, rng=rng)
        assert idx[0] >= 0 and idx[-1] < 40 and np.all(np.diff(idx) == 1)


def test_trunks_cover_the_video_and_end_at_the_last_frame():
    assert trunk_starts(600, 250) == (250, [0, 250, 350])
    assert trunk_starts(100, 250) == (100, [0])
    assert pick_reduction(256, 112) == (2, 128) and pick_reduction(256, 224) == (1, 256)
    # any crop is 7/8 of its frame: 64 px from the 128-px decode resized to 73, not the central half of 128
    assert pick_reduction(256, 64) == (2, 73) and pick_reduction(128, 160) == (1, 183)


def test_frame_indices_are_every_frame_or_evenly_spaced_from_first_to_last():
    assert list(frame_indices(32, 0)) == list(range(32)) and list(frame_indices(5, 8)) == list(range(5))
    assert list(frame_indices(32, 8)) == [0, 4, 9, 13, 18, 22, 27, 31]
    assert list(frame_indices(24, 1)) == [0]


def test_datasets_for_every_sampling_mode(tree):
    # 3D ResNet: random 16-frame clips; test = trunks
    ds = build_datasets(cfg_for(tree, data__test_trunk=10))
    assert len(ds.train) == 10 and len(ds.val) == 10 and len(ds.test) == 10  # 2 real + 8 fake each
    x, y = ds.train[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 112, 112) and y in (0, 1)
    views, y, vid = ds.test[0]
    assert views.shape == (3, 3, 10, 112, 112) and views.dtype == torch.uint8  # trunks at 0, 10, 14
    assert torch.equal(views[2, :, -1], ds.test[0][0][2, :, -1])  # deterministic
    labels = [ds.test[i][1] for i in range(len(ds.test))]
    assert labels.count(0) == 2 and labels.count(1) == 8
    assert isinstance(vid, str) and "/" in vid
    assert torch.allclose(ds.class_weights, torch.tensor([1.6, 0.4]))
    # random crops/flips differ between draws
    torch.manual_seed(0)
    draws = [ds.train[1][0] for _ in range(4)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    # TimeSformer: 8 frames at stride 32 (shrunk to fit 24 frames), 3 different spatial crops of the middle clip
    ts = build_datasets(cfg_for(tree, model__name="timesformer", data__crop_size=224, data__clip_len=8, data__frame_stride=32))
    views, _, _ = ts.val[0]
    assert views.shape == (3, 3, 8, 224, 224)
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])
    assert ts.train[0][0].shape == (3, 8, 224, 224)
    # frame baseline (Xception 299 > cached 256: served by resizing); every frame is a view
    xc = build_datasets(cfg_for(tree, model__name="xception", data__crop_size=299, protocol__name="single:NT", protocol__weighted_loss=False))
    views, _, _ = xc.test[0]
    assert views.shape == (24, 3, 1, 299, 299)
    assert xc.train[0][0].shape == (3, 1, 299, 299)  # trains on single frames (its DetectorSpec clip)
    assert torch.equal(xc.class_weights, torch.ones(2))
    assert {v.method for v in xc.test.r.videos} == {"original", "NeuralTextures"}
    # eval.val_frames: validation scores 6 evenly spaced frames a video, the test still every frame
    few = build_datasets(cfg_for(tree, model__name="xception", data__crop_size=64, protocol__name="single:NT", eval__val_frames=6))
    views, _, _ = few.val[0]
    assert views.shape == (6, 3, 1, 64, 64) and few.test[0][0].shape == (24, 3, 1, 64, 64)
    every = build_datasets(cfg_for(tree, model__name="xception", data__crop_size=64, protocol__name="single:NT"))
    assert torch.equal(views, every.val[0][0][frame_indices(24, 6)])  # the same frames, picked
    # other views ignore it: a 3D ResNet validates on every trunk
    assert build_datasets(cfg_for(tree, data__test_trunk=10, eval__val_frames=6)).val[0][0].shape == (3, 3, 10, 112, 112)
    # eval cap keeps both classes
    capped = build_datasets(cfg_for(tree, eval__max_videos=4))
    assert len(capped.test) == 4 and {capped.test[i][1] for i in range(4)} == {0, 1}


def test_dataloader_workers_read_the_cache(tree):
    ds = build_datasets(cfg_for(tree))
    loader = torch.utils.data.DataLoader(ds.train, batch_size=4, num_workers=2, shuffle=True)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 16, 112, 112) and y.shape == (4,)


def test_frame_memo_serves_the_decoded_frames_and_keeps_to_its_budget(tree, monkeypatch):
    from dfsearch.data import clips

    cfg = cfg_for(tree, data__test_trunk=8)
    fresh = build_datasets(cfg).val
    assert fresh.r._memo is not None  # 10 videos x 24 frames x 128^2 x 3 fit in the default 512 MiB
    first = [fresh[i][0] for i in range(len(fresh))]
    assert len(fresh.r._memo) == 10 * 24
    again = [fresh[i][0] for i in range(len(fresh))]  # served from the memo
    decoded = [torch.from_numpy(fresh.r.decode(i, np.arange(24))) for i in range(len(fresh))]
    for a, b, d in zip(first, again, decoded):
        assert torch.equal(a, b)
        assert torch.equal(a[0, :, 0], d[0, 8:120, 8:120].permute(2, 0, 1))  # first trunk, first frame, centre crop
    frames = fresh.r.frames(0, [0, 1])
    frames[:] = 0  # the caller's copy: the memo keeps its frames
    assert fresh.r.frames(0, [0, 1]).any()

    left = clips._memo_left[0]
    del fresh, first, again, frames
    import gc

    gc.collect()
    assert clips._memo_left[0] == left + 10 * 24 * 128 * 128 * 3  # a freed dataset gives its bytes back
    monkeypatch.setattr(clips, "_memo_left", [10 * 24 * 128 * 128 * 3 - 1])  # one byte short: no memo at all
    assert build_datasets(cfg).val.r._memo is None
    monkeypatch.setattr(clips, "_memo_left", [])
    monkeypatch.setenv(clips.MEMO_ENV, "0")
    assert build_datasets(cfg).val.r._memo is None
    monkeypatch.setattr(clips, "_memo_left", [])
    monkeypatch.setenv(clips.MEMO_ENV, "lots")
    with pytest.raises(DataError, match="DFSEARCH_FRAME_MEMO_MB='lots'"):
        build_datasets(cfg)


def test_build_datasets_without_cache_says_run_prepare(tree, tmp_path):
    cfg = cfg_for(tree, data__cache_dir=str(tmp_path / "empty"))
    with pytest.raises(DataError, match="python -m dfsearch.prepare"):
        build_datasets(cfg)
    with pytest.raises(DataError, match="python -m dfsearch.prepare"):
        ensure_prepared(cfg.data)


# ------------------------------------------------------------------------------------------------ synthetic


def test_synthetic_ensure_prepared_is_deterministic_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("DFSEARCH_CACHE", str(tmp_path))
    cfg = TrialConfig()
    cfg.data.synthetic_pairs, cfg.data.synthetic_frames = 3, 16
    with pytest.raises(DataError, match="ensure_prepared"):
        build_datasets(cfg)  # workers never generate
    info = ensure_prepared(cfg.data)
    assert info.synthetic and info.n_videos == 30 and not info.failed
    assert Path(info.root).parent == tmp_path / "synthetic" and (Path(info.root) / MARKER).is_file()
    t0 = time.perf_counter()
    again = ensure_prepared(cfg.data)
    assert time.perf_counter() - t0 < 2.0 and again.fingerprint == info.fingerprint
    ds = build_datasets(cfg)
    assert ds.info.synthetic and ds.info.fingerprint == info.fingerprint
    splits = {s: json.loads((Path(info.root) / "splits" / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    assert all(len(p) == 1 for p in splits.values())
    # same seed -> the same pairs and frames; another seed -> another tree
    other = generate_tree(tmp_path / "again", SyntheticParams(pairs=3, frames=16, size=128, seed=0))
    assert json.loads((other / "splits/train.json").read_text()) == splits["train"]
    a = C.ClipFile(next((Path(info.root) / ".dfsearch_cache").rglob("*.clips")))
    assert a.meta["detector"] == "opencv"
    assert SyntheticParams(seed=1).key() != SyntheticParams(seed=0).key()


def test_synthetic_manipulations_leave_traces(tree):
    """Each method changes the target video in its own region: swaps the whole inner face, NT only the mouth."""
    from dfsearch.data.video import read_all

    pairs = json.loads((tree / "splits/train.json").read_text())
    a, b = pairs[0]
    real = read_all(tree / f"original_sequences/youtube/c40/videos/{a}.mp4").astype(np.float32)
    diffs = {}
    for m in METHODS:
        fake = read_all(tree / f"manipulated_sequences/{m}/c40/videos/{a}_{b}.mp4").astype(np.float32)
        assert fake.shape == real.shape
        diffs[m] = np.abs(fake - real).mean(axis=(0, 3))
    for m, d in diffs.items():
        assert d.mean() > 0.5, m  # every manipulation is visible
        assert d[:10].mean() < d[40:90, 40:90].mean(), m  # ... and concentrated on the face, not the background
    assert diffs["NeuralTextures"].mean() < diffs["FaceSwap"].mean()


def test_expected_counts_follow_the_official_split_and_protocol():
    from dfsearch.data.protocols import expected_counts
    from dfsearch.data.splits import load_splits

    official = load_splits()  # the shipped FaceForensics++ split files
    assert expected_counts(official, "single:Deepfakes") == {"train": 720 * 2, "val": 140 * 2, "test": 140 * 2}
    assert expected_counts(official, "all")["test"] == 140 + 4 * 140  # 140 real + 140 per method
    cross = expected_counts(official, "cross:NeuralTextures")
    assert cross["train"] == 720 + 3 * 720 and cross["test"] == 140 + 140
