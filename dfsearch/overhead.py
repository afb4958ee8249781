"""What a sweep costs beyond its FLOPs, per machine and detector family, as measured by ``python -m dfsearch.bench sweep``.

The numbers are data (``overhead.yaml`` beside this module, or a file of the user's), each machine with where they
came from (which machine, which command, which date).  A machine is ``measured: false`` until a bench run fills it:
its estimate is then the compute lower bound alone, and says so.  :mod:`dfsearch.estimate` applies them:

    trial = startup_s
          + epochs x train FLOPs / tflops / (1 - data_wait)        (steps at the family's rate, plus waits for batches)
          + eval_factor x (validation + test FLOPs) / tflops        (whole videos decoded and scored)
    sweep = sweep_s + sum of its trials (one trial per device at a time)

``calibrate`` turns one bench sweep's timings into these numbers.  No torch, no Ray here.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dfsearch.errors import ConfigError

SHIPPED = Path(__file__).with_name("overhead.yaml")


@dataclass(frozen=True)
class FamilyOverhead:
    """One family on one machine.  ``tflops``: the training steps' rate without batch waits (None: the family's
    H200 rate from its ``DetectorSpec.cost``)."""

    startup_s: float  # per trial: actor, Train worker group, datasets, model, checkpoints, MLflow
    data_wait: float  # fraction of the training steps' time spent waiting for a batch
    eval_factor: float  # measured validation + test seconds / their FLOPs at ``tflops``
    tflops: float | None = None


@dataclass(frozen=True)
class Machine:
    name: str
    device: str  # cuda | cpu: which runs it prices by default
    measured: bool
    source: dict = field(default_factory=dict)  # machine, command, date (or note: why it is not measured)
    sweep_s: float = 0.0  # once per sweep: the Ray cluster, the Tuner, the MLflow parent run
    families: dict[str, FamilyOverhead] = field(default_factory=dict)

    def family(self, name: str) -> FamilyOverhead | None:
        return self.families.get(name) if self.measured else None

    def label(self) -> str:
        """Where the numbers come from, for the printed estimate."""
        if not self.measured:
            return f"{self.name}: not measured ({self.source.get('note', 'no bench run yet')})"
        s = self.source
        return f"{self.name}: measured {s.get('date', '?')} on {s.get('machine', '?')} by `{s.get('command', '?')}`"


def load(source: str | None = None, device: str = "cuda") -> Machine:
    """The machine to price with.  ``source``: a machine name in the shipped file, a YAML file (its only machine),
    ``FILE#NAME``, or None (the shipped file's default for ``device``)."""
    path, name = SHIPPED, None
    if source:
        file, _, name = source.partition("#") if "#" in source or Path(source).suffix in (".yaml", ".yml") else ("", "", source)
        path = Path(file) if file else SHIPPED
        name = name or None
    machines, defaults = read(path)
    if name is None:
        name = defaults.get(device) if path == SHIPPED else (next(iter(machines)) if len(machines) == 1 else None)
    if name not in machines:
        raise ConfigError(f"{path}: no machine {name!r} (it has: {', '.join(machines) or 'none'}); pick one with NAME or {path}#NAME")
    return machines[name]


def read(path: Path) -> tuple[dict[str, Machine], dict[str, str]]:
    """Every machine of an overhead file, and its defaults per device."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the overhead file ({exc})") from None
    machines = {}
    for name, m in (raw.get("machines") or {}).items():
        try:
            families = {f: FamilyOverhead(**v) for f, v in (m.get("families") or {}).items()}
            machines[name] = Machine(name, m.get("device", "cuda"), bool(m.get("measured")), dict(m.get("source") or {}),
                                     float(m.get("sweep_s") or 0.0), families)
        except (TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: machine {name!r}: {exc}") from None
    return machines, dict(raw.get("default") or {})


def dump(machine: Machine) -> str:
    """One machine as YAML, in the format of ``overhead.yaml`` (paste it there, or point --overhead at the file)."""
    import yaml

    body = {"device": machine.device, "measured": machine.measured, "source": machine.source, "sweep_s": round(machine.sweep_s, 1),
            "families": {f: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(o).items()} for f, o in machine.families.items()}}
    return yaml.safe_dump({"machines": {machine.name: body}}, sort_keys=False)


@dataclass(frozen=True)
class TrialTiming:
    """One finished trial of a bench sweep: its wall time (MLflow start to end) and where it went."""

    family: str
    start_s: float  # its MLflow run's start and end (epoch seconds)
    end_s: float
    train_s: float  # summed over epochs: the training steps, batch waits included
    data_wait_s: float
    epoch_s: float  # summed over epochs: training + validation
    test_s: float
    train_tflop: float  # the estimate's FLOPs: epochs x training clips x 3 x forward
    eval_tflop: float  # (epochs x validation + test) videos, scored whole


def own_seconds(trials: list[TrialTiming]) -> list[float]:
    """Each trial's seconds with the device to itself: from its run's start, or the previous trial's end if later, to
    its end.  Tune starts every trial's run at once and the ones without a free device wait in it: that wait is
    the previous trial's time, not this one's start-up."""
    out, previous_end = [], float("-inf")
    for t in trials:
        out.append(t.end_s - max(t.start_s, previous_end))
        previous_end = max(previous_end, t.end_s)
    return out


def calibrate(trials: list[TrialTiming], sweep_wall_s: float, name: str, device: str, source: dict) -> Machine:
    """The overhead numbers that make the estimate reproduce ``trials`` (run one after another on one device)."""
    if not trials:
        raise ConfigError("no finished trial to calibrate the overhead with")
    trials = sorted(trials, key=lambda t: t.end_s)
    own = dict(zip(map(id, trials), own_seconds(trials)))
    families = {}
    for family in sorted({t.family for t in trials}):
        mine = [t for t in trials if t.family == family]
        step_s = sum(t.train_s - t.data_wait_s for t in mine)
        tflops = sum(t.train_tflop for t in mine) / step_s
        eval_s = sum(t.epoch_s - t.train_s + t.test_s for t in mine)
        families[family] = FamilyOverhead(
            startup_s=statistics.mean(own[id(t)] - t.epoch_s - t.test_s for t in mine),
            data_wait=sum(t.data_wait_s for t in mine) / sum(t.train_s for t in mine),
            eval_factor=eval_s / (sum(t.eval_tflop for t in mine) / tflops),
            tflops=tflops,
        )
    sweep_s = max(0.0, sweep_wall_s - sum(own.values()))  # what the trials' own time does not cover: Tune's start and end
    return Machine(name, device, True, source, sweep_s, families)
