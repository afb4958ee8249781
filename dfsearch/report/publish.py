"""Write a report's files and log them to the sweep's MLflow parent run (tag ``dfsearch.role=sweep``)."""

from __future__ import annotations

from pathlib import Path

from dfsearch.report import RunSet, Table
from dfsearch.report import claims, render
from dfsearch.tracking import names as N
from dfsearch.tracking import store


def write(tables: list[Table], runset: RunSet, out_dir: str | Path) -> tuple[list[Path], str]:
    return render.write_all(tables, runset, out_dir), render.markdown(tables, runset)


def sweeps_behind(tables: list[Table], runset: RunSet) -> set[tuple[str, str]]:
    """(experiment, sweep) of every run that fills a cell."""
    used = {rid for t in tables for line in t.cells for c in line for rid in c.runs}
    return {(r.experiment, r.sweep) for r in runset.runs if r.run_id in used and r.sweep}


def log_to_parent(tracking_uri: str, tables: list[Table], runset: RunSet, out_dir: str | Path, sweep: str | None = None,
                  experiment: str | None = None) -> str:
    """Log ``out_dir``'s files under ``report/`` of the sweep's parent run; returns a line saying what happened."""
    if sweep is None:
        behind = sweeps_behind(tables, runset)
        if len(behind) != 1:
            return ("not logged to MLflow: the cells come from " + (f"{len(behind)} sweeps" if behind else "no sweep")
                    + "; name one with --sweep NAME")
        experiment, sweep = next(iter(behind))
    client = store.open_store(tracking_uri)
    parent = store.find_parent_anywhere(client, sweep, experiment)
    if parent is None:
        return f"not logged to MLflow: sweep '{sweep}' has no parent run (dfsearch.role=sweep) in {tracking_uri}"
    client.log_artifacts(parent.info.run_id, str(out_dir), "report")
    for key, value in claim_tags(tables).items():
        client.set_tag(parent.info.run_id, key, value)
    return f"logged to MLflow: run {parent.info.run_id} (sweep '{sweep}'), artifacts report/ (claims: {summary(tables)})"


def summary(tables: list[Table]) -> str:
    return claims.summary([v for t in tables for v in t.claims])


def claim_tags(tables: list[Table]) -> dict[str, str]:
    """The parent run's tags: ``dfsearch.claims`` (counts of each verdict), one ``dfsearch.claims.<TABLE>``
    per table, and ``dfsearch.claims_failed`` (the ids of claims that should hold and fail, or "none")."""
    tags = {N.CLAIMS_TAG: summary(tables)}
    for t in tables:
        tags[f"{N.CLAIMS_TAG}.{t.paper.key}"] = claims.summary(t.claims) if t.claims else (
            "no planted answer" if t.no_planted_answer else "no claims")
    failed = [v.claim.id for t in tables for v in t.claims if v.alarming]
    tags[N.CLAIMS_FAILED_TAG] = (", ".join(failed) or "none")[:4900]  # MLflow caps a tag at 5000 chars
    return tags
