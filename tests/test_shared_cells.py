"""Cells shared by sweeps that run at the same time (dfsearch/tracking/liveness.py, dfsearch/tune/shared_cells.py),
against a real SQLite MLflow store.  The same with two real sweeps: tests/test_sweep.py::test_two_sweeps_sharing_cells."""

from __future__ import annotations

import time

import pytest
import yaml
from conftest import TINY

from dfsearch import fingerprint, space, sweeps
from dfsearch.tracking import liveness

SPACE = {**TINY, "cases": [{"model.attention": "none"}, {"model.attention": "se", "model.placement": "1,2"},
                           {"model.attention": "nonlocal", "model.placement": "3,4"}]}


@pytest.fixture()
def store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("other", artifact_location=str(tmp_path / "artifacts"))


def load_space(tmp_path, name="mine"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **SPACE}, sort_keys=False))
    return space.load(str(path))


def fps(spec):
    return [fingerprint.fingerprint(f) for f in sweeps.trials(spec)]


def sweep_parent(client, exp, name, *, status="RUNNING"):
    rid = client.create_run(exp, tags={"dfsearch.role": "sweep", "dfsearch.sweep": name}, run_name=f"sweep {name}").info.run_id
    if status != "RUNNING":
        client.set_terminated(rid, status=status)
    return rid


def test_a_live_sweep_blocks_its_claimed_cells_and_a_stale_or_ended_one_does_not(store, tmp_path):
    uri, client, exp = store
    cells = fps(load_space(tmp_path))
    live = sweep_parent(client, exp, "live")
    liveness.claim(client, "live", live, cells[:1])
    stale = sweep_parent(client, exp, "dead")  # killed: RUNNING for ever, no heartbeat since long ago
    old = time.time() - liveness.STALE_S - 5
    client.log_batch(stale, tags=liveness.claim_tags(cells[1:2], at=old))
    client.set_tag(stale, liveness.HEARTBEAT_TAG, f"{old:.3f}")
    ended = sweep_parent(client, exp, "ended")  # finished a moment ago (its last beat is fresh)
    liveness.claim(client, "ended", ended, cells[2:])
    client.set_terminated(ended, status="FINISHED")
    # a stale trial run of the dead sweep, RUNNING, with the same fingerprint: no claim, no block either
    client.create_run(exp, tags={"dfsearch.role": "trial", "dfsearch.sweep": "dead", fingerprint.TAG: cells[1]})

    claims = liveness.live_claims(client)
    assert set(claims) == {cells[0]} and claims[cells[0]][0].sweep == "live"
    assert set(liveness.owners(cells, claims)) == {cells[0]}


def test_a_later_sweep_leaves_the_shared_cells_to_the_live_one_and_claims_the_rest(store, tmp_path):
    from dfsearch.tune import shared_cells

    uri, client, exp = store
    spec = load_space(tmp_path)
    cells = fps(spec)
    other = sweep_parent(client, exp, "other")
    liveness.claim(client, "other", other, cells[1:2])
    mine = {}
    plan = shared_cells.claim_cells(spec, uri, lambda s: mine.setdefault("id", sweep_parent(client, exp, s.name)))
    assert {fp: c.sweep for fp, c in plan.left.items()} == {cells[1]: "other"} and plan.by_sweep() == {"other": 1}
    assert fps(plan.spec) == [cells[0], cells[2]] and plan.parent_run_id == mine["id"]
    assert liveness.claimed(client.get_run(mine["id"]).data.tags) == {cells[0], cells[2]}
    # a third sweep now finds every cell claimed: it runs nothing and makes no parent run
    third = shared_cells.claim_cells(load_space(tmp_path, "third"), uri, lambda s: pytest.fail("no parent run for nothing"))
    assert third.remaining == 0 and third.parent_run_id is None
    assert {c.sweep for c in third.left.values()} == {"other", "mine"}


def test_two_sweeps_that_claim_at_the_same_moment_agree_who_runs_the_shared_cells(store, tmp_path, monkeypatch):
    """Both read "nobody claims anything", both claim: the later claim gives the shared cells up (and releases them)."""
    from dfsearch.tune import shared_cells

    uri, client, exp = store
    spec = load_space(tmp_path)
    cells = fps(spec)
    first = sweep_parent(client, exp, "first")
    earlier = liveness.claim(client, "first", first, cells[:2])
    real = liveness.live_claims
    calls = []

    def racing(client_, **kw):  # the first read happened before "first" wrote its claim
        calls.append(kw)
        return {} if len(calls) == 1 else real(client_, **kw)

    monkeypatch.setattr(liveness, "live_claims", racing)
    plan = shared_cells.claim_cells(spec, uri, lambda s: sweep_parent(client, exp, s.name))
    assert len(calls) == 2 and set(plan.left) == set(cells[:2]) and fps(plan.spec) == cells[2:]
    assert liveness.claimed(client.get_run(plan.parent_run_id).data.tags) == {cells[2]}
    # ... while "first", reading after both wrote, keeps them: the later claim is not earlier than its own
    mine = liveness.Claim("first", first, earlier.claimed_at)
    assert liveness.owners(cells[:2], real(client, exclude_run_id=first), mine) == {}
    # --rerun claims everything and leaves nothing out
    again = shared_cells.claim_cells(load_space(tmp_path, "again"), uri, lambda s: sweep_parent(client, exp, s.name), rerun=True)
    assert again.left == {} and fps(again.spec) == cells


def test_the_heartbeat_keeps_a_sweep_live(store):
    uri, client, exp = store
    rid = sweep_parent(client, exp, "beating")
    liveness.claim(client, "beating", rid, ["abc"], at=time.time() - 1000)
    client.set_tag(rid, liveness.HEARTBEAT_TAG, "0")
    assert not liveness.is_live(client.get_run(rid))
    beat = liveness.Heartbeat(uri, rid, every_s=0.1).start()
    try:
        deadline = time.time() + 10
        while not liveness.is_live(client.get_run(rid)) and time.time() < deadline:
            time.sleep(0.1)
        assert liveness.is_live(client.get_run(rid))
    finally:
        beat.stop()
