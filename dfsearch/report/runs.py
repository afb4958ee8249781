"""The trial runs of an MLflow store as :class:`RunRecord` s: one per trial, newest on duplicates, each with its
canonical config (re-parsed from its params by the typed config, so ``single:DF`` and ``single:Deepfakes`` agree).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from dfsearch import fingerprint
from dfsearch.errors import DfsearchError
from dfsearch.tracking import names as N
from dfsearch.tracking import store

log = logging.getLogger(__name__)


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
    videos: int | None = None  # N, the test videos the paper metric was computed on (test/videos)
    tcr_real: float | None = None  # test/tcr_real, test/tcr_fake: TCR on each class
    tcr_fake: float | None = None
    videos_fake: int | None = None  # of N, the fake ones (test/videos_fake; not logged by older runs)
    test_complete: bool | None = None  # tag dfsearch.test_complete (None: not tagged, an older run)
    test_videos: str = ""  # tag dfsearch.test_videos: "tested/expected"
    cross: dict[str, float] = field(default_factory=dict)  # test/<set>/* of data.test_sets (report.cross), never selection
    unlogged: tuple[str, ...] = ()  # keys of `config` the run did not log (settings added since): as config.as_logged fills them

    @property
    def tested(self) -> bool:
        return self.status == "FINISHED" and self.outcome == N.TESTED and self.value is not None  # names.is_tested, plus a value

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
        outcome=tags.get(N.OUTCOME_TAG, ""),
        start_ms=run.info.start_time or 0,
        end_ms=run.info.end_time,
        sweep=tags.get(N.SWEEP_TAG, ""),
        trial_id=tags.get(N.TRIAL_TAG, run.info.run_id),
        config=cfg,
        unlogged=tuple(sorted(k for k in cfg if k not in params)),
        fingerprint=fingerprint.of_run(tags, params),
        seed_group=fingerprint.of_run(tags, params, seed=False),
        synthetic=tags.get(N.SYNTHETIC_TAG) == "true" or cfg.get("data.root") == "synthetic",
        smoke=tags.get(N.SMOKE_TAG) == "true",
        value=run.data.metrics.get(metric),
        gpus=_float(tags.get(N.GPUS_PER_TRIAL_TAG)),
        cpus=_float(tags.get(N.CPUS_PER_TRIAL_TAG)),
        videos=_count(run.data.metrics.get("test/videos")),
        tcr_real=run.data.metrics.get("test/tcr_real"),
        tcr_fake=run.data.metrics.get("test/tcr_fake"),
        videos_fake=_count(run.data.metrics.get("test/videos_fake")),
        test_complete={"true": True, "false": False}.get(tags.get(N.TEST_COMPLETE_TAG, "")),
        test_videos=tags.get(N.TEST_VIDEOS_TAG, ""),
        cross=cross_metrics(run.data.metrics),
    )


def cross_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The ``test/<set>/<metric>`` metrics of the test-only sets (``data.test_sets``)."""
    from dfsearch.config import TEST_SETS

    return {k: v for k, v in metrics.items() if k.count("/") == 2 and k.split("/")[1] in TEST_SETS}


def _count(value: float | None) -> int | None:
    return None if value is None or value != value else int(round(value))


def read_runs(tracking_uri: str, experiments: list[str] | None = None, metric: str = "test/tcr") -> RunSet:
    """Every trial run in the store (or in the named experiments), one per trial, newest on duplicates."""
    client = store.open_store(tracking_uri)
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
        for run in store.all_runs(client, exp_id):
            if run.data.tags.get(N.ROLE_TAG) == N.SWEEP_ROLE or not run.data.params:
                continue  # a sweep's parent run, or a run that is not a trial
            try:
                records.append(to_record(run, name, metric))
            except DfsearchError as exc:
                unreadable += 1
                log.info("run %s: params are not a trial config (%s)", run.info.run_id, exc)
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
