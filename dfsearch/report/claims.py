"""The paper's conclusions as claims over table cells, each checked against its uncertainty.

A claim (``dfsearch/experiments/claims.yaml``; the synthetic twins' planted answers: ``planted.yaml``) quotes
the paper's sentence and says what it means over cells: *row R is the best of every column*, *row A > row B in
columns ...*, *column NT is the lowest of these rows*, *every cross-manipulation cell < the same model's
single-manipulation cell*.  Each kind expands to a list of comparisons "cell x > cell y" (or "cell x is at /
above chance"); the claim's verdict is

* **fails** when one comparison is decided the other way (a counterexample is enough);
* **not enough cells** when a cell it needs has no value (not run, running, failed, quoted, other data);
* **undecided** when some comparison is within its uncertainty;
* **holds** when every comparison is decided its way.

**The uncertainty rule.**  A cell's value is a TCR, the share of N test videos classified right: a binomial
proportion.  Its interval is the 95 % Wilson score interval on N (the run's logged ``test/videos``); where
the cell has n >= 2 seeds, each side of it is widened by the seeds' 95 % Student-t half-width, added in
quadrature (test-set sampling and training seed are independent errors).  Two cells are compared by whether
their intervals *separate*: x > y is decided when x's lower end is above y's upper end, x < y when x's upper
end is below y's lower end; overlapping intervals leave it undecided.  Separation of two 95 % intervals is a
conservative test (stricter than a z-test on the difference): a claim that holds holds clearly.  A cell whose
N is unknown (a run that logged no ``test/videos``) cannot be compared: its claims have not enough cells.

A claim may compare the **balanced TCR** instead (``metric: balanced_tcr``): the mean of the real and the fake
videos' TCR, with its own interval (:func:`balanced_interval`).  On ``all`` (4 fakes a real) a detector that
calls every video fake scores TCR 80 but balanced TCR 50; the paper reports TCR only, so such a claim is checked
on our cells alone.

The paper's own numbers are checked the same way with no uncertainty (exact values): that is how
``paper_agrees: false`` in claims.yaml is verified (tests/test_claims.py).

Pure Python + scipy: no MLflow, Ray or torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from dfsearch.errors import ConfigError
from dfsearch.report.stats import Z95, wilson

HOLDS, FAILS, UNDECIDED, MISSING = "holds", "fails", "undecided", "not enough cells"
VERDICTS = (HOLDS, FAILS, UNDECIDED, MISSING)

# kind -> (required fields, optional fields)
KINDS = {
    "greater": (("a", "b"), ("columns",)),
    "not_below": (("a", "b"), ("columns",)),
    "best_row": (("row",), ("columns", "against")),
    "lowest_row": (("row",), ("columns", "against")),
    "best_column": (("column",), ("rows", "against")),
    "lowest_column": (("column",), ("rows", "against")),
    "cross_below_single": ((), ("columns", "rows")),
    "at_chance": (("rows", "columns"), ("chance",)),
    "above_chance": (("rows", "columns"), ("chance",)),
}
COMMON = ("id", "table", "quote", "kind", "paper_agrees", "note", "verified", "margins", "metric")
# What a claim compares: the paper's TCR (default), or the balanced TCR, the mean of the real and the fake videos'
# TCR, which a detector that calls every video fake cannot raise above 50 on `all` (4 fakes a real: TCR 80).
METRICS = {"tcr": "TCR", "balanced_tcr": "balanced TCR (mean of real and fake TCR)"}


# ------------------------------------------------------------------------------------------------ claims


@dataclass
class Claim:
    id: str
    table: str
    quote: str
    kind: str
    args: dict[str, Any]  # the kind's own fields (a, b, row, rows, columns, against, chance)
    paper_agrees: bool = True  # False: the paper's own table contradicts the sentence
    note: str = ""
    source: str = "paper"  # paper | planted
    verified: bool | None = None  # planted claims: shown to hold on >= 2 seeds by a real sweep
    metric: str = "tcr"  # a key of METRICS

    @property
    def expected(self) -> bool:
        """Should it hold?  Paper claims the paper's table agrees with, and every planted claim."""
        return self.paper_agrees


@dataclass
class ClaimSet:
    claims: list[Claim] = field(default_factory=list)
    no_answer: dict[str, str] = field(default_factory=dict)  # table -> why its twin has no planted answer

    def for_table(self, key: str) -> list[Claim]:
        return [c for c in self.claims if c.table == key]


def _labels(value: Any, where: str, known: list[str], what: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str) or item not in known:
            raise ConfigError(f"{where}: {what} {item!r} is not one of the table's {what}s: {', '.join(known)}")
    return list(items)


def _parse_claim(raw: Any, where: str, paper: dict, source: str) -> Claim:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a claim is a mapping with id, table, quote, kind and the kind's fields")
    for key in ("id", "table", "quote", "kind"):
        if not str(raw.get(key) or "").strip():
            raise ConfigError(f"{where}: missing '{key}'")
    where = f"{where} ({raw['id']})"
    table, kind = str(raw["table"]), str(raw["kind"])
    if table not in paper:
        raise ConfigError(f"{where}: table {table!r} is not one of {', '.join(paper)}")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    required, optional = KINDS[kind]
    unknown = set(raw) - set(COMMON) - set(required) - set(optional)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for kind {kind} (it takes {', '.join(required + optional)})")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ConfigError(f"{where}: kind {kind} needs {', '.join(missing)}")
    pt = paper[table]
    args: dict[str, Any] = {}
    for key in ("a", "b", "row", "rows"):
        if key in raw:
            args[key] = _labels(raw[key], f"{where}: {key}", pt.rows, "row")
    for key in ("column", "columns"):
        if key in raw:
            args[key] = _labels(raw[key], f"{where}: {key}", pt.columns, "column")
    if "against" in raw:
        axis = (pt.rows, "row") if kind.endswith("_row") else (pt.columns, "column")
        args["against"] = _labels(raw["against"], f"{where}: against", *axis)
    if "chance" in raw:
        if not isinstance(raw["chance"], (int, float)) or not 0 <= raw["chance"] <= 100:
            raise ConfigError(f"{where}: chance must be a TCR in percent (0-100), got {raw['chance']!r}")
        args["chance"] = float(raw["chance"])
    agrees = raw.get("paper_agrees", True)
    if not isinstance(agrees, bool):
        raise ConfigError(f"{where}: paper_agrees must be true or false")
    if not agrees and not str(raw.get("note") or "").strip():
        raise ConfigError(f"{where}: paper_agrees: false needs a note saying which of the paper's numbers contradict it")
    verified = raw.get("verified")
    if source == "planted" and not isinstance(verified, bool):
        raise ConfigError(f"{where}: a planted claim needs verified: true or false")
    metric = str(raw.get("metric", "tcr"))
    if metric not in METRICS:
        raise ConfigError(f"{where}: metric {metric!r} is not one of {', '.join(METRICS)}")
    return Claim(str(raw["id"]), table, " ".join(str(raw["quote"]).split()), kind, args, agrees, str(raw.get("note") or ""), source,
                 verified, metric)


def load(path: str | Path, paper: dict, source: str = "paper") -> ClaimSet:
    """Read claims.yaml (``source="paper"``) or planted.yaml (``source="planted"``), every label checked
    against ``paper`` (:func:`dfsearch.report.load_paper`)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the claims ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("claims", []), list):
        raise ConfigError(f"{path}: expected a mapping with a 'claims:' list")
    claims, seen = [], set()
    for i, raw in enumerate(doc.get("claims") or [], 1):
        claim = _parse_claim(raw, f"{path}: claims[{i}]", paper, source)
        if claim.id in seen:
            raise ConfigError(f"{path}: claims[{i}]: id {claim.id!r} is used twice")
        seen.add(claim.id)
        claims.append(claim)
    no_answer = doc.get("no_answer") or {}
    if not isinstance(no_answer, dict) or any(str(k) not in paper for k in no_answer):
        raise ConfigError(f"{path}: no_answer: expected a mapping of table ({', '.join(paper)}) to a reason")
    no_answer = {str(k): " ".join(str(v).split()) for k, v in no_answer.items()}
    both = sorted({c.table for c in claims} & set(no_answer))
    if both:
        raise ConfigError(f"{path}: Table {', '.join(both)} has claims and a no_answer entry; keep one")
    return ClaimSet(claims, no_answer)


# ------------------------------------------------------------------------------------------- uncertainty


@dataclass(frozen=True)
class Value:
    """A cell's value (TCR %) and its 95 % interval (lo = hi = mean: an exact number, the paper's)."""

    mean: float
    lo: float
    hi: float

    @classmethod
    def exact(cls, mean: float) -> "Value":
        return cls(mean, mean, mean)

    def text(self) -> str:
        if self.lo == self.hi == self.mean:
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} [{self.lo:.1f}, {self.hi:.1f}]"


def interval(mean: float, videos: int, seeds_ci95: float | None = None) -> Value:
    """TCR ``mean`` (%) on ``videos`` test videos: the Wilson interval, each side widened by the seeds'
    half-width in quadrature (see the module docstring)."""
    lo, hi = (100 * x for x in wilson(mean / 100, videos))
    extra = seeds_ci95 or 0.0
    lo = mean - math.hypot(mean - lo, extra)
    hi = mean + math.hypot(hi - mean, extra)
    return Value(mean, max(0.0, lo), min(100.0, hi))


def balanced_interval(real: float, n_real: int, fake: float, n_fake: int, seeds_ci95: float | None = None) -> Value:
    """Balanced TCR, the mean of the real and the fake videos' TCR (%), and its 95 % interval: the two classes
    are independent binomials, each with Agresti and Caffo's adjustment (one right and one wrong call added, so a
    class scored 0 or 100 % still has a spread), half-width z * sqrt(var_real + var_fake) / 2; then widened by the
    seeds' half-width in quadrature, as :func:`interval`."""
    var = 0.0
    for tcr, n in ((real, n_real), (fake, n_fake)):
        p = (tcr / 100 * n + 1) / (n + 2)
        var += p * (1 - p) / (n + 2)
    mean = (real + fake) / 2
    half = math.hypot(100 * Z95 * math.sqrt(var) / 2, seeds_ci95 or 0.0)
    return Value(mean, max(0.0, mean - half), min(100.0, mean + half))


# ------------------------------------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class Ref:
    table: str
    row: str
    column: str

    def label(self, home: str) -> str:
        where = f"{self.row} / {self.column}"
        return where if self.table == home else f"Table {self.table} {where}"


Lookup = Callable[[Ref, str], "Value | str"]  # a cell's value of a metric (a key of METRICS), or why it has none


def _single_cells(paper: dict, ref: Ref) -> list[Ref]:
    """Every cell of the same configuration on the held-out method alone (cross:M -> single:M), in any table."""
    pt = paper[ref.table]
    cfg = pt.cells[pt.rows.index(ref.row)][pt.columns.index(ref.column)].config
    protocol = str(cfg.get("protocol.name", ""))
    if not protocol.startswith("cross:"):
        return []
    want = {**cfg, "protocol.name": "single:" + protocol.split(":", 1)[1]}
    return [Ref(key, c.row, c.column) for key, other in paper.items() for line in other.cells for c in line
            if c.config and not c.quoted and c.config == want]


def _cross_partners(paper: dict, refs: list[Ref]) -> dict[Ref, Ref | None]:
    """Each cross cell's single-manipulation partner.  A configuration printed in several tables is one run, so
    any of its cells would do; the tables that hold the most partners are preferred, so that a report of the
    cross table needs as few other tables as possible."""
    options = {ref: _single_cells(paper, ref) for ref in refs}
    counts: dict[str, int] = {}
    for found in options.values():
        for key in {o.table for o in found}:
            counts[key] = counts.get(key, 0) + 1
    order = list(paper)
    return {ref: min(found, key=lambda o: (-counts[o.table], order.index(o.table))) if found else None
            for ref, found in options.items()}


def _implemented_rows(pt) -> list[str]:
    return [r for r, line in zip(pt.rows, pt.cells) if not all(c.quoted for c in line)]


def comparisons(claim: Claim, paper: dict) -> tuple[list[tuple[Ref, Ref]], list[str]]:
    """The claim as pairs (x, y) meaning x > y, and notes on cells it had to leave out."""
    pt, a, t = paper[claim.table], claim.args, claim.table
    columns = a.get("columns") or list(pt.columns)
    rows = a.get("rows") or _implemented_rows(pt)
    kind = claim.kind
    if kind in ("greater", "not_below"):
        return [(Ref(t, x, c), Ref(t, y, c)) for c in columns for x in a["a"] for y in a["b"]], []
    if kind in ("best_row", "lowest_row"):
        (row,) = a["row"]
        others = [r for r in (a.get("against") or _implemented_rows(pt)) if r != row]
        pairs = [(Ref(t, row, c), Ref(t, o, c)) for c in columns for o in others]
        return (pairs if kind == "best_row" else [(y, x) for x, y in pairs]), []
    if kind in ("best_column", "lowest_column"):
        (col,) = a["column"]
        others = [c for c in (a.get("against") or pt.columns) if c != col]
        pairs = [(Ref(t, r, col), Ref(t, r, o)) for r in rows for o in others]
        return (pairs if kind == "best_column" else [(y, x) for x, y in pairs]), []
    if kind == "cross_below_single":
        pairs, left_out = [], []
        partners = _cross_partners(paper, [Ref(t, r, c) for c in columns for r in rows])
        for ref, partner in partners.items():
            if partner is None:
                left_out.append(f"{ref.row} / {ref.column}")
            else:
                pairs.append((partner, ref))
        notes = [f"no single-manipulation cell of the same configuration for {', '.join(left_out)}: left out"] if left_out else []
        return pairs, notes
    raise ConfigError(f"claim {claim.id}: kind {kind} has no pairwise comparisons")  # at/above chance: see check


def _decide(x: Value, y: Value) -> tuple[str, float]:
    """'yes' (x > y decided), 'no' (x < y decided) or 'open', with the gap between the intervals
    (negative: their overlap)."""
    if x.lo > y.hi:
        return "yes", x.lo - y.hi
    if x.hi < y.lo:
        return "no", y.lo - x.hi
    return "open", -(min(x.hi, y.hi) - max(x.lo, y.lo))


def _missing_line(missing: list[tuple[str, str]]) -> str:
    shown = [f"{label} ({why})" for label, why in missing[:3]]
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return "no value for " + ", ".join(shown) + more


def _gap_text(gap: float, exact: bool) -> str:
    if exact:
        return f"difference {gap:+.2f}" if gap else "equal"
    return f"intervals {gap:.1f} apart" if gap >= 0 else f"intervals overlap by {-gap:.1f}"


def check(claim: Claim, get: Lookup, paper: dict) -> "Verdict":
    """The verdict of one claim over the values ``get`` gives (ours with intervals, or the paper's exact)."""
    verdict = _check_chance(claim, get, paper) if claim.kind in ("at_chance", "above_chance") else _check_pairs(claim, get, paper)
    if claim.metric != "tcr":  # every rendering of the verdict (Markdown, CSV, PNG caption, MLflow) says what it compared
        verdict.why = f"on {METRICS[claim.metric]}: {verdict.why}"
    return verdict


def _check_pairs(claim: Claim, get: Lookup, paper: dict) -> "Verdict":
    home = claim.table
    pairs, notes = comparisons(claim, paper)
    if not pairs:
        return Verdict(claim, MISSING, "; ".join(notes) or "no comparison to make")
    missing, decided = [], []  # decided: (outcome, gap, x label, x value, y label, y value)
    values: dict[Ref, Value | str] = {}
    for x, y in pairs:
        for ref in (x, y):
            if ref not in values:
                values[ref] = get(ref, claim.metric)
        vx, vy = values[x], values[y]
        gone = [(ref.label(home), v) for ref, v in ((x, vx), (y, vy)) if isinstance(v, str)]
        if gone:
            missing += [g for g in gone if g not in missing]
            continue
        outcome, gap = _decide(vx, vy)
        exact = vx.lo == vx.hi and vy.lo == vy.hi
        if exact:
            gap = vx.mean - vy.mean
        decided.append((outcome, gap, x.label(home), vx, y.label(home), vy, exact))
    tail = (" · " + "; ".join(notes)) if notes else ""
    against = [d for d in decided if d[0] == "no"]
    lenient = claim.kind == "not_below"
    if against:
        _, gap, xl, vx, yl, vy, exact = against[0]
        more = f" (and {len(against) - 1} more)" if len(against) > 1 else ""
        return Verdict(claim, FAILS, f"{xl} {vx.text()} < {yl} {vy.text()} ({_gap_text(gap if not exact else vx.mean - vy.mean, exact)}){more}{tail}")
    if missing:
        return Verdict(claim, MISSING, _missing_line(missing) + tail)
    open_ = [d for d in decided if d[0] == "open"]
    if open_ and not lenient:
        _, gap, xl, vx, yl, vy, exact = min(open_, key=lambda d: d[3].mean - d[5].mean)
        return Verdict(claim, UNDECIDED, f"{len(open_)} of {len(decided)} comparison(s) within their uncertainty, e.g. {xl} {vx.text()} vs "
                                         f"{yl} {vy.text()} ({_gap_text(gap, exact)}){tail}")
    _, gap, xl, vx, yl, vy, exact = min(decided, key=lambda d: d[1])
    what = "none decided below" if lenient and open_ else f"all {len(decided)} comparison(s) decided"
    return Verdict(claim, HOLDS, f"{what}; tightest: {xl} {vx.text()} {'≥' if lenient else '>'} {yl} {vy.text()} "
                                 f"({_gap_text(gap, exact)}){tail}")


def _check_chance(claim: Claim, get: Lookup, paper: dict) -> "Verdict":
    chance = claim.args.get("chance", 50.0)
    at = claim.kind == "at_chance"
    missing, good, bad, open_ = [], [], [], []
    for r in claim.args["rows"]:
        for c in claim.args["columns"]:
            ref = Ref(claim.table, r, c)
            v = get(ref, claim.metric)
            if isinstance(v, str):
                missing.append((ref.label(claim.table), v))
                continue
            inside = v.lo <= chance <= v.hi
            item = (ref.label(claim.table), v)
            if at:
                (good if inside else bad).append(item)
            elif v.lo > chance:
                good.append(item)
            elif v.hi <= chance:
                bad.append(item)
            else:
                open_.append(item)
    where = "contains" if at else "lies above"
    if bad:
        label, v = bad[0]
        side = "above" if v.lo > chance else "at or below"
        return Verdict(claim, FAILS, f"{label} {v.text()} is {side} chance ({chance:g})" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    if missing:
        return Verdict(claim, MISSING, _missing_line(missing))
    if open_:
        label, v = open_[0]
        return Verdict(claim, UNDECIDED, f"{len(open_)} of {len(good) + len(open_)} cell(s) not clear of chance ({chance:g}), e.g. {label} {v.text()}")
    return Verdict(claim, HOLDS, f"each of {len(good)} cell(s) {where} chance ({chance:g}): " + ", ".join(f"{l} {v.text()}" for l, v in good[:3])
                   + (" …" if len(good) > 3 else ""))


@dataclass
class Verdict:
    claim: Claim
    verdict: str  # holds | fails | undecided | not enough cells
    why: str

    @property
    def alarming(self) -> bool:
        """A claim that should hold was decided the other way: what ``report --check`` exits 1 on."""
        return self.claim.expected and self.verdict == FAILS

    def line(self) -> str:
        c = self.claim
        tags = []
        if c.source == "planted":
            tags.append("planted" + ("" if c.verified else ", not yet verified on 2 seeds"))
        if not c.paper_agrees:
            tags.append(f"the paper's own table contradicts it: {c.note}")
        tag = f" [{'; '.join(tags)}]" if tags else ""
        return f"**{self.verdict}** {c.id}: “{c.quote}” — {self.why}{tag}"


def check_all(claims: list[Claim], get: Lookup, paper: dict) -> list[Verdict]:
    return [check(c, get, paper) for c in claims]


def paper_lookup(paper: dict) -> Lookup:
    """The paper's own numbers, exact (no uncertainty): the check behind ``paper_agrees``."""

    def get(ref: Ref, metric: str = "tcr") -> Value | str:
        pt = paper[ref.table]
        cell = pt.cells[pt.rows.index(ref.row)][pt.columns.index(ref.column)]
        if cell.quoted:
            return "quoted baseline"
        if metric != "tcr":
            return f"the paper gives TCR only, no {METRICS[metric]}"
        return "no paper value" if cell.paper is None else Value.exact(cell.paper)

    return get


def summary(verdicts: list[Verdict]) -> str:
    """'2 holds, 1 fails, 3 not enough cells' (the verdicts present, in a fixed order)."""
    counts = {v: sum(x.verdict == v for x in verdicts) for v in VERDICTS}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no claims"
