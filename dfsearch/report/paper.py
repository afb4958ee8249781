"""The paper's Tables I-VI as data: ``dfsearch/experiments/paper.yaml`` read into :class:`PaperTable` s.

Each row and column carries a partial trial config; a quoted row (a baseline the paper took from another
paper) carries where it comes from instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dfsearch import fingerprint
from dfsearch.errors import ConfigError, DfsearchError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"  # package data: shipped in the wheel
PAPER_FILE = EXPERIMENTS / "paper.yaml"
CLAIMS_FILE = EXPERIMENTS / "claims.yaml"
PLANTED_FILE = EXPERIMENTS / "planted.yaml"
TABLES = ("I", "II", "III", "IV", "V", "VI")


@dataclass
class PaperCell:
    row: str
    column: str
    paper: float | None
    config: dict[str, Any]  # canonical values of the keys that define the cell ({} for quoted rows)
    quoted: str = ""  # where a quoted baseline comes from (not implemented here: a paper-only cell)
    paper_quoted: str = ""  # implemented here, but the paper's value is quoted from there (another test set)


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
                paper_quoted = str(r.get("paper_quoted") or c.get("paper_quoted") or "")
                line.append(PaperCell(r["label"], c["label"], None if value is None else float(value), cfg, quoted, paper_quoted))
            cells.append(line)
        tables[key] = PaperTable(key, str(t.get("title", "")), str(t.get("space", "")), str(t.get("rank", "none")), rows, columns, cells)
    return tables
