"""Search-space YAML -> a validated :class:`SweepSpec` (format: ``search_spaces/README.md``).

This module knows the YAML format and nothing about Ray: distributions stay plain :class:`Dist` values here,
and ``dfsearch.tune.tuner`` turns them into Tune objects.  That keeps ``--dry-run`` free of a Ray start and
lets every check run before any trial exists.
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dfsearch import config
from dfsearch.errors import ConfigError

DIST_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
TOP_LEVEL = ("name", "description", "paper", "tags", "search", "resources", "cases")
CASE_KEY = "case"  # the Tune parameter that indexes `cases:` (resolved away before a trial config is built)
ALGORITHMS = ("grid", "random", "optuna")
SCHEDULERS = ("none", "asha")


@dataclass(frozen=True)
class Dist:
    """One searched leaf: ``grid``/``choice`` hold values, ``uniform``/``loguniform``/``randint`` bounds."""

    kind: str
    values: tuple

    def describe(self) -> str:
        if self.kind in ("grid", "choice"):
            return f"{self.kind}({', '.join(map(str, self.values))})"
        return f"{self.kind}({self.values[0]}, {self.values[1]})"

    def probe_values(self) -> list:
        """Values that exercise validation: every listed value, or both ends of a range."""
        if self.kind in ("grid", "choice"):
            return list(self.values)
        low, high = self.values
        return [low, high - 1] if self.kind == "randint" else [low, high]


@dataclass
class SearchSpec:
    algorithm: str = "grid"  # grid = every combination; random = sample; optuna = TPE (Optuna)
    scheduler: str = "none"  # none | asha (early stopping on `epoch`)
    metric: str = "val/tcr"  # the validation metric Tune optimises; it also picks each trial's tested epoch
    mode: str = ""  # max | min; "" = the metric's own (val/loss: min, else max)
    num_samples: int = 1  # grid: repeats of the whole grid, each with its own seed; random/optuna: samples
    max_concurrent: int = 0  # 0 = as many as fit the cluster
    grace_period: int = 1  # ASHA: epochs before a trial may be stopped
    reduction_factor: int = 2  # ASHA


@dataclass
class ResourceSpec:
    workers: int = 1  # Ray Train workers (DDP ranks) per trial
    gpus_per_worker: float = 0.0  # fractional allowed (e.g. 0.5 packs two workers on a GPU)
    cpus_per_worker: float = 1.0

    def per_trial(self) -> dict[str, float]:
        return {"CPU": self.workers * self.cpus_per_worker, "GPU": self.workers * self.gpus_per_worker}


@dataclass
class SweepSpec:
    name: str
    source: str  # the YAML file, for messages and tags
    fixed: dict[str, Any]  # dotted key -> value (defaults not included)
    searched: dict[str, Dist]  # dotted key -> distribution
    cases: list[dict[str, Any]] = field(default_factory=list)  # `cases:` entries (flat), crossed with the grid
    search: SearchSpec = field(default_factory=SearchSpec)
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    paper_table: str = ""
    paper_cell: str = ""  # a template over dotted keys, e.g. "{model.placement} / {protocol.name}"

    # Values in `fixed`, `searched` (grid / choice) and `cases` are canonical (config.canonical): protocol names
    # spelled out ("single:Deepfakes"), placements as "1,2,4"; `fixed` always holds eval.select_metric =
    # search.metric, so the epoch a trial tests is the one its search metric ranks best.

    def grid_points(self) -> list[dict[str, Any]]:
        """The cartesian product of grid leaves (one empty dict when there are none)."""
        grid = {k: d.values for k, d in self.searched.items() if d.kind == "grid"}
        points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
        return [{**case, **point} for case in (self.cases or [{}]) for point in points]

    def resolve(self, trial_config: dict[str, Any]) -> dict[str, Any]:
        """A Tune trial's config -> the flat dotted config (the case index replaced by its values)."""
        flat = dict(trial_config)
        if CASE_KEY in flat:
            flat.update(self.cases[flat.pop(CASE_KEY)])
        return flat

    def varied_keys(self) -> list[str]:
        """Keys that differ between trials: those in `cases:` and the searched ones."""
        keys = [k for case in self.cases for k in case]
        return list(dict.fromkeys(keys + list(self.searched)))

    def tune_num_samples(self) -> int:
        """Tune's num_samples: a repeated grid is already expanded into one seed per repeat."""
        return 1 if self.search.algorithm == "grid" else self.search.num_samples

    def trial_count(self) -> int:
        return len(self.grid_points()) * self.tune_num_samples()

    def cell_for(self, flat: dict[str, Any]) -> str:
        """The paper cell of a trial (its resolved flat config): the template with the trial's values.  A key
        that does not apply to the trial (no placement without attention, no depth for TimeSformer) is left
        out, e.g. "{model.name} {model.attention} {model.placement}" -> "resnet3d none" or "timesformer"."""
        if not self.paper_cell:
            return ""
        values = config.to_flat(config.from_flat({**self.fixed, **self.resolve(flat)}))
        text = re.sub(r"\{([^{}]+)\}", lambda m: str(values.get(m.group(1), "")), self.paper_cell)
        return " ".join(text.split()).strip(" /")


# ------------------------------------------------------------------------------------------------ loading


def _interpolate(text: str, source: str) -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}`` with the environment's values."""

    def sub(match: re.Match) -> str:
        name, _, default = match.group(1).partition(":-")
        if name in os.environ:
            return os.environ[name]
        if ":-" in match.group(1):
            return default
        raise ConfigError(f"{source}: environment variable ${{{name}}} is not set (use ${{{name}:-default}} for a default)")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?)\}", sub, text)


def _as_dist(key: str, node: dict, source: str) -> Dist:
    (kind, arg), = node.items()
    where = f"{source}: {key}: {kind}"
    if kind in ("grid", "choice"):
        if not isinstance(arg, list) or not arg:
            raise ConfigError(f"{where} needs a non-empty list of values, got {arg!r}")
        return Dist(kind, tuple(arg))
    if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in arg)):
        raise ConfigError(f"{where} needs [low, high], got {arg!r}")
    low, high = arg
    if not low < high:
        raise ConfigError(f"{where} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where} needs low > 0, got {low}")
    if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"{where} needs integer bounds (high exclusive), got [{low}, {high}]")
    return Dist(kind, (low, high))


def _canonical(key: str, value: Any, source: str) -> Any:
    try:
        return config.canonical(key, value)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _canonical_dist(key: str, dist: Dist, source: str) -> Dist:
    if dist.kind not in ("grid", "choice"):
        return dist
    return Dist(dist.kind, tuple(_canonical(key, v, source) for v in dist.values))


def _is_dist(node: Any) -> bool:
    return isinstance(node, dict) and len(node) == 1 and next(iter(node)) in DIST_KINDS


def _flatten(node: dict, prefix: str, out: dict[str, Any]) -> None:
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and not _is_dist(value):
            if dotted in config.valid_keys():
                raise ConfigError(f"{dotted}: a mapping is not a value; distributions are one of {', '.join(DIST_KINDS)} (e.g. {{grid: [a, b]}})")
            _flatten(value, dotted, out)
        else:
            if dotted in out:
                raise ConfigError(f"{dotted} is set twice")
            out[dotted] = value


def _section(raw: Any, cls, name: str, source: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{name}:' must be a mapping, got {raw!r}")
    known = cls.__dataclass_fields__
    for key in raw:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"{source}: unknown key '{name}.{key}'" + (f"; did you mean '{name}.{hint[0]}'?" if hint else f"; valid: {', '.join(known)}"))
    try:
        spec = cls(**raw)
    except TypeError as exc:
        raise ConfigError(f"{source}: '{name}:' {exc}") from None
    return spec


def _parse_cases(raw: Any, taken: set[str], source: str) -> list[dict[str, Any]]:
    """`cases:` is a list of partial configs, one trial each (crossed with any grid): the way to say
    "no attention; SE; non-local at 1,2,4" without a grid's meaningless combinations."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw or not all(isinstance(c, dict) and c for c in raw):
        raise ConfigError(f"{source}: 'cases:' must be a non-empty list of mappings, e.g. - {{model.attention: se}}")
    cases = []
    for i, case in enumerate(raw, 1):
        flat: dict[str, Any] = {}
        _flatten(case, "", flat)
        for key, value in flat.items():
            where = f"{source}: cases[{i}] {key}"
            if key.split(".", 1)[0] not in config.SECTIONS:
                raise ConfigError(f"{where}: unknown key '{key}'")
            try:
                config.check_key(key)
            except ConfigError as exc:
                raise ConfigError(f"{source}: cases[{i}]: {exc}") from None
            if _is_dist(value):
                raise ConfigError(f"{where}: cases hold fixed values; put distributions outside 'cases:'")
            if key in taken:
                raise ConfigError(f"{where} is also set outside 'cases:'; set it in one place")
            flat[key] = _canonical(key, value, f"{source}: cases[{i}]")
        cases.append(flat)
    return cases


def _check_search(s: SearchSpec, searched: dict[str, Dist], cases: list, source: str) -> None:
    if s.algorithm not in ALGORITHMS:
        raise ConfigError(f"{source}: search.algorithm {s.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    if s.scheduler not in SCHEDULERS:
        raise ConfigError(f"{source}: search.scheduler {s.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    if s.metric not in config.VAL_METRICS:
        raise ConfigError(f"{source}: search.metric {s.metric!r} is not one of {', '.join(config.VAL_METRICS)} (test metrics never drive the search)")
    better = config.VAL_METRICS[s.metric]
    if s.mode == "":
        s.mode = better
    elif s.mode not in ("max", "min"):
        raise ConfigError(f"{source}: search.mode {s.mode!r} is not 'max' or 'min'")
    elif s.mode != better:
        raise ConfigError(f"{source}: search.mode {s.mode} contradicts search.metric {s.metric} ({'higher' if better == 'max' else 'lower'} is better); leave search.mode out")
    for key in ("num_samples", "grace_period", "reduction_factor"):
        if not isinstance(getattr(s, key), int) or getattr(s, key) < 1:
            raise ConfigError(f"{source}: search.{key} must be a positive integer, got {getattr(s, key)!r}")
    if not isinstance(s.max_concurrent, int) or s.max_concurrent < 0:
        raise ConfigError(f"{source}: search.max_concurrent must be 0 (no limit) or a positive integer, got {s.max_concurrent!r}")
    kinds = {d.kind for d in searched.values()}
    if s.algorithm == "grid" and kinds - {"grid"}:
        bad = next(k for k, d in searched.items() if d.kind != "grid")
        raise ConfigError(f"{source}: {bad} uses '{searched[bad].kind}', which needs search.algorithm random or optuna (algorithm grid takes grid leaves only)")
    if s.algorithm == "optuna" and ("grid" in kinds or cases):
        bad = next((k for k, d in searched.items() if d.kind == "grid"), "cases:")
        raise ConfigError(f"{source}: {bad} is a grid, which Optuna cannot search; use 'choice' with search.algorithm optuna")


def _check_resources(r: ResourceSpec, source: str) -> None:
    if not isinstance(r.workers, int) or r.workers < 1:
        raise ConfigError(f"{source}: resources.workers must be a positive integer, got {r.workers!r}")
    for key in ("gpus_per_worker", "cpus_per_worker"):
        value = getattr(r, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{source}: resources.{key} must be a non-negative number, got {value!r}")
    if r.gpus_per_worker > 1 and not float(r.gpus_per_worker).is_integer():
        raise ConfigError(f"{source}: resources.gpus_per_worker above 1 must be whole, got {r.gpus_per_worker}")


def parse(raw: Any, source: str = "<space>", name: str | None = None) -> SweepSpec:
    """Validate a loaded YAML document and return the sweep it describes."""
    if raw is None or raw == {}:
        raise ConfigError(f"{source}: the search space is empty; give at least one setting (see search_spaces/README.md), "
                          "e.g. 'model.attention: {grid: [none, se]}'")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    flat: dict[str, Any] = {}
    meta = {k: raw[k] for k in TOP_LEVEL if k in raw}
    params = {k: v for k, v in raw.items() if k not in TOP_LEVEL}
    for key in params:
        head = str(key).split(".", 1)[0]
        if head not in config.SECTIONS:
            hint = difflib.get_close_matches(str(key), list(TOP_LEVEL) + list(config.SECTIONS) + config.valid_keys(), n=1)
            raise ConfigError(f"{source}: unknown key '{key}'" + (f"; did you mean '{hint[0]}'?" if hint else ""))
    _flatten(params, "", flat)
    for key in flat:
        try:
            config.check_key(key)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    searched = {k: _canonical_dist(k, _as_dist(k, v, source), source) for k, v in flat.items() if _is_dist(v)}
    fixed = {k: _canonical(k, v, source) for k, v in flat.items() if k not in searched}
    cases = _parse_cases(meta.get("cases"), set(flat), source)
    search = _section(meta.get("search"), SearchSpec, "search", source)
    resources = _section(meta.get("resources"), ResourceSpec, "resources", source)
    _check_search(search, searched, cases, source)
    _check_resources(resources, source)
    if "eval.select_metric" in flat or any("eval.select_metric" in c for c in cases):
        raise ConfigError(f"{source}: eval.select_metric is set by search.metric (the metric that ranks trials also picks the epoch each trial tests); set search.metric instead")
    fixed["eval.select_metric"] = search.metric

    # Seeds: a repeated grid gets one seed per repeat, visible in the trial table.
    if search.algorithm == "grid" and search.num_samples > 1:
        if "train.seed" in searched:
            raise ConfigError(f"{source}: search.num_samples > 1 repeats the grid with seeds train.seed + i; drop the train.seed grid or set num_samples: 1")
        base = int(fixed.pop("train.seed", config.TrainConfig.seed))
        searched["train.seed"] = Dist("grid", tuple(base + i for i in range(search.num_samples)))

    paper = meta.get("paper") or {}
    if not isinstance(paper, dict) or set(paper) - {"table", "cell"}:
        raise ConfigError(f"{source}: 'paper:' takes 'table' and 'cell', got {paper!r}")
    tags = meta.get("tags") or {}
    if not isinstance(tags, dict):
        raise ConfigError(f"{source}: 'tags:' must be a mapping of tag names to values")
    spec = SweepSpec(
        name=str(meta.get("name") or name or "sweep"),
        source=source,
        fixed=fixed,
        searched=searched,
        cases=cases,
        search=search,
        resources=resources,
        description=str(meta.get("description") or ""),
        tags={str(k): str(v) for k, v in tags.items()},
        paper_table=str(paper.get("table", "")),
        paper_cell=str(paper.get("cell", "")),
    )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", spec.name):
        raise ConfigError(f"{source}: name {spec.name!r} must be letters, digits, '_', '-' or '.' (it names the sweep's folder)")
    check_trials(spec)
    return spec


def check_trials(spec: SweepSpec) -> None:
    """Validate every grid point, and every searched value's extremes, as a full trial config."""
    others = {k: d for k, d in spec.searched.items() if d.kind != "grid"}
    for point in spec.grid_points():
        probes = [{}] + [{k: v} for k, d in others.items() for v in d.probe_values()]
        for probe in probes:
            flat = {**spec.fixed, **point, **{k: d.probe_values()[0] for k, d in others.items()}, **probe}
            try:
                config.from_flat(flat)
            except ConfigError as exc:
                varied = ", ".join(f"{k}={v}" for k, v in {**point, **probe}.items())
                raise ConfigError(f"{spec.source}: {exc}" + (f" (in the trial with {varied})" if varied else "")) from None


def load(path: str | os.PathLike) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: search-space file not found")
    text = _interpolate(path.read_text(), str(path))
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    return parse(raw, str(path), name=path.stem)


# ------------------------------------------------------------------------------------- expansion for display


def expand(spec: SweepSpec, seed: int = 0) -> list[dict[str, Any]]:
    """The trials a sweep will run, as flat dicts of the *varied* keys (grid exactly; samples drawn here
    for display only — the real draws happen in Tune / Optuna)."""
    rng = random.Random(seed)
    rows = []
    repeats = spec.tune_num_samples()
    for point in spec.grid_points():
        for _ in range(repeats):
            row = dict(point)
            for key, dist in spec.searched.items():
                if dist.kind == "grid":
                    continue
                if spec.search.algorithm == "optuna":
                    row[key] = dist.describe()
                elif dist.kind == "choice":
                    row[key] = rng.choice(dist.values)
                elif dist.kind == "randint":
                    row[key] = rng.randrange(*dist.values)
                elif dist.kind == "uniform":
                    row[key] = round(rng.uniform(*dist.values), 6)
                else:
                    low, high = (math.log(v) for v in dist.values)
                    row[key] = float(f"{math.exp(rng.uniform(low, high)):.3g}")
            rows.append(row)
    return rows


def trial_config(spec: SweepSpec, varied: dict[str, Any]) -> config.TrialConfig:
    return config.from_flat({**spec.fixed, **varied})
