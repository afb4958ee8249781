"""Beyond the paper: the sweep's detectors on the test-only sets (``data.test_sets``: Celeb-DF v2, DFDC,
DeeperForensics-1.0, FaceShifter, DFD), trained on FaceForensics++ and scored without retraining.

One row per configuration (the seedless fingerprint: a paper cell and its seeds), one column group per set:
AUC (the field's metric for these sets) and TCR, each the mean over seeds ± the 95 % interval, with n (seeds)
and N (videos tested / videos the set's label files name).  With one seed the interval is the test set's own
sampling error: Hanley & McNeil's for the AUC, Wilson's for the TCR.  These numbers never selected anything:
each trial scored the sets once, after its FF++ test, with the weights it tested.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

from dfsearch.config import TEST_SETS
from dfsearch.report.runs import RunRecord, RunSet
from dfsearch.report.stats import Z95, Stat, mean_ci, wilson

TITLE = "Cross-dataset generalisation (beyond the paper: trained on FaceForensics++, tested on other sets)"
LABEL_KEYS = ("model.name", "model.attention", "model.placement", "model.space_time", "model.pretrained", "protocol.name",
              "data.compression")


@dataclass
class CrossCell:
    auc: Stat
    tcr: Stat
    auc_ci: float | None  # half-width of the 95 % interval shown (seeds' t interval, else Hanley-McNeil)
    tcr_ci: tuple[float, float] | None  # the TCR's interval when one seed (Wilson on N), in percent
    videos: int | None
    expected: int | None


@dataclass
class CrossRow:
    label: str
    seed_group: str
    synthetic: bool
    cells: dict[str, CrossCell] = field(default_factory=dict)


@dataclass
class CrossTable:
    sets: list[str]
    rows: list[CrossRow]

    @property
    def synthetic(self) -> bool:
        return any(r.synthetic for r in self.rows)


def label(run: RunRecord) -> str:
    cfg = run.config
    short = {"protocol.name": "protocol"}
    parts = [str(cfg[k]) if k == "model.name" else f"{short.get(k, k.split('.')[1])}={cfg[k]}" for k in LABEL_KEYS
             if cfg.get(k) not in (None, "")]
    return " ".join(parts)


def hanley_mcneil(auc: float, n_fake: int, n_real: int) -> float | None:
    """Standard error of an AUC on ``n_fake`` positives and ``n_real`` negatives (Hanley & McNeil 1982)."""
    if n_fake < 1 or n_real < 1 or auc != auc:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_fake - 1) * (q1 - auc * auc) + (n_real - 1) * (q2 - auc * auc)) / (n_fake * n_real)
    return math.sqrt(max(var, 0.0))


def _int(v: float | None) -> int | None:
    return None if v is None or v != v else int(round(v))


def cell(runs: list[RunRecord], name: str) -> CrossCell | None:
    got = [r.cross for r in runs if f"test/{name}/auc" in r.cross or f"test/{name}/tcr" in r.cross]
    if not got:
        return None
    videos = [_int(m.get(f"test/{name}/videos")) for m in got]
    aucs = [m.get(f"test/{name}/auc", float("nan")) for m in got]
    tcrs = [m.get(f"test/{name}/tcr", float("nan")) for m in got]
    auc, tcr = mean_ci(aucs, videos), mean_ci(tcrs, videos)
    auc_ci, tcr_ci = auc.ci95, None
    if len(got) == 1 and videos[0]:
        n_fake = _int(got[0].get(f"test/{name}/videos_fake"))
        se = hanley_mcneil(aucs[0], n_fake, videos[0] - n_fake) if n_fake is not None else None
        auc_ci = None if se is None else Z95 * se
        lo, hi = wilson(tcrs[0] / 100.0, videos[0]) if tcrs[0] == tcrs[0] else (None, None)
        tcr_ci = None if lo is None else (100 * lo, 100 * hi)
    return CrossCell(auc, tcr, auc_ci, tcr_ci, min((v for v in videos if v), default=None),
                     _int(got[0].get(f"test/{name}/videos_expected")))


def build(runset: RunSet) -> CrossTable | None:
    """The cross-dataset table of the store's tested runs that scored a test-only set (None when none did)."""
    tested = [r for r in runset.runs if r.tested and r.cross]
    if not tested:
        return None
    sets = [s for s in TEST_SETS if any(k.startswith(f"test/{s}/") for r in tested for k in r.cross)]
    groups: dict[str, list[RunRecord]] = {}
    for r in sorted(tested, key=lambda r: r.start_ms):
        groups.setdefault(r.seed_group, []).append(r)
    rows = []
    for key, runs in groups.items():
        row = CrossRow(label(runs[0]), key, any(r.synthetic for r in runs))
        for s in sets:
            c = cell(runs, s)
            if c is not None:
                row.cells[s] = c
        rows.append(row)
    rows.sort(key=lambda r: r.label)
    return CrossTable(sets, rows)


def _pm(mean: float, half: float | None, digits: int) -> str:
    if mean != mean:
        return "nan"
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if half is not None else "")


def cell_text(c: CrossCell | None) -> tuple[str, str]:
    if c is None:
        return "— (not scored)", ""
    n = f"n={c.auc.n}, N={c.videos}" + (f"/{c.expected}" if c.expected is not None else "")
    tcr = _pm(c.tcr.mean, c.tcr.ci95, 1) if c.tcr_ci is None else f"{c.tcr.mean:.1f} [{c.tcr_ci[0]:.1f}, {c.tcr_ci[1]:.1f}]"
    return f"{_pm(c.auc.mean, c.auc_ci, 3)} ({n})", tcr


def markdown(t: CrossTable) -> str:
    syn = " — SYNTHETIC (plumbing check, not a result)" if t.synthetic else ""
    head = ["detector"] + [f"{s} {m}" for s in t.sets for m in ("AUC", "TCR %")]
    lines = [f"## {TITLE}{syn}", "",
             "AUC ± 95 % interval (n seeds, N videos tested/listed) and TCR; with one seed the interval is the test set's "
             "own (Hanley-McNeil for AUC, Wilson [lo, hi] for TCR). Scored once per trial after its FF++ test, with the "
             "tested weights and the family's test view; never used for selection.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in t.rows:
        texts = [x for s in t.sets for x in cell_text(r.cells.get(s))]
        lines.append("| " + " | ".join([r.label + (" SYNTHETIC" if r.synthetic else "")] + texts) + " |")
    return "\n".join(lines) + "\n"


def csv_bytes(t: CrossTable) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["detector", "seed_group", "set", "auc", "auc_ci95", "tcr", "tcr_ci95", "tcr_lo", "tcr_hi", "seeds", "videos",
                "videos_listed", "synthetic"])
    for r in t.rows:
        for s, c in r.cells.items():
            lo, hi = c.tcr_ci or ("", "")
            w.writerow([r.label, r.seed_group, s, c.auc.mean, "" if c.auc_ci is None else c.auc_ci, c.tcr.mean,
                        "" if c.tcr.ci95 is None else c.tcr.ci95, lo, hi, c.auc.n, c.videos or "",
                        "" if c.expected is None else c.expected, r.synthetic])
    return out.getvalue().encode()


def write(t: CrossTable, out_dir) -> list:
    """``cross.md`` and ``cross.csv`` in ``out_dir`` (each written under a temp name, then renamed)."""
    from pathlib import Path

    from dfsearch.report.render import write_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "cross.md", out / "cross.csv"]
    write_atomic(files[0], markdown(t).encode())
    write_atomic(files[1], csv_bytes(t))
    return files
