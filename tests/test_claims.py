"""The claim checker on hand-made cell values, the claims against the paper's own numbers, and the exact-cell
rule (a run of other settings is a variant, not the cell) on a real SQLite MLflow store."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dfsearch import fingerprint, report
from dfsearch.errors import ConfigError
from dfsearch.report import claims, publish, render, spaces
from dfsearch.report.__main__ import check as report_check

REPO = Path(__file__).resolve().parents[1]
PAPER = report.load_paper()
IDS = itertools.count()


def space_flat(key, row, column, smoke=False, **extra):
    """The flat config the table's space trains for a cell (or its --smoke twin's)."""
    pt = PAPER[key]
    configs = spaces.load(pt).cells[(pt.rows.index(row), pt.columns.index(column))]
    flat = dict(next(iter((configs.smoke if smoke else configs.real).values())))
    if not smoke:
        flat["data.root"] = "/data/ffpp"
    return {**flat, **extra}


def record(flat, value, *, videos=280, seed=0, start=1, complete=None, tcr_real=None, tcr_fake=None, videos_fake=None, status="FINISHED"):
    """A RunRecord as report.to_record builds it from a trial's MLflow run."""
    full = fingerprint.canonical({**flat, "train.seed": seed})
    tags = fingerprint.tags(full)
    synthetic = full["data.root"] == "synthetic"
    return report.RunRecord(
        run_id=f"run{next(IDS)}", experiment="e", status=status, outcome="tested" if value is not None else "", start_ms=start,
        end_ms=start + 1000, sweep="s", trial_id=f"t{next(IDS)}", config=full, fingerprint=tags[fingerprint.TAG],
        seed_group=tags[fingerprint.SEEDLESS_TAG], synthetic=synthetic, smoke=synthetic, value=value, gpus=None, cpus=1.0,
        videos=videos, tcr_real=tcr_real, tcr_fake=tcr_fake, videos_fake=videos_fake, test_complete=complete)


def cell_runs(key, row, column, values, smoke=False, **kw):
    """One run per seed of a cell, with these test TCRs."""
    flat = space_flat(key, row, column, smoke)
    return [record(flat, v, seed=s, **kw) for s, v in enumerate(values)]


def tables_of(runs, keys):
    return {t.paper.key: t for t in report.build_from(report.RunSet(runs), keys)}


def verdict(table, claim_id):
    return next(v for v in table.claims if v.claim.id == claim_id)


JOINT, DIVIDED = "TimeSformer, joint", "TimeSformer, dissociated"


def table_iii(joint, divided, nt=(60.0, 90.0), videos=280, seeds=1):
    """Table III with joint/divided values on DF, F2F, FS (and NT as given)."""
    runs = []
    for col in ("DF", "F2F", "FS"):
        runs += cell_runs("III", JOINT, col, joint if isinstance(joint, list) else [joint] * seeds, videos=videos)
        runs += cell_runs("III", DIVIDED, col, divided if isinstance(divided, list) else [divided] * seeds, videos=videos)
    if nt:
        runs += cell_runs("III", JOINT, "NT", [nt[0]] * seeds, videos=videos)
        runs += cell_runs("III", DIVIDED, "NT", [nt[1]] * seeds, videos=videos)
    return tables_of(runs, ["III"])["III"]


# ---------------------------------------------------------------------------------------- the claims files


def test_every_claim_against_the_papers_own_numbers():
    """A claim holds on the paper's exact values unless claims.yaml records that the paper contradicts it."""
    paper_claims = claims.load(report.CLAIMS_FILE, PAPER)
    assert {c.table for c in paper_claims.claims} == set(report.TABLES)
    got = {c.id: claims.check(c, claims.paper_lookup(PAPER), PAPER) for c in paper_claims.claims}
    for cid, v in got.items():
        assert v.verdict == (claims.HOLDS if v.claim.paper_agrees else claims.FAILS), (cid, v.why)
    contradicted = sorted(cid for cid, v in got.items() if not v.claim.paper_agrees)
    assert contradicted == ["II.nl44-below-124", "II.nl44-lowest", "V.pretraining-timesformer-all"]
    assert "76.00 < 3D ResNet, non-local 4,4 / NT 77.05" in got["II.nl44-below-124"].why
    # the cross claim compares 5 of Table VI's 6 detectors: NL 1,3,4 has no single-manipulation cell anywhere
    pairs, notes = claims.comparisons(next(c for c in paper_claims.claims if c.id == "VI.cross-below-single"), PAPER)
    assert len(pairs) == 20 and {x.table for x, _ in pairs} == {"IV", "V"} and "NL134" in notes[0]


def test_planted_claims_load_and_say_which_are_verified():
    planted = claims.load(report.PLANTED_FILE, PAPER, "planted")
    assert set(planted.no_answer) >= {"II", "III"} and planted.claims
    assert all(c.expected for c in planted.claims)
    # verified on two seeds of the twins (2026-12-05, generator 7)
    assert {c.id for c in planted.claims if c.verified} == {
        "I.3d-above-per-frame", "IV.per-frame-blind-to-DF", "IV.3d-sees-DF", "IV.spatial-seen-by-all", "IV.residual-baselines-blind-to-DF",
        "IV.residual-baselines-see-FS", "V.pretext-not-below-scratch", "VI.held-out-DF-below-single"}
    doc = yaml.safe_load(Path(report.PLANTED_FILE).read_text())
    assert all(c.get("margins") for c in doc["claims"] if c["verified"])  # a verified claim says on what
    assert {c.table for c in planted.claims} == {"I", "IV", "V", "VI"} and not {"V", "VI"} & set(planted.no_answer)


def test_the_experiments_readme_lists_every_claim_with_its_table():
    text = (REPO / "experiments" / "README.md").read_text()
    for source, path in (("paper", report.CLAIMS_FILE), ("planted", report.PLANTED_FILE)):
        for c in claims.load(path, PAPER, source).claims:
            assert f"| {c.table} | `{c.id}` |" in text, c.id


@pytest.mark.parametrize("change, message", [
    ({"a": "3D ResNet, non-local 9,9"}, "row '3D ResNet, non-local 9,9' is not one of the table's rows"),
    ({"kind": "biggest"}, "kind 'biggest' is not one of"),
    ({"paper_agrees": False}, "needs a note"),
    ({"colums": ["DF"]}, "unknown key(s) colums"),
])
def test_a_bad_claim_names_the_file_the_claim_and_the_key(tmp_path, change, message):
    raw = {"id": "II.x", "table": "II", "quote": "q", "kind": "greater", "a": "3D ResNet, non-local 1,2", "b": "3D ResNet, non-local 3,4", **change}
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [raw]}))
    with pytest.raises(ConfigError) as err:
        claims.load(path, PAPER)
    assert str(path) in str(err.value) and "claims[1] (II.x)" in str(err.value) and message in str(err.value)


# ------------------------------------------------------------------------------------------ uncertainty


def test_wilson_interval_and_the_seeds_widening():
    lo, hi = claims.wilson(0.5, 40)
    assert lo == pytest.approx(0.3520, abs=1e-4) and hi == pytest.approx(0.6480, abs=1e-4)
    lo, hi = claims.wilson(1.0, 280)  # all right: the interval still has width below 100 %
    assert hi == 1.0 and lo == pytest.approx(0.9865, abs=1e-3)
    one = claims.interval(80.0, 280)
    seeds = claims.interval(80.0, 280, seeds_ci95=3.0)
    assert seeds.lo < one.lo and seeds.hi > one.hi
    assert 80.0 - seeds.lo == pytest.approx(((80.0 - one.lo) ** 2 + 9.0) ** 0.5)


def test_balanced_tcr_interval():
    """The mean of two class TCRs: a class scored 0 % still has a spread (Agresti-Caffo), and the interval is
    narrower than either class's own on its fewer videos."""
    v = claims.balanced_interval(0.0, 20, 100.0, 80)  # calls every video fake
    assert v.mean == 50.0 and 44.0 < v.lo < 46.0 and 54.0 < v.hi < 56.0
    real = claims.interval(80.0, 20)
    both = claims.balanced_interval(80.0, 20, 80.0, 80)
    assert both.mean == 80.0 and both.hi - both.lo < real.hi - real.lo
    seeds = claims.balanced_interval(80.0, 20, 80.0, 80, seeds_ci95=5.0)
    assert 80.0 - seeds.lo == pytest.approx(((80.0 - both.lo) ** 2 + 25.0) ** 0.5)


# ------------------------------------------------------------------------------------ verdicts on cells


def test_holds_and_fails():
    t = table_iii(joint=95.0, divided=60.0)
    assert verdict(t, "III.joint-beats-divided").verdict == claims.HOLDS
    assert verdict(t, "III.divided-beats-joint-on-NT").verdict == claims.HOLDS
    assert "all 3 comparison(s) decided; tightest" in verdict(t, "III.joint-beats-divided").why
    assert report_check([t]) == 0

    t = table_iii(joint=60.0, divided=95.0)
    v = verdict(t, "III.joint-beats-divided")
    assert v.verdict == claims.FAILS and v.alarming
    assert v.why.startswith("TimeSformer, joint / DF 60.00 [") and "< TimeSformer, dissociated / DF 95.00 [" in v.why
    assert report_check([t]) == 1


def test_undecided_by_the_test_sets_binomial_error():
    # 80 vs 75 % on 280 videos: the Wilson intervals overlap; on 5000 videos they separate
    small = table_iii(joint=80.0, divided=75.0, videos=280)
    v = verdict(small, "III.joint-beats-divided")
    assert v.verdict == claims.UNDECIDED and "3 of 3 comparison(s) within their uncertainty" in v.why and "overlap by" in v.why
    assert report_check([small]) == 0  # undecided is not a failure
    assert verdict(table_iii(joint=80.0, divided=75.0, videos=5000), "III.joint-beats-divided").verdict == claims.HOLDS


def test_undecided_by_the_seeds_spread():
    # a test set so large the binomial error vanishes: the seeds decide
    spread = table_iii(joint=[95.0, 60.0, 94.0], divided=[80.0, 81.0, 79.0], videos=10**6, nt=None)
    assert verdict(spread, "III.joint-beats-divided").verdict == claims.UNDECIDED
    tight = table_iii(joint=[88.0, 87.0, 86.0], divided=[80.0, 81.0, 79.0], videos=10**6, nt=None)
    assert verdict(tight, "III.joint-beats-divided").verdict == claims.HOLDS
    assert verdict(tight, "III.divided-beats-joint-on-NT").verdict == claims.MISSING


def test_not_enough_cells_and_cells_without_a_test_set_size():
    t = table_iii(joint=95.0, divided=60.0, nt=None)
    v = verdict(t, "III.divided-beats-joint-on-NT")
    assert v.verdict == claims.MISSING and "TimeSformer, dissociated / NT (not run)" in v.why
    runs = cell_runs("III", JOINT, "NT", [60.0], videos=None) + cell_runs("III", DIVIDED, "NT", [90.0], videos=None)
    v = verdict(tables_of(runs, ["III"])["III"], "III.divided-beats-joint-on-NT")
    assert v.verdict == claims.MISSING and "test-set size unknown" in v.why
    # a counterexample decides even when other cells are missing
    runs = cell_runs("III", JOINT, "NT", [95.0]) + cell_runs("III", DIVIDED, "NT", [50.0])
    assert verdict(tables_of(runs, ["III"])["III"], "III.divided-beats-joint-on-NT").verdict == claims.FAILS


def test_a_claim_across_tables_reads_the_single_manipulation_cells():
    """VI's cross cells against the same model's single cells of Table IV/V, built although only VI is shown."""
    runs = []
    for row, column in [("train FS, DF, F2F / test NT", "3D ResNet"), ("train FS, DF, NT / test F2F", "3D ResNet")]:
        runs += cell_runs("VI", row, column, [55.0])
    runs += cell_runs("IV", "3D ResNet", "NT", [90.0]) + cell_runs("IV", "3D ResNet", "F2F", [91.0])
    (vi,) = report.build_from(report.RunSet(runs), ["VI"])
    v = verdict(vi, "VI.cross-below-single")
    assert v.verdict == claims.MISSING and "(not run)" in v.why  # the other detectors' cells
    # the two pairs that have values are read across tables and decided the claim's way
    get = report.ours_lookup({"VI": vi, **tables_of(runs, ["IV", "V"])}, "real")
    pairs, _ = claims.comparisons(v.claim, PAPER)
    have = [(x, y) for x, y in pairs if not isinstance(get(x), str) and not isinstance(get(y), str)]
    assert sorted((x.table, x.column) for x, _ in have) == [("IV", "F2F"), ("IV", "NT")]
    assert all(get(x).lo > get(y).hi for x, y in have)


def test_synthetic_cells_are_checked_against_the_planted_claims():
    runs = []
    for row, v in [("MesoNet", 52.0), ("XceptionNet", 48.0), ("3D ResNet", 100.0), ("3D ResNet (SE)", 97.0), ("3D ResNet (non-local 1,2,3,4)", 100.0)]:
        runs += cell_runs("IV", row, "DF", [v], smoke=True, videos=40)
    iv = tables_of(runs, ["IV"])["IV"]
    assert iv.data == "synthetic" and all(v.claim.source == "planted" for v in iv.claims)
    assert verdict(iv, "IV.per-frame-blind-to-DF").verdict == claims.HOLDS
    assert verdict(iv, "IV.3d-sees-DF").verdict == claims.HOLDS
    assert verdict(iv, "IV.spatial-seen-by-all").verdict == claims.MISSING
    md = render.markdown([iv], report.RunSet(runs))
    assert "Planted claims of the synthetic twin" in md and "not yet verified" not in md  # every IV claim is verified
    missing = verdict(iv, "IV.spatial-seen-by-all")
    unverified = claims.Verdict(dataclasses.replace(missing.claim, verified=False), missing.verdict, missing.why)
    assert unverified.line().endswith("[planted, not yet verified on 2 seeds]")
    # a twin without a planted answer: said so, and no tau against the paper's numbers
    runs = [r for p in ("1,2", "3,4", "1,2,3", "4,4") for r in cell_runs("II", f"3D ResNet, non-local {p}", "DF", [50.0 + len(p)], smoke=True, videos=40)]
    ii = tables_of(runs, ["II"])["II"]
    assert ii.data == "synthetic" and ii.no_planted_answer.startswith("no planted answer") and ii.taus == [] and ii.claims == []
    md = render.markdown([ii], report.RunSet(runs))
    assert "Synthetic twin: no planted answer" in md and "τ =" not in md
    assert publish.claim_tags([ii])["dfsearch.claims.II"] == "no planted answer"


# ----------------------------------------------------------------------------------------- table values


def test_quoted_rows_are_out_of_tau_and_a_constant_ranking_is_na():
    rows = ["MesoNet", "XceptionNet", "3D ResNet", "3D ResNet (SE)", "3D ResNet (non-local 1,2,3,4)"]
    runs = [r for row, v in zip(rows, [40.0, 99.0, 70.0, 60.0, 80.0]) for r in cell_runs("IV", row, "DF", [v])]
    iv = tables_of(runs, ["IV"])["IV"]
    (tau,) = iv.taus
    assert tau.label == "DF" and tau.n == 3 and tau.tau == pytest.approx(1.0)  # MesoNet, Xception: paper values quoted
    meso = iv.cells[iv.paper.rows.index("MesoNet")][0]
    assert meso.ours.mean == 40.0 and meso.paper.paper_quoted and meso.diff is None
    md = render.markdown([iv], report.RunSet(runs))
    assert "73.64 (quoted)" in md  # the four forensic baselines are implemented: their FF++ value is quoted beside ours
    assert "| MesoNet | 40.00 (n=1) | 87.27 (quoted) |  |" in md
    # constant input: tau undefined, printed n/a (not +0.00)
    runs = [r for row in rows[2:] for r in cell_runs("IV", row, "DF", [75.0])]
    iv = tables_of(runs, ["IV"])["IV"]
    assert iv.taus[0].tau is None and "DF τ = n/a (constant values) (n=3)" in render.tau_line(iv)


def test_a_balanced_claim_on_all_is_not_decided_by_calling_everything_fake():
    """Table I's planted claim on the `all` protocol (20 real, 80 fake test videos): MesoNet calling every video
    fake scores TCR 80, within the 3D ResNet's 88 on 100 videos; the balanced TCR (50 vs 88) decides it."""
    def cell(row, real, fake, **kw):
        return cell_runs("I", row, "TCR", [(20 * real + 80 * fake) / 100], smoke=True, videos=100, tcr_real=real, tcr_fake=fake, **kw)

    runs = cell("3D ResNet", 85.0, 88.75, videos_fake=80) + cell("MesoNet", 0.0, 100.0) + cell("XceptionNet", 40.0, 80.0)
    i = tables_of(runs, ["I"])["I"]
    v = verdict(i, "I.3d-above-per-frame")
    assert v.verdict == claims.HOLDS and v.why.startswith("on balanced TCR")
    assert claims.interval(88.0, 100).lo < claims.interval(80.0, 100).hi  # on plain TCR: within the uncertainty
    meso = i.cells[i.paper.rows.index("MesoNet")][0]
    assert (meso.videos_real, meso.videos_fake) == (20, 80)  # not logged (an older run): from the protocol, 4 fakes a real
    # a run without each class's TCR cannot be compared on it
    runs = cell("3D ResNet", 85.0, 88.75) + cell_runs("I", "MesoNet", "TCR", [80.0], smoke=True, videos=100) + cell("XceptionNet", 40.0, 80.0)
    assert verdict(tables_of(runs, ["I"])["I"], "I.3d-above-per-frame").verdict == claims.MISSING


def test_a_balanced_claim_on_the_papers_numbers_is_not_enough_cells(tmp_path):
    raw = {"id": "I.x", "table": "I", "quote": "q", "kind": "greater", "a": "3D ResNet", "b": "MesoNet", "metric": "balanced_tcr"}
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [raw]}))
    (c,) = claims.load(path, PAPER).claims
    v = claims.check(c, claims.paper_lookup(PAPER), PAPER)
    assert v.verdict == claims.MISSING and "the paper gives TCR only" in v.why
    path.write_text(yaml.safe_dump({"claims": [{**raw, "metric": "auc"}]}))
    with pytest.raises(ConfigError, match="metric 'auc' is not one of tcr, balanced_tcr"):
        claims.load(path, PAPER)


def test_the_all_protocol_shows_tcr_of_real_and_fake_videos():
    runs = cell_runs("I", "3D ResNet", "TCR", [80.0], videos=700, tcr_real=0.0, tcr_fake=100.0)
    i = tables_of(runs, ["I"])["I"]
    assert "80.00 (n=1) [real 0.0 / fake 100.0]" in render.markdown([i], report.RunSet(runs))


def test_a_missing_space_file_falls_back_to_the_partial_match_and_says_so(tmp_path):
    doc = yaml.safe_load(report.PAPER_FILE.read_text())
    doc["tables"]["III"]["space"] = "search_spaces/nowhere.yaml"
    paper_file = tmp_path / "paper.yaml"
    paper_file.write_text(yaml.safe_dump(doc))
    other = record(space_flat("III", JOINT, "DF", **{"train.epochs": 3}), 91.0)
    (t,) = report.build_from(report.RunSet([other]), ["III"], paper_file)
    assert t.cells[0][0].ours.mean == 91.0 and not t.variants
    assert "search space search_spaces/nowhere.yaml not found" in t.notes[0] and "partial config" in t.notes[0]


# ---------------------------------------------------------------------- exact cells on an MLflow store


@pytest.fixture()
def store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("placement", artifact_location=str(tmp_path / "artifacts"))


def add_run(client, exp, flat, value, *, start=1000, videos=280, complete=None, smoke=False, unlogged=()):
    """A trial run as dfsearch.tune.mlflow_log writes it: params, fingerprint tags, test metrics; ``unlogged``:
    params left out, as a run logged before those settings existed."""
    from mlflow.entities import Metric, Param, RunTag

    full = fingerprint.canonical(flat)  # every setting of the detector's family, as the sweep logs them
    full = {k: v for k, v in full.items() if k not in unlogged}
    tags = {"dfsearch.sweep": "placement", "dfsearch.trial_id": f"t{start}", "dfsearch.role": "trial",
            "dfsearch.synthetic": str(flat.get("data.root") == "synthetic").lower(), "dfsearch.outcome": "tested",
            "dfsearch.cpus_per_trial": "1", **({"dfsearch.smoke": "true"} if smoke else {}), **fingerprint.tags(flat)}
    if complete is not None:
        tags |= {"dfsearch.test_complete": str(complete).lower(), "dfsearch.test_videos": f"{videos}/280"}
    rid = client.create_run(exp, start_time=start, tags=tags).info.run_id
    metrics = [Metric("test/tcr", value, start, 1), Metric("test/videos", float(videos), start, 1)]
    client.log_batch(rid, metrics=metrics, params=[Param(k, str(v)) for k, v in full.items()], tags=[RunTag("x", "y")])
    client.set_terminated(rid, status="FINISHED", end_time=start + 60_000)
    return rid


def test_a_run_with_other_settings_is_a_variant_not_the_cell(store):
    uri, client, exp = store
    row = "3D ResNet, non-local 1,2"
    exact = add_run(client, exp, space_flat("II", row, "DF"), 90.0, start=1000)
    # newer and with more seeds, but other epochs / another compression: never the cell
    for s in range(3):
        add_run(client, exp, space_flat("II", row, "DF", **{"train.epochs": 5, "train.seed": s}), 70.0 + s, start=2000 + s)
    add_run(client, exp, space_flat("II", row, "DF", **{"data.compression": "c23"}), 99.0, start=3000)
    # an incomplete test set is left out of its cell, with the reason
    add_run(client, exp, space_flat("II", row, "F2F"), 88.0, start=4000, videos=250, complete=False)
    # the --smoke twin fills a cell nothing real fills
    twin = add_run(client, exp, space_flat("II", row, "FS", smoke=True), 77.0, start=5000, videos=40, complete=True)

    (ii,), runset = report.build(uri, ["II"])
    df = ii.cells[ii.paper.rows.index(row)][0]
    assert df.runs == [exact] and df.ours.mean == 90.0 and df.ours.n == 1 and df.ours.videos == 280 and df.variants == 4
    assert sorted(v.differs for v in ii.variants) == ["data.compression=c23 (cell: c40)", "train.epochs=5 (cell: 20)"]
    epochs = next(v for v in ii.variants if "epochs" in v.differs)
    assert len(epochs.runs) == 3 and epochs.tested == [70.0, 71.0, 72.0]
    f2f = ii.cells[ii.paper.rows.index(row)][1]
    assert f2f.ours is None and f2f.reason == "test set incomplete"
    assert len(ii.left_out) == 1 and "tested 250/280 videos (dfsearch.test_complete=false)" in ii.left_out[0]
    fs = ii.cells[ii.paper.rows.index(row)][2]
    assert fs.runs == [twin] and fs.synthetic and fs.ours.videos == 40
    md = render.markdown([ii], runset)
    assert "variant of 3D ResNet, non-local 1,2 / DF (not the cell): 3 run(s), test TCR 70.00, 71.00, 72.00; differs: train.epochs=5 (cell: 20)" in md
    assert "— (test set incomplete)" in md and "N = 40/280 test videos per cell" in md


def test_an_older_smoke_run_of_a_pretrained_cell_is_a_variant_that_names_the_setting_it_predates(store):
    """A --smoke twin's pretrained row carries the pretext weights, not the paper's kinetics400, and a run logged
    before model.se_init existed parses with its default: it is still listed, with what it did not log."""
    uri, client, exp = store
    row = "3D ResNet (SE)"
    new = add_run(client, exp, space_flat("IV", row, "NT", smoke=True), 100.0, start=1000, videos=40, complete=True, smoke=True)
    # logged before model.se_init existed: its params lack the key, its SE blocks were Hu et al.'s (hu2018)
    old = add_run(client, exp, space_flat("IV", row, "NT", smoke=True, **{"model.se_init": "hu2018"}), 50.0, start=2000,
                  videos=40, complete=True, smoke=True, unlogged=("model.se_init",))

    (iv,), _ = report.build(uri, ["IV"])
    nt = iv.cells[iv.paper.rows.index(row)][iv.paper.columns.index("NT")]
    assert nt.runs == [new] and nt.ours.mean == 100.0 and nt.variants == 1
    (variant,) = iv.variants
    assert variant.runs == [old] and variant.tested == [50.0]
    assert variant.differs == "model.se_init=hu2018 (cell: identity; not logged: the run predates the setting)"


def test_a_per_frame_run_from_before_val_frames_fills_its_real_cell_and_is_a_variant_of_the_twin(store):
    """eval.val_frames came later: at its default (every frame) a run that never logged it is still its cell; the
    --smoke twin validates on 8 frames, so an older twin run is a variant that says so."""
    uri, client, exp = store
    row = "MesoNet"
    real = add_run(client, exp, space_flat("IV", row, "FS"), 60.0, start=1000, unlogged=("eval.val_frames",))
    new = add_run(client, exp, space_flat("IV", row, "DF", smoke=True), 50.0, start=2000, videos=40, complete=True, smoke=True)
    assert space_flat("IV", row, "DF", smoke=True)["eval.val_frames"] == 8
    old = add_run(client, exp, space_flat("IV", row, "DF", smoke=True, **{"eval.val_frames": 0}), 52.5, start=3000, videos=40,
                  complete=True, smoke=True, unlogged=("eval.val_frames",))

    (iv,), _ = report.build(uri, ["IV"])
    r = iv.paper.rows.index(row)
    assert iv.cells[r][iv.paper.columns.index("FS")].runs == [real]
    df = iv.cells[r][iv.paper.columns.index("DF")]
    assert df.runs == [new] and df.variants == 1
    (variant,) = iv.variants
    assert variant.runs == [old] and variant.differs == "eval.val_frames=0 (cell: 8; not logged: the run predates the setting)", variant.differs


def test_cli_check_exits_1_when_a_claim_the_paper_agrees_with_fails(store, tmp_path):
    uri, client, exp = store
    for k, col in enumerate(("DF", "F2F", "FS")):
        add_run(client, exp, space_flat("III", JOINT, col), 60.0, start=1000 + k)
        add_run(client, exp, space_flat("III", DIVIDED, col), 95.0, start=2000 + k)
    out = subprocess.run([sys.executable, "-m", "dfsearch.report", "III", "--check", "--no-log", "--tracking-uri", uri, "--out", tmp_path / "rep"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "**fails** III.joint-beats-divided" in out.stdout
    assert "check: 1 claim(s) that should hold fail:" in out.stderr and "Table III III.joint-beats-divided (paper)" in out.stderr
    rows = (tmp_path / "rep" / "claims.csv").read_text().splitlines()
    assert rows[0].startswith("table,claim,source,kind,verdict,why") and any(",III.joint-beats-divided,paper,greater,fails," in r for r in rows)


def test_cells_filled_by_one_configuration_say_their_difference_is_not_tested():
    """A --smoke twin that trains the pretrained and the scratch 3D ResNet alike (no weights) is one configuration
    in two cells: the table says the ablation is not tested."""
    pt = PAPER["V"]
    loaded = spaces.load(pt)
    pre, scratch = (pt.rows.index(r) for r in ("3D ResNet, pretrained", "3D ResNet, no pretraining"))
    cells = dict(loaded.cells)
    cells[(pre, 0)] = spaces.CellConfigs(loaded.cells[(pre, 0)].real, loaded.cells[(scratch, 0)].smoke)
    runs = cell_runs("V", "3D ResNet, no pretraining", "DF", [90.0], smoke=True, videos=40)
    v = report.build_table(pt, report.RunSet(runs), spaces.SpaceCells(loaded.source, cells))
    assert v.cells[pre][0].runs == v.cells[scratch][0].runs
    assert any("3D ResNet, no pretraining / DF and 3D ResNet, pretrained / DF are one configuration in these runs (SYNTHETIC" in n
               for n in v.notes)
