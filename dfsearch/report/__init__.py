"""The paper's Tables I-VI rebuilt from MLflow, side by side with the paper's numbers.

``experiments/paper.yaml`` holds every number of the paper's tables; each row and column may carry a partial
trial config, and a cell is filled by every FINISHED, tested run in the tracking store whose config has those
values, whatever sweep ran it (so a cell printed in three tables is one number).  Runs are read back from
their logged params (re-parsed by the typed config, so ``single:DF`` and ``single:Deepfakes`` agree):

* one run per trial: the newest of a trial's runs (``dfsearch.sweep`` + ``dfsearch.trial_id``) and of runs
  that share a fingerprint (a trial that was run again with ``run --rerun``);
* a cell's seeds (runs that share ``dfsearch.seed_group``) become mean ± 95 % CI (Student t);
* a cell with no tested run says why: running, failed, stopped early (ASHA), interrupted, or not run;
* synthetic runs are used only where no real run fills the cell, and every number they give is labelled
  SYNTHETIC.

This module reads and computes; :mod:`dfsearch.report.render` writes Markdown, CSV, HTML and PNG, and
``python -m dfsearch.report`` is the CLI.  MLflow is imported only by :func:`read_runs`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dfsearch import config, fingerprint
from dfsearch.errors import ConfigError, DfsearchError

log = logging.getLogger(__name__)

PAPER_FILE = Path(__file__).resolve().parents[2] / "experiments" / "paper.yaml"
TABLES = ("I", "II", "III", "IV", "V", "VI")
TESTED = "tested"
# Why a cell has no number, most informative first.
# `run --smoke` trains without pretrained weights (a narrow model cannot load them, and a laptop has none):
# its runs fill the cells of the configs they stand in for, whatever those say about pretraining.
SMOKE_UNMATCHED = ("model.pretrained",)
REASONS = {"RUNNING": "running", "SCHEDULED": "running", "FAILED": "failed", "stopped_early": "stopped early", "KILLED": "interrupted"}


# ------------------------------------------------------------------------------------------------ the paper


@dataclass
class PaperCell:
    row: str
    column: str
    paper: float | None
    config: dict[str, Any]  # canonical values of the keys that define the cell ({} for quoted rows)
    quoted: str = ""  # where a quoted baseline comes from (not implemented here)


@dataclass
class PaperTable:
    key: str
    title: str
    space: str
    rank: str  # rows | columns | none
    rows: list[str]
    columns: list[str]
    cells: list[list[PaperCell]]  # [row][column]


def _canonical_partial(partial: dict[str, Any], where: str) -> dict[str, Any]:
    """The canonical form of the values a row/column sets (``"1,2"`` stays ``"1,2"``, ``single:DF`` becomes
    ``single:Deepfakes``), keeping only the keys the typed config keeps for that detector."""
    try:
        full = fingerprint.canonical(partial)
    except DfsearchError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return {k: full[k] for k in partial if k in full}


def load_paper(path: str | Path = PAPER_FILE) -> dict[str, PaperTable]:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the paper's tables ({exc})") from None
    base = doc.get("match") or {}
    tables = {}
    for key, t in doc["tables"].items():
        key = str(key)
        where = f"{path}: tables.{key}"
        columns, rows, cells = [c["label"] for c in t["columns"]], [r["label"] for r in t["rows"]], []
        for r in t["rows"]:
            values = r.get("values") or []
            if len(values) != len(columns):
                raise ConfigError(f"{where}: row '{r['label']}' has {len(values)} values for {len(columns)} columns")
            line = []
            for c, value in zip(t["columns"], values):
                quoted = str(r.get("quoted") or c.get("quoted") or "")
                partial = {} if quoted else {**base, **(c.get("config") or {}), **(r.get("config") or {})}
                cfg = _canonical_partial(partial, f"{where} row '{r['label']}' column '{c['label']}'") if partial else {}
                line.append(PaperCell(r["label"], c["label"], None if value is None else float(value), cfg, quoted))
            cells.append(line)
        tables[key] = PaperTable(key, str(t.get("title", "")), str(t.get("space", "")), str(t.get("rank", "none")), rows, columns, cells)
    return tables


# -------------------------------------------------------------------------------------------- MLflow runs


@dataclass
class RunRecord:
    run_id: str
    experiment: str
    status: str  # MLflow: RUNNING, SCHEDULED, FINISHED, FAILED, KILLED
    outcome: str  # tested | stopped_early | "" (tag dfsearch.outcome)
    start_ms: int
    end_ms: int | None
    sweep: str
    trial_id: str
    config: dict[str, Any]  # canonical flat config
    fingerprint: str
    seed_group: str
    synthetic: bool
    smoke: bool  # a `run --smoke` trial (tag dfsearch.smoke)
    value: float | None  # the paper metric (test/tcr) when tested
    gpus: float | None
    cpus: float | None

    @property
    def tested(self) -> bool:
        return self.status == "FINISHED" and self.outcome == TESTED and self.value is not None

    @property
    def hours(self) -> float:
        if self.end_ms is None or not self.start_ms:
            return 0.0
        return max(0.0, self.end_ms - self.start_ms) / 3.6e6


@dataclass
class RunSet:
    runs: list[RunRecord]
    unreadable: int = 0  # runs whose params no longer parse as a trial config (logged by another version)
    duplicates: int = 0  # older runs of a trial (or of a fingerprint) that the newest one replaced
    tracking_uri: str = ""


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def to_record(run, experiment: str, metric: str) -> RunRecord:
    """An MLflow run -> RunRecord (ConfigError when its params are not a trial config)."""
    tags, params = run.data.tags, run.data.params
    cfg = fingerprint.from_params(params)
    return RunRecord(
        run_id=run.info.run_id,
        experiment=experiment,
        status=run.info.status,
        outcome=tags.get("dfsearch.outcome", ""),
        start_ms=run.info.start_time or 0,
        end_ms=run.info.end_time,
        sweep=tags.get("dfsearch.sweep", ""),
        trial_id=tags.get("dfsearch.trial_id", run.info.run_id),
        config=cfg,
        fingerprint=tags.get(fingerprint.TAG) or fingerprint._digest(fingerprint.relevant(cfg)),
        seed_group=tags.get(fingerprint.SEEDLESS_TAG) or fingerprint._digest(fingerprint.relevant(cfg, seed=False)),
        synthetic=tags.get("dfsearch.synthetic") == "true" or cfg.get("data.root") == "synthetic",
        smoke=tags.get("dfsearch.smoke") == "true",
        value=run.data.metrics.get(metric),
        gpus=_float(tags.get("dfsearch.gpus_per_trial")),
        cpus=_float(tags.get("dfsearch.cpus_per_trial")),
    )


def open_store(tracking_uri: str):
    """An MlflowClient for ``tracking_uri``; a local SQLite file that does not exist is an error (reading
    must not create an empty store)."""
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_file():
            raise DfsearchError(
                f"no MLflow store at {db}: run a sweep first (e.g. python -m dfsearch.run search_spaces/placement.yaml --smoke) "
                "or pass --tracking-uri / set MLFLOW_TRACKING_URI"
            )
    return MlflowClient(tracking_uri)


def read_runs(tracking_uri: str, experiments: list[str] | None = None, metric: str = "test/tcr") -> RunSet:
    """Every trial run in the store (or in the named experiments), one per trial, newest on duplicates."""
    client = open_store(tracking_uri)
    try:
        found = client.search_experiments()
    except Exception as exc:  # MLflow raises many types for a store it cannot open
        raise DfsearchError(f"cannot read the MLflow store at {tracking_uri}: {str(exc).splitlines()[0][:300]}") from None
    names = {e.experiment_id: e.name for e in found}
    if experiments:
        missing = [n for n in experiments if n not in names.values()]
        if missing:
            raise DfsearchError(f"{tracking_uri}: no experiment named {', '.join(missing)} (the store has: {', '.join(sorted(names.values())) or 'none'})")
        names = {i: n for i, n in names.items() if n in experiments}
    records, unreadable = [], 0
    for exp_id, name in names.items():
        token = None
        while True:
            page = client.search_runs([exp_id], max_results=1000, page_token=token)
            for run in page:
                if run.data.tags.get("dfsearch.role") == "sweep" or not run.data.params:
                    continue  # a sweep's parent run, or a run that is not a trial
                try:
                    records.append(to_record(run, name, metric))
                except DfsearchError as exc:
                    unreadable += 1
                    log.info("run %s: params are not a trial config (%s)", run.info.run_id, exc)
            token = page.token
            if not token:
                break
    return dedupe(records, unreadable, tracking_uri)


def dedupe(records: list[RunRecord], unreadable: int = 0, tracking_uri: str = "") -> RunSet:
    """Keep the newest run of each trial, then the newest tested run of each fingerprint (a rerun)."""
    newest: dict[tuple[str, str], RunRecord] = {}
    for r in sorted(records, key=lambda r: r.start_ms):
        newest[(r.experiment, r.sweep, r.trial_id)] = r
    runs = list(newest.values())
    by_print: dict[str, RunRecord] = {}
    rest = []
    for r in sorted(runs, key=lambda r: r.start_ms):
        if r.tested:
            by_print[r.fingerprint] = r
        else:
            rest.append(r)
    kept = rest + list(by_print.values())
    return RunSet(kept, unreadable, len(records) - len(kept), tracking_uri)


# ------------------------------------------------------------------------------------------------- tables


@dataclass
class Stat:
    mean: float
    ci95: float | None  # half-width of the 95 % confidence interval (None for one seed)
    n: int


@dataclass
class Cell:
    paper: PaperCell
    ours: Stat | None = None
    reason: str = ""  # why `ours` is missing: quoted, not run, running, failed, stopped early, interrupted
    synthetic: bool = False
    runs: list[str] = field(default_factory=list)  # the run ids behind `ours`
    seed_group: str = ""
    other_configs: int = 0  # further tested configurations of this cell (e.g. other epochs) not shown

    @property
    def diff(self) -> float | None:
        if self.ours is None or self.paper.paper is None:
            return None
        return self.ours.mean - self.paper.paper


@dataclass
class Tau:
    label: str  # the column (rank: rows) or row (rank: columns) the ranking is within
    tau: float
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

    @property
    def synthetic(self) -> bool:
        return any(c.synthetic for line in self.cells for c in line)


def mean_ci(values: list[float]) -> Stat:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Stat(mean, None, n)
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Stat(mean, float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n), n)


def matches(run: RunRecord, cell: PaperCell) -> bool:
    skip = SMOKE_UNMATCHED if run.smoke else ()
    return bool(cell.config) and all(run.config.get(k) == v for k, v in cell.config.items() if k not in skip)


def fill(cell: PaperCell, runs: list[RunRecord]) -> Cell:
    if cell.quoted:
        return Cell(cell, reason="quoted")
    mine = [r for r in runs if matches(r, cell)]
    tested = [r for r in mine if r.tested]
    if not tested:
        statuses = {r.status if r.status != "FINISHED" else (r.outcome or "stopped_early") for r in mine}
        reason = next((REASONS[s] for s in REASONS if s in statuses), "not run")
        return Cell(cell, reason=reason)
    # Real data first; then the configuration with the most seeds, then the newest.
    groups: dict[str, list[RunRecord]] = {}
    for r in tested:
        groups.setdefault(r.seed_group, []).append(r)
    chosen = max(groups.values(), key=lambda g: (not g[0].synthetic, len(g), max(r.start_ms for r in g)))
    return Cell(
        cell,
        ours=mean_ci([r.value for r in chosen]),
        synthetic=chosen[0].synthetic,
        runs=[r.run_id for r in chosen],
        seed_group=chosen[0].seed_group,
        other_configs=len(groups) - 1,
    )


def kendall(pairs: list[tuple[float, float]]) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau([a for a, _ in pairs], [b for _, b in pairs]).statistic
    return float(tau) if tau == tau else 0.0  # constant input: no ranking information


def rank_agreement(pt: PaperTable, cells: list[list[Cell]]) -> list[Tau]:
    """Kendall's tau between our values and the paper's, within each column (rank: rows) or each row
    (rank: columns), wherever at least 3 cells have both."""
    if pt.rank not in ("rows", "columns"):
        return []
    lines = [[line[j] for line in cells] for j in range(len(pt.columns))] if pt.rank == "rows" else cells
    labels = pt.columns if pt.rank == "rows" else pt.rows
    out = []
    for label, line in zip(labels, lines):
        pairs = [(c.ours.mean, c.paper.paper) for c in line if c.ours is not None and c.paper.paper is not None]
        if len(pairs) >= 3:
            out.append(Tau(label, kendall(pairs), len(pairs)))
    return out


def build_table(pt: PaperTable, runset: RunSet) -> Table:
    cells = [[fill(c, runset.runs) for c in line] for line in pt.cells]
    spent = {r.run_id: r for r in runset.runs for line in pt.cells for c in line if matches(r, c)}
    gpu = sum(r.hours * r.gpus for r in spent.values() if r.gpus)
    cpu = sum(r.hours * r.cpus for r in spent.values() if not r.gpus and r.cpus)
    wall = sum(r.hours for r in spent.values() if r.gpus is None and r.cpus is None)
    return Table(pt, cells, rank_agreement(pt, cells), gpu, cpu, wall, len(spent))


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


def build(tracking_uri: str, tables: list[str] | None = None, experiments: list[str] | None = None,
          paper_file: str | Path = PAPER_FILE) -> tuple[list[Table], RunSet]:
    paper = load_paper(paper_file)
    keys = select(tables, paper)
    runset = read_runs(tracking_uri, experiments)
    return [build_table(paper[k], runset) for k in keys], runset
