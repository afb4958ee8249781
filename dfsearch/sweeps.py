"""What ``run`` does to a search space before Tune sees it (no Ray here):

* ``--set KEY=VALUE`` overrides a fixed key (or ``search.*`` / ``resources.*``), validated like the YAML;
* ``--smoke`` turns every trial into its CPU-sized twin on synthetic data (same grid, cells and tags);
* trials whose fingerprint already has a FINISHED, tested run in the tracking store are left out.

The last two need the sweep as an explicit list of trials: :func:`explicit` rewrites a grid space so that
every trial is one entry of ``cases`` (the same trials, in the same order), which Tune then runs as one grid
over the case index.  Leaving a trial out is then leaving out its case; nothing else about Tune changes, and
``--resume`` rebuilds the same list from what ``sweep.json`` recorded.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any


from dfsearch import config, fingerprint, overhead, space
from dfsearch import estimate as estimate_
from dfsearch.errors import ConfigError
from dfsearch.space import SweepSpec
from dfsearch.tracking import names as N

log = logging.getLogger(__name__)

# --smoke: each trial's CPU-sized twin on the synthetic stand-in, one CPU per trial, with a budget per family that
# learns the stand-in's planted answer (dfsearch/data/synthetic.py) in about a minute of one core: narrow models, small
# clips, Adam (the spaces' SGD at lr 1e-3 learns nothing in a few epochs), a cosine schedule over few epochs.
# A pretrained row stays pretrained: its weights come from a short pretext training on synthetic videos of other
# identities, in the family's published format (dfsearch/data/pretext.py), so Table V's ablation survives.
SMOKE_COMMON = {"data.root": "synthetic", "data.num_workers": 0, "train.amp": False, "optim.name": "adam",
                "optim.schedule": "cosine", "optim.warmup_epochs": 0, "eval.batch_size": 8}
# Each family's budget is its DetectorSpec.smoke (in its family file); a family without one gets the registry's
# SMOKE_FRAME, the per-frame budget of the MesoNets.  Families whose pretrained rows get pretext weights have a
# DetectorSpec.pretext (the frame models' ImageNet rows are no ablation: from scratch).
SMOKE_RESOURCES = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}


# ------------------------------------------------------------------------------------------------- --set


def apply_sets(spec: SweepSpec, items: list[str]) -> SweepSpec:
    """``--set KEY=VALUE`` (repeatable): a fixed trial key, or ``search.<field>`` / ``resources.<field>``.
    A searched key, or one the space sets per case, is an error (the override would change the grid)."""
    spec = dataclasses.replace(spec, fixed=dict(spec.fixed), search=dataclasses.replace(spec.search),
                               resources=dataclasses.replace(spec.resources))
    for item in items or []:
        key, value = config.parse_set(item)
        where = f"--set {key}"
        head, _, field = key.partition(".")
        if head in ("search", "resources"):
            target = spec.search if head == "search" else spec.resources
            if field not in {f.name for f in dataclasses.fields(target)}:
                raise ConfigError(f"{where}: unknown key; {head}.* keys are {', '.join(f.name for f in dataclasses.fields(target))}")
            setattr(target, field, value)
            continue
        try:
            config.check_key(key)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if key == "eval.select_metric":
            raise ConfigError(f"{where}: the tested epoch is picked by search.metric; use --set search.metric=...")
        if key in spec.searched:
            raise ConfigError(f"{where}: {spec.source} searches {key} ({spec.searched[key].describe()}); --set overrides fixed keys only")
        try:
            value = config.canonical(key, value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if any(key in case for case in spec.cases):
            if not (is_smoke(spec) and key in smoke_keys()):
                raise ConfigError(f"{where}: {spec.source} varies {key} between trials; --set overrides fixed keys only")
            # a smoke budget (set per family): --set changes it in every trial that has it
            spec.cases = [{**case, key: value} if key in case else case for case in spec.cases]
            if key in spec.fixed:
                spec.fixed[key] = value
            continue
        spec.fixed[key] = value
    if any(config.parse_set(i)[0] == "search.num_samples" for i in items or []) and spec.search.algorithm == "grid":
        # a repeated grid is one seed per repeat (as space.parse does it): train.seed = base + i
        spec.searched = dict(spec.searched)
        seeds = spec.searched.pop("train.seed", None)
        base = int(seeds.values[0]) if seeds else int(spec.fixed.pop("train.seed", config.TrainConfig.seed))
        n = spec.search.num_samples if isinstance(spec.search.num_samples, int) else 1
        if n > 1:
            spec.searched["train.seed"] = space.Dist("grid", tuple(base + i for i in range(n)))
        else:
            spec.fixed["train.seed"] = base
    if items:
        try:
            space._check_search(spec.search, spec.searched, spec.cases, "--set")
            space._check_resources(spec.resources, "--set")
            spec.fixed["eval.select_metric"] = spec.search.metric
            space.check_trials(spec)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (after --set {' '.join(items)})") from None
    return spec


# -------------------------------------------------------------------------------------- explicit trials


def trials(spec: SweepSpec) -> list[dict[str, Any]]:
    """A grid space's trials as flat configs (fixed + case + grid point), in Tune's order."""
    return [{**spec.fixed, **point} for point in spec.grid_points()]


def explicit(spec: SweepSpec, flats: list[dict[str, Any]]) -> SweepSpec:
    """A spec whose trials are exactly ``flats``: the keys all of them share are fixed, the rest are cases."""
    if not flats:
        return dataclasses.replace(spec, fixed={}, searched={}, cases=[])
    keys = dict.fromkeys(k for f in flats for k in f)
    fixed = {k: flats[0][k] for k in keys if all(k in f and f[k] == flats[0][k] for f in flats)}
    cases = [{k: v for k, v in f.items() if k not in fixed} for f in flats]
    searched = {k: d for k, d in spec.searched.items() if d.kind != "grid"}
    return dataclasses.replace(spec, fixed=fixed, searched=searched, cases=cases if any(cases) else [])


def is_smoke(spec: SweepSpec) -> bool:
    return spec.tags.get(N.SMOKE_TAG) == "true"


def smoke_keys() -> set[str]:
    """The keys --smoke sets (its budgets): ``--set`` may override them although they differ between families."""
    from dfsearch.models import registry

    budgets = (SMOKE_COMMON, registry.SMOKE_FRAME, *(s.smoke or {} for s in registry.specs()), *(s.smoke_all or {} for s in registry.specs()))
    return {k for d in budgets for k in d} | {"model.pretrained"}


def smoke_flat(flat: dict[str, Any]) -> dict[str, Any]:
    from dfsearch.models import registry

    spec = registry.get(flat.get("model.name") or config.default_detector())
    protocol = config.canonical_protocol(flat.get("protocol.name", config.ProtocolConfig.name))
    out = {**flat, **SMOKE_COMMON, **registry.smoke_budget(spec, protocol)}
    out["model.pretrained"] = smoke_pretrained(spec.name, flat.get("model.pretrained", config.ModelConfig.pretrained))
    return {k: config.canonical(k, v) for k, v in out.items()}


def smoke_pretrained(family: str, pretrained: str) -> str:
    """What ``--smoke`` trains a family's ``model.pretrained`` with: the pretext weights where the family has a
    pretext recipe and the cell is pretrained, else none (no download, no user file)."""
    from dfsearch.data.pretext import PRETEXT  # the value only (the module loads torch when it builds a file)

    from dfsearch.models import registry

    return PRETEXT if registry.get(family).pretext is not None and pretrained not in ("", "none") else "none"


def smoke(spec: SweepSpec) -> SweepSpec:
    """The same grid, cells and tags at CPU size on synthetic data (name: NAME-smoke)."""
    resources = dataclasses.replace(spec.resources, **SMOKE_RESOURCES)
    search = dataclasses.replace(spec.search, max_concurrent=spec.search.max_concurrent or 2)
    if spec.search.algorithm == "grid":
        out = explicit(spec, [smoke_flat(f) for f in trials(spec)])
    else:
        if "model.name" in spec.searched:
            raise ConfigError(f"{spec.source}: --smoke needs model.name fixed when search.algorithm is {spec.search.algorithm}")
        out = dataclasses.replace(spec, fixed=smoke_flat(spec.fixed))
    out = dataclasses.replace(out, name=f"{spec.name}-smoke", resources=resources, search=search,
                              tags={**spec.tags, N.SMOKE_TAG: "true"})
    space.check_trials(out)
    return out


# ---------------------------------------------------------------------------------- skipping finished work


@dataclasses.dataclass
class Plan:
    spec: SweepSpec  # what Tune runs
    total: int  # trials in the space
    remaining: int  # trials Tune will run
    skipped: list[str]  # fingerprints left out because they finished already
    duplicates: int  # trials identical to another trial of the same sweep (e.g. smoke collapses pretrained on/off)
    saved_gpu_hours: float


def plan(spec: SweepSpec, done: dict[str, str] | set[str], rerun: bool = False) -> Plan:
    """Leave out the trials whose fingerprint is in ``done`` (unless ``rerun``) and duplicates of earlier trials.

    Only grid spaces can be planned this way (a sampled trial's config exists only once Tune draws it)."""
    if spec.search.algorithm != "grid":
        return Plan(spec, spec.trial_count(), spec.trial_count(), [], 0, 0.0)
    keep, skipped, seen, duplicates, saved = [], [], set(), 0, 0.0
    for flat in trials(spec):
        fp = fingerprint.fingerprint(flat)
        if fp in seen:
            duplicates += 1
        elif fp in done and not rerun:
            skipped.append(fp)
            full = fingerprint.canonical(flat)
            saved += 0.0 if full["data.root"] == "synthetic" else estimate_.gpu_hours(full)
        else:
            keep.append(flat)
        seen.add(fp)
    total = len(seen) + duplicates
    if not skipped and not duplicates:
        return Plan(spec, total, total, [], 0, 0.0)
    return Plan(explicit(spec, keep), total, len(keep), skipped, duplicates, saved)


def replan(spec: SweepSpec, skipped: list[str]) -> SweepSpec:
    """The spec a resumed sweep was started with: the recorded skips, not today's store."""
    return plan(spec, set(skipped)).spec


def estimate(spec: SweepSpec, overhead_source: str | None = None) -> estimate_.SweepEstimate | None:
    """The sweep's estimate (:func:`dfsearch.estimate.sweep`) on the machine ``overhead_source`` names (default: the
    shipped one for the space's device); None for a sampled space (its trials exist once Tune draws them)."""
    if spec.search.algorithm != "grid":
        return None
    machine = overhead.load(overhead_source, "cuda" if spec.resources.gpus_per_worker else "cpu")
    return estimate_.sweep([fingerprint.canonical(f) for f in trials(spec)], machine)
