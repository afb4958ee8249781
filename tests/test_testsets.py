"""Test-only datasets (issue 21): each adapter on a tiny tree in its published layout, bad input one line each,
and a trial with data.test_sets logging the per-set metrics after its FF++ test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dfsearch import config
from dfsearch.data.synthetic import SyntheticParams, generate_tree, write_mp4
from dfsearch.data.testsets import check_test_sets, index_set, resolve
from dfsearch.errors import DataError

SMALL = SyntheticParams(pairs=3, frames=12, size=96, seed=3)


@pytest.fixture(scope="module")
def ffpp(tmp_path_factory) -> Path:
    """A tiny synthetic FF++ tree (c40) whose mp4s the other layouts are built from."""
    return generate_tree(tmp_path_factory.mktemp("ffpp") / "tree", SMALL)


def place(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def some_videos(ffpp: Path) -> tuple[list[Path], list[Path]]:
    reals = sorted((ffpp / "original_sequences/youtube/c40/videos").glob("*.mp4"))
    fakes = sorted((ffpp / "manipulated_sequences/Deepfakes/c40/videos").glob("*.mp4"))
    return reals, fakes


def celebdf_tree(root: Path, ffpp: Path, *, extra_lines: tuple[str, ...] = ()) -> Path:
    reals, fakes = some_videos(ffpp)
    place(reals[0], root / "Celeb-real/id0_0000.mp4")
    place(reals[1], root / "Celeb-real/id1_0000.mp4")
    place(reals[2], root / "YouTube-real/00170.mp4")
    place(fakes[0], root / "Celeb-synthesis/id0_id1_0000.mp4")
    place(fakes[1], root / "Celeb-synthesis/id1_id0_0000.mp4")
    place(fakes[2], root / "Celeb-synthesis/id0_id16_0000.mp4")
    lines = ["1 YouTube-real/00170.mp4", "1 Celeb-real/id0_0000.mp4", "1 Celeb-real/id1_0000.mp4",
             "0 Celeb-synthesis/id0_id1_0000.mp4", "0 Celeb-synthesis/id1_id0_0000.mp4", "0 Celeb-synthesis/id0_id16_0000.mp4",
             *extra_lines]
    (root / "List_of_testing_videos.txt").write_text("\n".join(lines) + "\n")
    # a training video the list does not name: never part of the test set, whatever its folder
    place(reals[3], root / "Celeb-real/id2_0000.mp4")
    return root


# ------------------------------------------------------------------------------------------------ adapters


def test_celebdf_labels_from_the_list_file(ffpp, tmp_path, caplog):
    root = celebdf_tree(tmp_path / "Celeb-DF-v2", ffpp, extra_lines=("0 Celeb-synthesis/id9_id1_0003.mp4", "2 Celeb-real/x.mp4"))
    caplog.set_level("WARNING")
    listing = index_set("celebdf", root)
    by_id = {v.video_id: v for v in listing.videos}
    assert sorted(by_id) == ["Celeb-real/id0_0000", "Celeb-real/id1_0000", "Celeb-synthesis/id0_id16_0000",
                             "Celeb-synthesis/id0_id1_0000", "Celeb-synthesis/id1_id0_0000", "YouTube-real/00170"]
    # 1 = real, 0 = fake in the official file; dfsearch's labels are 0 = real, 1 = fake
    assert {v.name: v.label for v in listing.videos} == {"00170": 0, "id0_0000": 0, "id1_0000": 0, "id0_id1_0000": 1,
                                                         "id1_id0_0000": 1, "id0_id16_0000": 1}
    assert listing.counts() == {"real": 3, "fake": 3}
    assert by_id["Celeb-synthesis/id0_id16_0000"].group == by_id["Celeb-real/id0_0000"].group == "id0"
    assert by_id["YouTube-real/00170"].group == "yt00170"
    assert listing.listed == 7  # six present + one missing; the malformed line is not a video
    assert len(listing.missing) == 1 and "id9_id1_0003" in listing.missing[0]
    assert any("List_of_testing_videos.txt:8" in n and "line skipped" in n for n in listing.notes)
    assert "missing on disk" in caplog.text


def test_dfdc_parts_metadata_and_an_unreadable_part(ffpp, tmp_path):
    reals, fakes = some_videos(ffpp)
    root = tmp_path / "dfdc"
    part = root / "dfdc_train_part_0"
    place(reals[0], part / "aaqaifqrwn.mp4")
    place(fakes[0], part / "abarnvbtwb.mp4")
    place(fakes[1], part / "acxwigylke.mp4")
    (part / "metadata.json").write_text(json.dumps({
        "aaqaifqrwn.mp4": {"label": "REAL", "split": "train", "original": None},
        "abarnvbtwb.mp4": {"label": "FAKE", "split": "train", "original": "aaqaifqrwn.mp4"},
        "acxwigylke.mp4": {"label": "FAKE", "split": "train", "original": "aaqaifqrwn.mp4"},
        "zzzzzzzzzz.mp4": {"label": "FAKE", "split": "train", "original": "aaqaifqrwn.mp4"},
    }))
    broken = root / "dfdc_train_part_1"
    place(reals[1], broken / "bbbbbbbbbb.mp4")
    (broken / "metadata.json").write_text('{"bbbbbbbbbb.mp4": {"label": "RE')  # a truncated download
    listing = index_set("dfdc", root)
    assert {v.video_id: (v.label, v.group) for v in listing.videos} == {
        "dfdc_train_part_0/aaqaifqrwn": (0, "aaqaifqrwn"),
        "dfdc_train_part_0/abarnvbtwb": (1, "aaqaifqrwn"),
        "dfdc_train_part_0/acxwigylke": (1, "aaqaifqrwn")}
    assert listing.listed == 4 and "zzzzzzzzzz" in listing.missing[0]
    assert len(listing.notes) == 1 and "dfdc_train_part_1/metadata.json: unreadable" in listing.notes[0]
    # every part unreadable: one error naming the file
    (part / "metadata.json").write_text("not json")
    with pytest.raises(DataError, match="metadata.json: unreadable"):
        index_set("dfdc", root)


def test_dfdc_public_test_labels_csv(ffpp, tmp_path):
    reals, fakes = some_videos(ffpp)
    root = tmp_path / "dfdc_test"
    place(reals[0], root / "aaa.mp4")
    place(fakes[0], root / "bbb.mp4")
    (root / "labels.csv").write_text("filename,label\naaa.mp4,0\nbbb.mp4,1\nccc.mp4,1\nddd.mp4,maybe\n")
    listing = index_set("dfdc", root)
    assert {v.video_id: v.label for v in listing.videos} == {"test/aaa": 0, "test/bbb": 1}
    assert listing.listed == 3 and len(listing.missing) == 1 and "labels.csv:5" in listing.notes[0]


def test_deeperforensics_fakes_from_the_split_and_ffpp_targets(ffpp, tmp_path):
    reals, fakes = some_videos(ffpp)
    root = tmp_path / "DeeperForensics-1.0"
    (root / "lists/splits").mkdir(parents=True)
    (root / "lists/splits/test.txt").write_text("000_M101.mp4\n001_W101.mp4\n002_M004.mp4\n")
    (root / "lists/splits/train.txt").write_text("003_M005.mp4\n")
    place(fakes[0], root / "manipulated_videos/end_to_end/000_M101.mp4")
    place(fakes[1], root / "manipulated_videos/end_to_end/001_W101.mp4")
    place(fakes[2], root / "manipulated_videos/end_to_end/003_M005.mp4")  # train: not tested
    targets = tmp_path / "ffpp_c23"
    for i in range(3):
        place(reals[i], targets / f"original_sequences/youtube/c23/videos/00{i}.mp4")
    with pytest.raises(DataError, match="DEEPERFORENSICS_TARGETS"):
        index_set("deeperforensics", root)
    listing = index_set("deeperforensics", root, targets=targets)
    assert {v.video_id: (v.label, v.group) for v in listing.videos} == {
        "end_to_end/000_M101": (1, "000"), "end_to_end/001_W101": (1, "001"),
        "original/000": (0, "000"), "original/001": (0, "001"), "original/002": (0, "002")}
    assert listing.listed == 6 and listing.missing == [f"002_M004 ({root / 'manipulated_videos/end_to_end/002_M004.mp4'})"]


def test_ffpp_faceshifter_and_dfd(ffpp, tmp_path):
    root = tmp_path / "ffpp"
    shutil.copytree(ffpp, root)
    reals, fakes = some_videos(root)
    (a, b), = json.loads((root / "splits/test.json").read_text())
    place(fakes[0], root / f"manipulated_sequences/FaceShifter/c40/videos/{a}_{b}.mp4")
    place(fakes[1], root / f"manipulated_sequences/FaceShifter/c40/videos/{b}_{a}.mp4")
    fs = index_set("faceshifter", root, compression="c40")
    pair = "_".join(sorted((a, b)))
    assert {v.video_id: (v.label, v.group) for v in fs.videos} == {
        f"original/{a}": (0, pair), f"original/{b}": (0, pair), f"FaceShifter/{a}_{b}": (1, pair), f"FaceShifter/{b}_{a}": (1, pair)}
    with pytest.raises(DataError, match="DeepFakeDetection"):
        index_set("dfd", root, compression="c40")
    place(reals[0], root / "original_sequences/actors/c40/videos/01__meeting_serious.mp4")
    place(fakes[2], root / "manipulated_sequences/DeepFakeDetection/c40/videos/01_02__meeting_serious__YVGY8LOK.mp4")
    dfd = index_set("dfd", root, compression="c40")
    assert {v.video_id: (v.label, v.group) for v in dfd.videos} == {
        "actors/01__meeting_serious": (0, "01"), "DeepFakeDetection/01_02__meeting_serious__YVGY8LOK": (1, "01")}


@pytest.mark.parametrize("name, expect", [
    ("celebdf", "not a Celeb-DF v2 root: expected List_of_testing_videos.txt"),
    ("dfdc", "not a DFDC root: expected labels.csv"),
    ("deeperforensics", "not a DeeperForensics-1.0 root: expected lists/splits/test.txt"),
    ("faceshifter", "FaceShifter at c40"),
])
def test_a_root_of_the_wrong_layout_is_one_clear_error(ffpp, name, expect):
    with pytest.raises(DataError, match=expect) as err:
        index_set(name, ffpp if name != "faceshifter" else ffpp, compression="c40")
    assert "\n" not in str(err.value)


def test_missing_roots_are_one_error_naming_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("CELEBDF_ROOT", raising=False)
    d = config.from_flat({"data.test_sets": "celebdf"}).data
    with pytest.raises(DataError, match=r"no root for celebdf: set \$CELEBDF_ROOT or write celebdf=/path"):
        check_test_sets(d)
    monkeypatch.setenv("CELEBDF_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="does not exist"):
        check_test_sets(d)
    with pytest.raises(DataError, match="data.root is 'synthetic'"):
        resolve(d, "faceshifter")
    with pytest.raises(config.ConfigError, match="listed twice"):
        config.from_flat({"data.test_sets": "dfdc,dfdc=/x"})


def test_test_sets_do_not_change_the_fingerprint():
    from dfsearch import fingerprint

    base = {"data.root": "synthetic"}
    assert fingerprint.fingerprint(base) == fingerprint.fingerprint({**base, "data.test_sets": "celebdf,dfdc"})


# ------------------------------------------------------------------------------------------------ a trial


TINY = {
    "data.root": "synthetic", "data.synthetic_pairs": 3, "data.synthetic_frames": 24, "data.synthetic_size": 96,
    "data.clip_len": 8, "data.crop_size": 64, "data.num_workers": 0,
    "model.depth": 10, "model.widen_factor": 0.125, "model.conv1_t_size": 3,
    "optim.name": "adam", "train.batch_size": 4, "train.amp": False, "eval.batch_size": 8, "train.epochs": 1,
}


def test_a_trial_scores_its_test_sets_after_the_ffpp_test(tmp_path, monkeypatch):
    """The smoke path: data.test_sets with a synthetic FF++ prepares the (tiny) set in the driver; a video with no
    face is left out with its reason; the trial logs test/<set>/* with the tested weights."""
    from dfsearch import data
    from dfsearch.data.synthetic import synthetic_root
    from dfsearch.train.loop import LocalSession, train_loop

    monkeypatch.setenv("DFSEARCH_CACHE", str(tmp_path / "cache"))
    plain = config.from_flat(TINY)
    data.ensure_prepared(plain.data)
    ffpp = synthetic_root(SyntheticParams(3, 24, 96, 0, "c40"))
    root = celebdf_tree(tmp_path / "Celeb-DF-v2", ffpp, extra_lines=("1 YouTube-real/00999.mp4",))
    write_mp4(root / "YouTube-real/00999.mp4", [np.full((96, 96, 3), 128, np.uint8)] * 12, qp=20)  # no face in it
    cfg = config.from_flat({**TINY, "data.test_sets": [f"celebdf={root}"]})
    info = data.ensure_prepared(cfg.data)
    assert info.test_sets == {"celebdf": "6/7"}
    assert any("YouTube-real/00999 left out" in n and "face" in n for n in info.notes)
    assert not list((root / ".dfsearch_cache").rglob("*.tmp"))  # nothing half-written

    final = train_loop(cfg, LocalSession(tmp_path / "run"))
    assert final["test/celebdf/videos"] == 6 and final["test/celebdf/videos_expected"] == 7
    for key in ("auc", "tcr", "tcr_real", "tcr_fake"):
        assert f"test/celebdf/{key}" in final
    assert 0.0 <= final["test/celebdf/tcr"] <= 100.0
    assert final["test/videos"] == final["test/videos_expected"]  # the FF++ test is untouched


# ------------------------------------------------------------------------------------------------ the report


def _run(seed: int, group: str, metrics: dict, synthetic: bool = False):
    from dfsearch.report.runs import RunRecord, cross_metrics

    cfg = {"model.name": "resnet3d", "model.attention": "se", "model.placement": "1,2", "protocol.name": "all",
           "data.compression": "c40", "model.pretrained": "none"}
    return RunRecord(run_id=f"r{seed}{group}", experiment="e", status="FINISHED", outcome="tested", start_ms=seed, end_ms=seed + 1,
                     sweep="s", trial_id=f"t{seed}{group}", config=cfg, fingerprint=f"f{seed}{group}", seed_group=group,
                     synthetic=synthetic, smoke=False, value=80.0, gpus=1.0, cpus=None,
                     cross=cross_metrics({**metrics, "test/tcr": 80.0, "test/auc": 0.9}))


def test_cross_table_rows_sets_n_and_intervals():
    from dfsearch.report import RunSet, cross

    one = {"test/celebdf/auc": 0.70, "test/celebdf/tcr": 65.0, "test/celebdf/videos": 518.0, "test/celebdf/videos_expected": 518.0,
           "test/celebdf/videos_fake": 340.0}
    runs = [_run(0, "a", one),
            _run(1, "b", {**one, "test/dfdc/auc": 0.60, "test/dfdc/tcr": 55.0, "test/dfdc/videos": 100.0, "test/dfdc/videos_expected": 120.0}),
            _run(2, "b", {**one, "test/celebdf/auc": 0.74, "test/dfdc/auc": 0.62, "test/dfdc/tcr": 57.0, "test/dfdc/videos": 100.0})]
    t = cross.build(RunSet(runs))
    assert t.sets == ["celebdf", "dfdc"] and len(t.rows) == 2
    single = next(r for r in t.rows if r.seed_group == "a").cells["celebdf"]
    assert single.auc.n == 1 and 0.03 < single.auc_ci < 0.06  # Hanley-McNeil on 340 fakes / 178 reals
    assert single.tcr_ci[0] < 65.0 < single.tcr_ci[1]
    seeds = next(r for r in t.rows if r.seed_group == "b")
    assert seeds.cells["celebdf"].auc.n == 2 and seeds.cells["celebdf"].auc.mean == pytest.approx(0.72)
    assert "dfdc" not in next(r for r in t.rows if r.seed_group == "a").cells
    md = cross.markdown(t)
    assert "beyond the paper" in md and "(n=1, N=518/518)" in md and "— (not scored)" in md and "N=100/120" in md
    assert cross.build(RunSet([_run(3, "c", {})])) is None  # nobody scored a test set: no table


def test_prepare_cli_dataset_is_resumable(ffpp, tmp_path, capsys):
    from dfsearch.prepare import main

    root = celebdf_tree(tmp_path / "Celeb-DF-v2", ffpp)
    argv = [str(root), "--dataset", "celebdf", "--detector", "opencv", "--no-progress"]
    assert main(argv) == 0
    assert "6 prepared, 0 skipped (already done), 0 failed, of 6 videos" in capsys.readouterr().out
    assert len(list((root / ".dfsearch_cache" / "celebdf").rglob("*.clips"))) == 6
    assert main(argv) == 0
    assert "0 prepared, 6 skipped" in capsys.readouterr().out
    assert main([str(root), "--dataset", "dfdc", "--no-progress"]) == 2
    assert "not a DFDC root" in capsys.readouterr().err
