"""Which cells another *live* sweep is running in the same MLflow store: claims and heartbeats.

Two sweeps of one store that share cells (Tables II, IV and V do) must not both train them.  Skipping what has
FINISHED is not enough when they run at the same time, so each sweep, before it hands its trials to Tune,
*claims* the fingerprints it is about to run, on its parent run in MLflow (the one place every sweep of a store
can read, whichever machine it runs on):

* ``dfsearch.cells_claimed.<i>``: the fingerprints, comma-separated, in chunks under MLflow's tag length limit;
* ``dfsearch.claimed_at``: when it claimed them (seconds since the epoch, the claiming driver's clock);
* ``dfsearch.heartbeat``: refreshed every :data:`HEARTBEAT_S` seconds by a thread of the sweep driver
  (:class:`Heartbeat`) for as long as the sweep runs.

A sweep is *live* while its parent run is RUNNING and its heartbeat is younger than :data:`STALE_S`.  A sweep
that was killed (SIGKILL, a lost head) leaves its parent RUNNING but stops beating, so after ``STALE_S`` its
claims block nothing.  When two live sweeps claim the same cell, the earlier claim (``claimed_at``, then the run
id) keeps it and the other leaves it out (:func:`owners`).  Claiming is write-then-read: each sweep writes its
claims, then reads everyone's, so of two sweeps that start together the later writer always sees the earlier
one (what it relies on: the drivers' clocks agree to better than the time between the two writes).

No Ray here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from mlflow.entities import RunTag, ViewType
from mlflow.tracking import MlflowClient

from dfsearch.tracking.names import CELLS_CLAIMED_TAG as CLAIMS_TAG
from dfsearch.tracking.names import CLAIMED_AT_TAG, HEARTBEAT_TAG, ROLE_TAG, SWEEP_ROLE, SWEEP_TAG

log = logging.getLogger(__name__)

CHUNK = 400  # fingerprints per tag: 400 x 17 characters, under MLflow's 8000-character tag values

# How often a live sweep says so, and how long a silence means it is dead.  Six missed beats: a tracking server
# that is away for a few minutes makes a live sweep look dead (and its cells may then run twice), never the reverse.
HEARTBEAT_S = float(os.environ.get("DFSEARCH_HEARTBEAT_S", "30"))
STALE_S = float(os.environ.get("DFSEARCH_STALE_S", str(6 * HEARTBEAT_S)))


@dataclass(frozen=True)
class Claim:
    sweep: str
    run_id: str  # the sweep's parent run
    claimed_at: float

    def order(self) -> tuple[float, str]:
        return (self.claimed_at, self.run_id)


def claim_tags(fingerprints: list[str], at: float, chunks: int = 1) -> list[RunTag]:
    """The tags of a claim made at ``at``; at least ``chunks`` chunk tags (empty ones clear an earlier, longer claim)."""
    fps = sorted(set(fingerprints))
    parts = [fps[i : i + CHUNK] for i in range(0, len(fps), CHUNK)]
    parts += [[]] * max(0, chunks - len(parts))
    tags = [RunTag(f"{CLAIMS_TAG}.{i}", ",".join(part)) for i, part in enumerate(parts)]
    return tags + [RunTag(CLAIMED_AT_TAG, f"{at:.3f}"), RunTag(HEARTBEAT_TAG, f"{time.time():.3f}")]


def claim(client: MlflowClient, sweep: str, parent_run_id: str, fingerprints: list[str], at: float | None = None) -> Claim:
    """Claim ``fingerprints`` for ``sweep`` (its parent run ``parent_run_id``), and beat once.  ``at``: keep the time of
    an earlier claim (a sweep that narrows its claim keeps its place)."""
    run = client.get_run(parent_run_id)
    before = sum(1 for k in run.data.tags if k.startswith(CLAIMS_TAG + "."))
    at = time.time() if at is None else at
    client.log_batch(parent_run_id, tags=claim_tags(fingerprints, at, before))
    return Claim(sweep, parent_run_id, float(f"{at:.3f}"))


def claimed(tags: dict[str, str]) -> set[str]:
    out: set[str] = set()
    for key, value in tags.items():
        if key.startswith(CLAIMS_TAG + ".") and value:
            out.update(value.split(","))
    return out


def is_live(run, now: float | None = None, stale_s: float | None = None) -> bool:
    """A sweep's parent run is live: RUNNING, and its heartbeat younger than ``stale_s``."""
    now = time.time() if now is None else now
    stale_s = STALE_S if stale_s is None else stale_s
    try:
        beat = float(run.data.tags.get(HEARTBEAT_TAG, ""))
    except ValueError:
        return False
    return run.info.status == "RUNNING" and now - beat < stale_s


def live_claims(client: MlflowClient, *, exclude_run_id: str | None = None, now: float | None = None) -> dict[str, list[Claim]]:
    """fingerprint -> the claims of every live sweep in the store on it (all experiments), earliest first."""
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=50000)]
    out: dict[str, list[Claim]] = {}
    for i in range(0, len(experiments), 100):
        runs = client.search_runs(experiments[i : i + 100], filter_string=f"tags.`{ROLE_TAG}` = '{SWEEP_ROLE}' and attributes.status = 'RUNNING'",
                                  max_results=10000)
        for run in runs:
            if run.info.run_id == exclude_run_id or not is_live(run, now):
                continue
            try:
                at = float(run.data.tags.get(CLAIMED_AT_TAG, ""))
            except ValueError:
                continue
            c = Claim(run.data.tags.get(SWEEP_TAG, "?"), run.info.run_id, at)
            for fp in claimed(run.data.tags):
                out.setdefault(fp, []).append(c)
    return {fp: sorted(cs, key=Claim.order) for fp, cs in out.items()}


def owners(fingerprints: list[str], others: dict[str, list[Claim]], mine: Claim | None = None) -> dict[str, Claim]:
    """The fingerprints among ``fingerprints`` that another live sweep keeps: fingerprint -> its claim.

    Before this sweep has claimed (``mine`` None) every live claim counts; after, only those earlier than its own."""
    out = {}
    for fp in fingerprints:
        earlier = [c for c in others.get(fp, []) if mine is None or c.order() < mine.order()]
        if earlier:
            out[fp] = earlier[0]
    return out


class Heartbeat:
    """A daemon thread that refreshes ``dfsearch.heartbeat`` on the sweep's parent run every ``every_s`` seconds."""

    def __init__(self, tracking_uri: str, parent_run_id: str, every_s: float | None = None):
        self.tracking_uri, self.run_id = tracking_uri, parent_run_id
        self.every_s = HEARTBEAT_S if every_s is None else every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dfsearch-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def _run(self) -> None:
        client = MlflowClient(self.tracking_uri)
        while not self._stop.is_set():
            try:
                client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
            except Exception as exc:  # a store away for a moment: the next beat tries again
                log.info("heartbeat of run %s not written: %s", self.run_id, exc)
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
