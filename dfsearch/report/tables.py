"""A paper table rebuilt from runs: each cell filled by the runs of exactly its configuration, τ against the paper,
the runs kept out and why, and the claims checked (:mod:`dfsearch.report.claims`).  No MLflow here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dfsearch import config
from dfsearch.errors import DfsearchError
from dfsearch.report import hours
from dfsearch.report.paper import CLAIMS_FILE, PAPER_FILE, PLANTED_FILE, PaperCell, PaperTable, load_paper
from dfsearch.report.runs import RunRecord, RunSet, read_runs
from dfsearch.report.stats import Stat, kendall, mean_ci

SYNTHETIC_WORD = "SYNTHETIC"
# Without a space file to say what a cell is (the partial match), a `run --smoke` run stands in for the cells
# of the configs it was made from, whatever those say about pretraining (the twin may train without weights).
SMOKE_UNMATCHED = ("model.pretrained",)
# Why a cell has no number, most informative first.
REASONS = {"RUNNING": "running", "SCHEDULED": "running", "FAILED": "failed", "stopped_early": "stopped early", "KILLED": "interrupted"}


@dataclass
class Variant:
    """Runs of a cell's partial config whose settings differ from the cell's configuration."""

    row: str
    column: str
    runs: list[str]
    tested: list[float]  # their test values
    differs: str  # "train.epochs=5 (cell: 20), ..."
    synthetic: bool


@dataclass
class Cell:
    paper: PaperCell
    ours: Stat | None = None
    reason: str = ""  # why `ours` is missing: quoted, not run, running, failed, stopped early, interrupted, test set incomplete
    synthetic: bool = False
    runs: list[str] = field(default_factory=list)  # the run ids behind `ours`
    seed_group: str = ""
    other_configs: int = 0  # further tested configurations the cell accepts (its --smoke twin beside real runs)
    variants: int = 0  # runs of the partial config with other settings (listed under the table)
    tcr_real: float | None = None  # means over the seeds of test/tcr_real, test/tcr_fake
    tcr_fake: float | None = None
    balanced: Stat | None = None  # balanced TCR, (tcr_real + tcr_fake) / 2, over the seeds (claims' metric balanced_tcr)
    videos_real: int | None = None  # each class's N behind `balanced` (the smallest over the seeds)
    videos_fake: int | None = None

    @property
    def diff(self) -> float | None:
        """Ours − paper; None where the paper's value is quoted from another test set."""
        if self.ours is None or self.paper.paper is None or self.paper.paper_quoted:
            return None
        return self.ours.mean - self.paper.paper


@dataclass
class Tau:
    label: str  # the column (rank: rows) or row (rank: columns) the ranking is within
    tau: float | None  # None: undefined (one side constant)
    n: int


@dataclass
class Table:
    paper: PaperTable
    cells: list[list[Cell]]
    taus: list[Tau]
    gpu_hours: float
    cpu_hours: float
    wall_hours: float  # runs without resource tags: their wall time
    runs: int  # runs (any status) that belong to the table's cells
    variants: list[Variant] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # runs kept out of cells, with why
    notes: list[str] = field(default_factory=list)  # how the cells were matched, when not exactly
    claims: list = field(default_factory=list)  # claims.Verdict, in the order of claims.yaml / planted.yaml
    no_planted_answer: str = ""  # a synthetic table whose twin plants no answer: why
    estimate: object = None  # hours.EstimateVsMeasured of its tested runs (None: not priced, or none tested)

    @property
    def synthetic(self) -> bool:
        return any(c.synthetic for line in self.cells for c in line)

    @property
    def data(self) -> str:
        """'synthetic' when every filled cell is synthetic (and one is), else 'real': which claims apply."""
        filled = [c for line in self.cells for c in line if c.ours is not None]
        return "synthetic" if filled and all(c.synthetic for c in filled) else "real"


def matches(run: RunRecord, cell: PaperCell, lenient: bool = True) -> bool:
    """The run's config has the cell's partial config (model, attention, placement, protocol); ``lenient``:
    a smoke run's pretraining is not compared (the partial match, when no space says what the cell is); else a
    smoke run's pretraining is compared with what ``--smoke`` makes of the cell's (pretext weights or none)."""
    if not cell.config:
        return False
    skip = SMOKE_UNMATCHED if run.smoke and lenient else ()
    return all(run.config.get(k) == _as_run(run, cell, k, v) for k, v in cell.config.items() if k not in skip)


def _as_run(run: RunRecord, cell: PaperCell, key: str, value):
    """The value a run of the cell would carry for ``key``: a smoke twin's pretraining is not the paper's."""
    if not (run.smoke and key == "model.pretrained" and cell.config.get("model.name")):
        return value
    from dfsearch import sweeps

    try:
        return sweeps.smoke_pretrained(cell.config["model.name"], value)
    except DfsearchError:  # a family this install does not register
        return value


def _reason(runs: list[RunRecord]) -> str:
    statuses = {r.status if r.status != "FINISHED" else (r.outcome or "stopped_early") for r in runs}
    return next((REASONS[s] for s in REASONS if s in statuses), "not run")


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if len(known) == len(values) and known else None


def incomplete(run: RunRecord) -> bool:
    return run.test_complete is False


def belongs(run: RunRecord, cell: PaperCell, configs=None) -> bool:
    """The run is (a seed of) the cell's configuration: one of the seedless fingerprints ``configs``
    (:class:`spaces.CellConfigs`) accepts; without ``configs`` (no space to read), the partial match."""
    if cell.quoted:
        return False
    return configs.accepts(run.seed_group) if configs is not None else matches(run, cell)


def fill(cell: PaperCell, runs: list[RunRecord], configs=None) -> Cell:
    """The cell from ``runs``: those whose seedless fingerprint ``configs`` (:class:`spaces.CellConfigs`)
    accepts; without ``configs`` (no space to read) every run of the cell's partial config, the configuration
    with real data, then most seeds, then newest."""
    if cell.quoted:
        return Cell(cell, reason="quoted")
    mine = [r for r in runs if belongs(r, cell, configs)]
    variants = 0 if configs is None else sum(matches(r, cell, lenient=False) and not belongs(r, cell, configs) for r in runs)
    tested = [r for r in mine if r.tested and not incomplete(r)]
    if not tested:
        reason = "test set incomplete" if any(r.tested for r in mine) else _reason(mine)
        return Cell(cell, reason=reason, variants=variants)
    groups: dict[str, list[RunRecord]] = {}
    for r in tested:
        groups.setdefault(r.seed_group, []).append(r)
    chosen = max(groups.values(), key=lambda g: (not g[0].synthetic, len(g), max(r.start_ms for r in g)))
    return Cell(
        cell,
        ours=mean_ci([r.value for r in chosen], [r.videos for r in chosen]),
        synthetic=chosen[0].synthetic,
        runs=[r.run_id for r in chosen],
        seed_group=chosen[0].seed_group,
        other_configs=len(groups) - 1,
        variants=variants,
        tcr_real=_mean([r.tcr_real for r in chosen]),
        tcr_fake=_mean([r.tcr_fake for r in chosen]),
        **_balanced(chosen),
    )


def _balanced(runs: list[RunRecord]) -> dict:
    """The cell's balanced TCR over its seeds, and each class's N; nothing where a run lacks a class's TCR or N."""
    fakes = [_videos_fake(r) for r in runs]
    if any(None in (r.tcr_real, r.tcr_fake, r.videos, n) for r, n in zip(runs, fakes)):
        return {}
    return {"balanced": mean_ci([(r.tcr_real + r.tcr_fake) / 2 for r in runs]),
            "videos_real": min(r.videos - n for r, n in zip(runs, fakes)), "videos_fake": min(fakes)}


def _videos_fake(run: RunRecord) -> int | None:
    """How many of the run's N test videos were fake: logged (test/videos_fake), or for older runs from the
    protocol (FF++ test sets hold one real video per pair and one fake per pair and method)."""
    if run.videos_fake is not None or run.videos is None:
        return run.videos_fake
    try:
        per_real = config.fake_test_videos_per_real(run.config.get("protocol.name", config.ProtocolConfig.name))
    except DfsearchError:
        return None
    return run.videos * per_real // (per_real + 1)


def find_variants(pt: PaperTable, runs: list[RunRecord], space) -> list[Variant]:
    """Runs of a cell's partial config that the cell does not accept, grouped by configuration."""
    from dfsearch.report import spaces

    out = []
    for i, line in enumerate(pt.cells):
        for j, c in enumerate(line):
            configs = space.cells.get((i, j))
            if c.quoted or configs is None:
                continue
            groups: dict[str, list[RunRecord]] = {}
            for r in runs:
                if matches(r, c, lenient=False) and not configs.accepts(r.seed_group):
                    groups.setdefault(r.seed_group, []).append(r)
            for group in groups.values():
                first = group[0]
                out.append(Variant(c.row, c.column, [r.run_id for r in group], [r.value for r in group if r.tested],
                                   spaces.differences(first.config, configs.reference(first.synthetic), first.unlogged),
                                   first.synthetic))
    return out


def rank_agreement(pt: PaperTable, cells: list[list[Cell]], data: str = "real") -> list[Tau]:
    """Kendall's tau between our values and the paper's, within each column (rank: rows) or each row
    (rank: columns), wherever at least 3 cells have both.  Cells whose paper value is quoted from another
    test set, and cells of the other data kind (a synthetic cell in a table of real ones), are left out."""
    if pt.rank not in ("rows", "columns"):
        return []
    lines = [[line[j] for line in cells] for j in range(len(pt.columns))] if pt.rank == "rows" else cells
    labels = pt.columns if pt.rank == "rows" else pt.rows
    synthetic = data == "synthetic"
    out = []
    for label, line in zip(labels, lines):
        pairs = [(c.ours.mean, c.paper.paper) for c in line
                 if c.ours is not None and c.paper.paper is not None and not c.paper.paper_quoted and c.synthetic == synthetic]
        if len(pairs) >= 3:
            out.append(Tau(label, kendall(pairs), len(pairs)))
    return out


def shared_configurations(cells: list[list[Cell]]) -> list[str]:
    """Cells of one table filled by the same configuration: the rows' difference is not in the runs (e.g. the
    pretrained and scratch rows of a --smoke twin that trains both without weights)."""
    by_group: dict[str, list[Cell]] = {}
    for line in cells:
        for c in line:
            if c.seed_group:
                by_group.setdefault(c.seed_group, []).append(c)
    return [" and ".join(f"{c.paper.row} / {c.paper.column}" for c in group)
            + " are one configuration in these runs" + (f" ({SYNTHETIC_WORD}: the --smoke twin)" if group[0].synthetic else "")
            + ": the difference between them is not tested"
            for group in by_group.values() if len(group) > 1]


def build_table(pt: PaperTable, runset: RunSet, space=None, price=None) -> Table:
    """One table's cells from ``runset``; ``space`` (:class:`spaces.SpaceCells`, read here when None) says
    which configuration each cell is; ``price`` (:data:`hours.Price`) sets the estimate beside the measured hours."""
    from dfsearch.report import spaces

    space = spaces.load(pt) if space is None else space
    notes = []
    if not space.loaded:
        notes.append(f"{space.note}: cells are filled by any run of their partial config (model, attention, placement, protocol), "
                     "whatever its epochs, lr, compression or clip; the one with real data, most seeds, newest is shown")
    cells, left_out, mine = [], [], {}
    for i, line in enumerate(pt.cells):
        row = []
        for j, c in enumerate(line):
            configs = space.cells.get((i, j)) if space.loaded else None
            if space.loaded and configs is None and not c.quoted:
                notes.append(f"{c.row} / {c.column}: no trial of {space.source} is this cell")
                configs = spaces.CellConfigs()
            row.append(fill(c, runset.runs, configs))
            for r in (r for r in runset.runs if belongs(r, c, configs)):
                mine[r.run_id] = r
                if r.tested and incomplete(r):
                    left_out.append(f"{c.row} / {c.column}: run {r.run_id} tested {r.test_videos or 'fewer'} videos "
                                    "(dfsearch.test_complete=false): left out of the cell")
        cells.append(row)
    held = hours.held_hours(mine.values())
    gpu, cpu, wall = held.get("GPU-h", 0), held.get("CPU-h", 0), held.get("h", 0)
    notes += shared_configurations(cells)
    table = Table(pt, cells, [], gpu, cpu, wall, len(mine), left_out=left_out, notes=notes)
    table.variants = find_variants(pt, runset.runs, space) if space.loaded else []
    if price is not None:
        table.estimate = hours.compare(mine.values(), price)
    table.taus = rank_agreement(pt, cells, table.data)
    return table


def select(names: list[str] | None, paper: dict[str, PaperTable]) -> list[str]:
    """``["II", "v"]`` or ``["all"]`` -> table keys, in the paper's order."""
    if not names or [n.lower() for n in names] == ["all"]:
        return list(paper)
    out = []
    for name in names:
        key = name.upper().removeprefix("TABLE").strip()
        if key not in paper:
            raise DfsearchError(f"no Table {name!r} in the paper; tables are {', '.join(paper)} or all")
        out.append(key)
    return [k for k in paper if k in out]


def ours_lookup(tables: dict[str, Table], data: str):
    """Our cells as claim values (:mod:`dfsearch.report.claims`): the Wilson interval on N widened by the
    seeds' CI (balanced TCR: :func:`claims.balanced_interval`); a cell of the other data kind, or without N, has
    no value."""
    from dfsearch.report import claims

    def get(ref, metric="tcr"):
        t = tables.get(ref.table)
        if t is None:
            return f"Table {ref.table} not built"
        c = t.cells[t.paper.rows.index(ref.row)][t.paper.columns.index(ref.column)]
        if c.ours is None:
            return c.reason
        if c.synthetic != (data == "synthetic"):
            return "synthetic data" if c.synthetic else "real data"
        if not c.ours.videos:
            return "test-set size unknown: the run logged no test/videos"
        if metric == "balanced_tcr":
            if c.balanced is None or not c.videos_real or not c.videos_fake:
                return "no TCR of each class (test/tcr_real, test/tcr_fake)"
            return claims.balanced_interval(c.tcr_real, c.videos_real, c.tcr_fake, c.videos_fake, c.balanced.ci95)
        return claims.interval(c.ours.mean, c.ours.videos, c.ours.ci95)

    return get


def check_claims(shown: list[Table], tables: dict[str, Table], paper: dict[str, PaperTable], paper_claims, planted) -> None:
    """Attach each shown table's verdicts: the paper's claims on real cells, the planted ones on SYNTHETIC
    cells (or the reason its twin plants no answer, which also drops its tau against the paper)."""
    from dfsearch.report import claims

    for t in shown:
        key = t.paper.key
        if t.data == "synthetic":
            if key in planted.no_answer:
                t.no_planted_answer = planted.no_answer[key]
                t.taus = []
            t.claims = claims.check_all(planted.for_table(key), ours_lookup(tables, "synthetic"), paper)
        else:
            t.claims = claims.check_all(paper_claims.for_table(key), ours_lookup(tables, "real"), paper)


def referenced_tables(keys: list[str], claim_sets, paper: dict[str, PaperTable]) -> list[str]:
    """``keys`` and every table a claim of theirs reads a cell of (a cross claim reads single cells)."""
    from dfsearch.report import claims

    need = set(keys)
    for cs in claim_sets:
        for c in cs.claims:
            if c.table in keys and c.kind == "cross_below_single":
                pairs, _ = claims.comparisons(c, paper)
                need |= {ref.table for pair in pairs for ref in pair}
    return [k for k in paper if k in need]


def build(tracking_uri: str, tables: list[str] | None = None, experiments: list[str] | None = None,
          paper_file: str | Path = PAPER_FILE, claims_file: str | Path = CLAIMS_FILE,
          planted_file: str | Path = PLANTED_FILE, price=None) -> tuple[list[Table], RunSet]:
    runset = read_runs(tracking_uri, experiments)
    return build_from(runset, tables, paper_file, claims_file, planted_file, price), runset


def build_from(runset: RunSet, tables: list[str] | None = None, paper_file: str | Path = PAPER_FILE,
               claims_file: str | Path = CLAIMS_FILE, planted_file: str | Path = PLANTED_FILE, price=None) -> list[Table]:
    """The selected tables from runs already read, claims checked (no MLflow here); ``price``: see build_table."""
    from dfsearch.report import claims

    paper = load_paper(paper_file)
    keys = select(tables, paper)
    paper_claims = claims.load(claims_file, paper, "paper")
    planted = claims.load(planted_file, paper, "planted")
    built = {k: build_table(paper[k], runset, price=price if k in keys else None) for k in referenced_tables(keys, (paper_claims, planted), paper)}
    shown = [built[k] for k in keys]
    check_claims(shown, built, paper, paper_claims, planted)
    return shown
