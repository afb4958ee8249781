"""Which configuration a table cell *is*: the trial its search space generates for it, and that trial's
``run --smoke`` twin.

A cell of ``paper.yaml`` names a partial config (model, attention, placement, protocol).  The table's
``space:`` file turns it into full trials; the trial whose canonical config contains the cell's partial config
is the cell.  Its seedless fingerprint (:data:`dfsearch.fingerprint.SEEDLESS_TAG`: every setting that can
change the result except the seed) is what a run must carry to fill the cell, so a run with other epochs, lr,
compression, clip or detector is a *variant*, never the cell.  The twin is the same trial after
:func:`dfsearch.sweeps.smoke` (what ``run --smoke`` trains), matched by its position in the grid.

No MLflow, no Ray: a space is read and expanded the way ``python -m dfsearch.run`` does before Tune starts.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfsearch import fingerprint
from dfsearch.errors import DfsearchError

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(__file__).resolve().parents[1]
ROOT_VAR = "FFPP_ROOT"
PLACEHOLDER_ROOT = "/FFPP_ROOT"  # any real path: a real dataset's location is not part of the fingerprint


@dataclass
class CellConfigs:
    """The seedless fingerprints that fill one cell, each with its relevant config (for variants' diffs)."""

    real: dict[str, dict[str, Any]] = field(default_factory=dict)
    smoke: dict[str, dict[str, Any]] = field(default_factory=dict)

    def accepts(self, seed_group: str) -> bool:
        return seed_group in self.real or seed_group in self.smoke

    def reference(self, synthetic: bool) -> dict[str, Any]:
        """The config a run of this data kind should have had (for the variants' 'what differs')."""
        pick = (self.smoke or self.real) if synthetic else (self.real or self.smoke)
        return next(iter(pick.values()), {})


@dataclass
class SpaceCells:
    source: str
    cells: dict[tuple[int, int], CellConfigs]  # (row, column) -> configs; absent: no trial of the space is it
    note: str = ""  # why the space could not be used ('' when it was)

    @property
    def loaded(self) -> bool:
        return not self.note


@contextmanager
def _root(value: str):
    """``$FFPP_ROOT`` set for the duration (the space files interpolate it), unless the user set it."""
    if ROOT_VAR in os.environ:
        yield
        return
    os.environ[ROOT_VAR] = value
    try:
        yield
    finally:
        os.environ.pop(ROOT_VAR, None)


def resolve(space_file: str) -> Path | None:
    """A table's ``space:`` (relative to the repository, or to the working directory) as an existing file."""
    path = Path(space_file)
    # dfsearch/search_spaces is a link to the repository's search_spaces/, shipped in the wheel as package data
    for candidate in ([path] if path.is_absolute() else [Path.cwd() / path, REPO / path, PACKAGE / path]):
        if candidate.is_file():
            return candidate
    return None


def seedless(flat: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(seedless fingerprint, the settings it covers, the canonical config) of a trial's flat config."""
    full = fingerprint.canonical(flat)
    rel = fingerprint.relevant(full, seed=False)
    return fingerprint.of_canonical(full, seed=False), rel, full


@functools.lru_cache(maxsize=32)
def _expand(path: str, mtime_ns: int, root: str | None) -> tuple[list, list]:
    """The space's trials and its --smoke twin's, each as :func:`seedless` gives it (cached per file version:
    a report reads one space for several tables, and the tests read them often).  Raises DfsearchError."""
    from dfsearch import space, sweeps

    with _root(PLACEHOLDER_ROOT):
        trials = [seedless(f) for f in sweeps.trials(space.load(path))]
    with _root("synthetic"):  # as `run --smoke` loads a space without $FFPP_ROOT
        twins = [seedless(f) for f in sweeps.trials(sweeps.smoke(space.load(path)))]
    return trials, twins


def _cell_of(full: dict[str, Any], table) -> list[tuple[int, int]]:
    return [(i, j) for i, line in enumerate(table.cells) for j, c in enumerate(line)
            if c.config and not c.quoted and all(full.get(k) == v for k, v in c.config.items())]


def load(table) -> SpaceCells:
    """The configurations of a :class:`~dfsearch.report.PaperTable`'s cells from its space file (and the
    space's ``--smoke`` twin).  A space that cannot be read gives an empty mapping and a note saying why."""
    if not table.space:
        return SpaceCells("", {}, "the table names no search space")
    path = resolve(table.space)
    if path is None:
        return SpaceCells(table.space, {}, f"search space {table.space} not found (from {Path.cwd()} or {REPO})")
    try:
        trials, twins = _expand(str(path), path.stat().st_mtime_ns, os.environ.get(ROOT_VAR))
    except DfsearchError as exc:
        return SpaceCells(str(path), {}, f"search space {table.space} not usable: {exc}")
    if len(twins) != len(trials):
        twins = []  # the twin's grid is not the space's: no position to match by
    cells: dict[tuple[int, int], CellConfigs] = {}
    for k, (fp, rel, full) in enumerate(trials):
        for ij in _cell_of(full, table):
            entry = cells.setdefault(ij, CellConfigs())
            entry.real[fp] = rel
            if twins:
                twin_fp, twin_rel, _ = twins[k]
                entry.smoke[twin_fp] = twin_rel
    return SpaceCells(str(path), cells)


def differences(config: dict[str, Any], reference: dict[str, Any], unlogged: tuple[str, ...] = ()) -> str:
    """What a run's canonical config sets otherwise than the cell's: ``train.epochs=5 (cell: 20)``; a setting the
    run did not log (it predates the setting: its value is the one it had then, config.as_logged) says so."""
    mine = fingerprint.relevant(config, seed=False)
    keys = sorted(set(mine) | set(reference))
    # a key the fingerprint leaves out at its neutral value (fingerprint.ADDED_NEUTRAL) still shows that value
    diffs = [f"{k}={mine.get(k, config.get(k, '—'))} (cell: {reference.get(k, '—')}" + ("; not logged: the run predates the setting)" if k in unlogged else ")")
             for k in keys if mine.get(k) != reference.get(k) or (k in unlogged and k in reference)]
    return ", ".join(diffs) if diffs else "the same settings (an older fingerprint)"
