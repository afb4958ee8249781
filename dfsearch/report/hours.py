"""A table's hours, measured against estimated: each tested run's MLflow start-to-end time x the resources it held,
next to what :mod:`dfsearch.estimate` predicts for the same configuration (one trial alone on its device, with the
measured overhead of :mod:`dfsearch.overhead`).  The arithmetic takes any ``price``; :func:`pricer` is the real one."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dfsearch.report.runs import RunRecord

# price(canonical flat config, device "cuda" | "cpu") -> (hours of one trial alone on one device, where the numbers
# come from, whether the overhead was measured), or None when the run cannot be priced
Price = Callable[[dict, str], "tuple[float, str, bool] | None"]


@dataclass
class EstimateVsMeasured:
    runs: int  # tested runs priced
    measured: dict[str, float] = field(default_factory=dict)  # unit (GPU-h, CPU-h, h) -> hours
    estimated: dict[str, float] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # the machines that priced them
    unpriced: int = 0  # tested runs the estimate could not price
    lower_bound: int = 0  # runs priced by their compute alone (no overhead measured for their machine or family)

    def ratio(self, unit: str) -> float | None:
        """measured / estimated (1.0: the estimate was right; 2.0: the runs took twice as long); None where part of the
        estimate is a bare lower bound (a ratio to it says nothing of the estimate)."""
        e = self.estimated.get(unit)
        return self.measured.get(unit, 0.0) / e if e and not self.lower_bound else None


def resources(run: RunRecord) -> tuple[str, float] | None:
    """The unit a run's hours are counted in and how many of it the run held: GPU-h if it held GPUs, else CPU-h,
    else wall hours for a run without resource tags; None for one tagged as holding neither (counted nowhere).
    The table's measured hours and the estimate's comparison both count by this rule."""
    if run.gpus:
        return "GPU-h", run.gpus
    if run.cpus:
        return "CPU-h", run.cpus
    if run.gpus is None and run.cpus is None:
        return "h", 1.0
    return None


def held_hours(runs: Iterable[RunRecord]) -> dict[str, float]:
    """unit -> the runs' hours x the resources each held (units as :func:`resources`)."""
    out: dict[str, float] = {}
    for r in runs:
        counted = resources(r)
        if counted is not None:
            unit, held = counted
            out[unit] = out.get(unit, 0.0) + r.hours * held
    return out


def compare(runs: Iterable[RunRecord], price: Price) -> EstimateVsMeasured | None:
    """Estimate vs measured over the tested runs (a failed or stopped run's time says nothing of a whole trial)."""
    tested = [r for r in runs if r.tested and r.end_ms]
    if not tested:
        return None
    out = EstimateVsMeasured(0)
    for r in tested:
        priced = price(r.config, "cuda" if r.gpus else "cpu")
        counted = resources(r)
        if priced is None or counted is None:
            out.unpriced += 1
            continue
        hours, source, measured = priced
        unit, held = counted
        out.runs += 1
        out.lower_bound += not measured
        out.measured[unit] = out.measured.get(unit, 0.0) + r.hours * held
        out.estimated[unit] = out.estimated.get(unit, 0.0) + hours * held
        if source not in out.sources:
            out.sources.append(source)
    return out


def pricer(source: str | None = None) -> Price:
    """The estimate's price of a run: the machine ``source`` names (see ``run --overhead``), else the shipped one
    for the run's device.  dfsearch.estimate is imported on the first call (it reads the detector registry)."""
    machines: dict[str, object] = {}

    def price(config: dict, device: str):
        from dfsearch import estimate, overhead
        from dfsearch.errors import DfsearchError

        try:
            machine = machines.get(device) or machines.setdefault(device, overhead.load(source, device))
            trial = estimate.trial(config, machine)
        except (DfsearchError, KeyError, ValueError):
            return None
        note = f"measured {machine.source.get('date', '?')}" if trial.measured else "overhead not measured: compute lower bound"
        return trial.total_s / 3600, f"{machine.name} ({note})", trial.measured

    return price
