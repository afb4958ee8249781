"""Cells shared with other sweeps that run at the same time in the same MLflow store (the mechanism:
:mod:`dfsearch.tracking.liveness`).

Just before a sweep hands its trials to Tune, :func:`claim_cells` leaves out the cells another live sweep has
claimed, creates the sweep's parent run, claims what is left, reads the claims again and leaves out the cells a
sweep that claimed at the same moment claimed first.  What it left out is reported ("running in sweep X") and
recorded like the cells that had finished elsewhere, so ``--resume`` rebuilds the same trial list.  A cell whose
claiming sweep is dead (its heartbeat stale) is run here.

Sampled spaces (optuna, random) are not claimed: their configurations exist only once Tune draws them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from dfsearch import fingerprint, sweeps
from dfsearch.space import SweepSpec
from dfsearch.tracking import liveness


@dataclass
class SharedPlan:
    spec: SweepSpec  # the trials this sweep runs
    remaining: int  # how many (an empty spec still counts one trial: ask this)
    left: dict[str, liveness.Claim] = field(default_factory=dict)  # fingerprint -> the live sweep that runs it
    parent_run_id: str | None = None  # None: nothing left to run, no parent run made

    def by_sweep(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.left.values():
            out[c.sweep] = out.get(c.sweep, 0) + 1
        return out


def _fingerprints(spec: SweepSpec) -> list[str]:
    return [fingerprint.fingerprint(flat) for flat in sweeps.trials(spec)]


def _leave_out(spec: SweepSpec, fps: set[str]) -> tuple[SweepSpec, int]:
    plan = sweeps.plan(spec, fps)
    return plan.spec, plan.remaining


def claim_cells(spec: SweepSpec, tracking_uri: str, make_parent, *, rerun: bool = False) -> SharedPlan:
    """The trials of ``spec`` minus those another live sweep of the store runs; claims them for this sweep.

    ``make_parent(spec)``: creates (or finds) the sweep's parent run for the trials it will run, returns its id.
    ``rerun``: claim, but leave nothing out (the user asked for every trial)."""
    if spec.search.algorithm != "grid":
        return SharedPlan(spec, spec.trial_count(), {}, make_parent(spec))
    client = MlflowClient(tracking_uri)
    left = {} if rerun else liveness.owners(_fingerprints(spec), liveness.live_claims(client))
    spec, remaining = _leave_out(spec, set(left))
    if remaining == 0:
        return SharedPlan(spec, 0, left, None)
    parent = make_parent(spec)
    mine = liveness.claim(client, spec.name, parent, _fingerprints(spec))
    if not rerun:  # a sweep that claimed at the same moment, earlier: it keeps the cells both claimed
        late = liveness.owners(_fingerprints(spec), liveness.live_claims(client, exclude_run_id=parent), mine)
        if late:
            spec, remaining = _leave_out(spec, set(late))
            left |= late
            # release them (and all, if nothing is left: the caller ends the parent run)
            liveness.claim(client, spec.name, parent, _fingerprints(spec) if remaining else [], at=mine.claimed_at)
    return SharedPlan(spec, remaining, left, parent)


def parent_maker(tracking_uri: str, experiment: str, tags: dict[str, str], train_storage: str):
    """``make_parent`` for :func:`claim_cells`: the sweep's parent run as the MLflow logger makes it (the logger
    finds it again by its tags when Tune starts)."""
    from dfsearch.tune.mlflow_log import MLflowTrialLogger

    return lambda spec: MLflowTrialLogger(tracking_uri, experiment, spec, tags, train_storage).parent_id()


def end_unused_parent(tracking_uri: str, parent_run_id: str) -> None:
    """A parent run made for a claim whose every cell turned out to be another sweep's: it ran nothing."""
    client = MlflowClient(tracking_uri)
    client.set_tag(parent_run_id, "mlflow.note.content", "Every trial of this sweep was running in another sweep when it started: nothing ran here.")
    client.set_terminated(parent_run_id, status="FINISHED")


def heartbeat(tracking_uri: str, experiment: str, sweep: str) -> liveness.Heartbeat | None:
    """A resumed sweep beats again on its parent run (None when MLflow has none)."""
    from dfsearch.tracking.store import find_parent

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    parent = find_parent(client, found.experiment_id, sweep) if found else None
    return liveness.Heartbeat(tracking_uri, parent.info.run_id).start() if parent else None
