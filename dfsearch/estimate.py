"""A trial's and a sweep's hours, from their FLOPs and a machine's measured overhead: what `run --dry-run` prints,
what `report` sets beside the measured hours; the FLOPs alone are what the search spaces' headers quote and what
`run` says it saved when it skips trials that already finished.

The model: forward GFLOPs of one clip at the detector's default input, measured once with
``torch.utils.flop_counter.FlopCounterMode`` (attention through the math SDPA kernel, so it is counted),
scaled linearly by frames × pixels (and width² for narrow models); training = 3 × forward per clip (forward +
backward), one clip per training video per epoch (what TrainClips draws); validation every epoch and the
final test see every video whole (3D ResNet: all frames in trunks; TimeSformer: 3 crops of the middle clip;
frame detectors: every frame).  FaceForensics++ split sizes (720/140/140 identities; 500 frames per c40 video
on average).  Throughput: what one NVIDIA H200 achieved on these models' training steps with AMP (bf16) at
the search spaces' batch sizes (measured 2026-11-26 with this code base: r3d-50 plain 45.5, NL 1,2,3,4 68.9,
NL 4,4 31.0 TFLOP/s at batch 16; TimeSformer joint 260, divided 166 at batch 8; Xception 31.4 at batch 32),
``DetectorSpec.cost.tflops`` per family, rounded down.  That much is the compute lower bound, in H200-hours.

On top of it, the measured overhead of a machine (:mod:`dfsearch.overhead`: start-up per trial, batch waits,
validation and test beyond their FLOPs, the sweep's own start) makes :func:`sweep` an estimate of the sweep's
wall time, one trial per device at a time.  A machine not yet measured adds nothing, and the estimate says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dfsearch.overhead import Machine

ASSUMPTION = ("FLOPs x clips at the TFLOP/s one H200 achieved on each model family with AMP (3D ResNet 40, TimeSformer 160, "
              "frame models 30); FF++ c40 splits 720/140/140, 500 frames a video; compute only, a lower bound")
FRAMES_PER_VIDEO = 500
SPLIT = {"train": 720, "val": 140, "test": 140}  # identities (real videos) per split; each method has as many fakes
# The FLOPs and TFLOP/s of each family are facts of its detector spec (DetectorSpec.cost, in its family file).


def _spec(full: dict[str, Any]):
    from dfsearch.models import registry  # imported here: the family modules load torch

    return registry.get(full["model.name"])


def sizes(full: dict[str, Any]) -> tuple[dict[str, int], int]:
    """Videos per split and frames per video of the trial's data: FF++ c40, or the synthetic set its config builds."""
    protocol = str(full.get("protocol.name", "all"))
    if full.get("data.root") != "synthetic":
        return {split: videos(protocol, split) for split in SPLIT}, FRAMES_PER_VIDEO
    from dfsearch.data.protocols import protocol_methods
    from dfsearch.data.synthetic import split_counts

    pairs = split_counts(int(full.get("data.synthetic_pairs") or 50))  # each pair is two identities, as in FF++'s split files
    methods = protocol_methods(protocol)
    return {s: 2 * pairs[s] * (1 + len(methods[s])) for s in SPLIT}, int(full.get("data.synthetic_frames") or 32)


def videos(protocol: str, split: str) -> int:
    """Videos of ``split`` under ``protocol``: its real videos plus one fake per real video for each method the
    split uses.  Which methods that is comes from :func:`dfsearch.data.protocols.protocol_methods`, the one
    definition the datasets use too (``cross:M`` validates on the three other methods, tests on M)."""
    from dfsearch.data.protocols import protocol_methods  # imported here: dfsearch.data loads torch and OpenCV

    return SPLIT[split] * (1 + len(protocol_methods(protocol)[split]))


def clip_gflops(full: dict[str, Any]) -> float:
    """Forward GFLOPs of one training clip of a canonical flat config (the family's ``DetectorSpec.cost``)."""
    return _spec(full).cost.clip_gflops(full)


def eval_gflops(full: dict[str, Any], frames_per_video: int = FRAMES_PER_VIDEO) -> float:
    """Forward GFLOPs to score one whole video at validation / test time, as the family's ``test_view`` does:
    every frame in clips (trunks, frames) or the 3 crops of the middle clip."""
    g = clip_gflops(full)
    if _spec(full).test_view == "middle_clip_3crops":
        return 3 * g
    return g * frames_per_video / (full.get("data.clip_len") or 1)


def trial_gflop(full: dict[str, Any], epochs: int | None = None, *, split_videos: dict[str, int] | None = None,
                frames_per_video: int | None = None) -> tuple[float, float]:
    """(training, validation + test) GFLOP of one trial: ``epochs`` x training clips x 3 x forward; every validation
    video each epoch (a per-frame detector on ``eval.val_frames`` of its frames when set) and every test video once,
    scored whole.  Default sizes: :func:`sizes`."""
    epochs = int(epochs if epochs is not None else full.get("train.epochs", 10))
    if split_videos is None or frames_per_video is None:
        own_videos, own_frames = sizes(full)
        split_videos, frames_per_video = split_videos or own_videos, frames_per_video or own_frames
    train = epochs * split_videos["train"] * 3 * clip_gflops(full)
    val_frames = int(full.get("eval.val_frames") or 0)  # per-frame detectors may validate on fewer frames
    val_per_video = frames_per_video
    if val_frames and _spec(full).test_view == "frames":
        val_per_video = min(val_frames, frames_per_video)
    evals = epochs * split_videos["val"] * eval_gflops(full, val_per_video) + split_videos["test"] * eval_gflops(full, frames_per_video)
    return train, evals


def gpu_hours(full: dict[str, Any], epochs: int | None = None, *, split_videos: dict[str, int] | None = None,
              frames_per_video: int | None = None) -> float:
    """The compute lower bound of one trial (canonical flat config) in H200-hours, training for ``epochs`` (default:
    its own), on FF++ c40 whatever its ``data.root`` (the search spaces' headers; ``split_videos`` /
    ``frames_per_video``: other sizes)."""
    protocol = str(full.get("protocol.name", "all"))
    split_videos = split_videos or {split: videos(protocol, split) for split in SPLIT}
    train, evals = trial_gflop(full, epochs, split_videos=split_videos, frames_per_video=frames_per_video or FRAMES_PER_VIDEO)
    return (train + evals) / (_spec(full).cost.tflops * 1e3) / 3600


@dataclass(frozen=True)
class TrialEstimate:
    compute_s: float  # FLOPs at the family's training rate on the machine (its H200 rate where not measured)
    overhead_s: float  # start-up, batch waits, evaluation beyond its FLOPs (0 where not measured)
    measured: bool  # the machine has the family's overhead

    @property
    def total_s(self) -> float:
        return self.compute_s + self.overhead_s


def trial(full: dict[str, Any], machine: Machine, epochs: int | None = None, **sizes_) -> TrialEstimate:
    """Seconds one trial takes alone on one device of ``machine`` (``sizes_``: as :func:`trial_gflop`)."""
    train, evals = trial_gflop(full, epochs, **sizes_)
    o = machine.family(full["model.name"])
    tflops = (o.tflops if o is not None and o.tflops else None) or _spec(full).cost.tflops
    compute = (train + evals) / (tflops * 1e3)
    if o is None:
        return TrialEstimate(compute, 0.0, False)
    total = o.startup_s + train / (tflops * 1e3) / (1 - o.data_wait) + o.eval_factor * evals / (tflops * 1e3)
    return TrialEstimate(compute, total - compute, True)


@dataclass(frozen=True)
class SweepEstimate:
    compute_h: float
    overhead_h: float
    machine: Machine
    unmeasured: list[str] = field(default_factory=list)  # families the machine has no overhead for

    @property
    def total_h(self) -> float:
        return self.compute_h + self.overhead_h

    def describe(self, unit: str = "GPU-h") -> str:
        """'estimate of the sweep: X GPU-h (compute lower bound Y, overhead Z from <source>)', what --dry-run prints."""
        if not self.machine.measured:
            return (f"estimate of the sweep: >= {self.total_h:.3g} {unit} (compute lower bound {self.compute_h:.3g}; overhead not measured on "
                    f"{self.machine.name}, so this is a lower bound: {self.machine.source.get('note', 'no bench run yet')})")
        text = (f"estimate of the sweep: {self.total_h:.3g} {unit} (compute lower bound {self.compute_h:.3g}, "
                f"overhead {self.overhead_h:.3g} from {self.machine.label()}")
        if self.unmeasured:
            text += f"; not measured there for {', '.join(self.unmeasured)}: their trials count compute only"
        return text + ")"


def sweep(fulls: list[dict[str, Any]], machine: Machine, **sizes_) -> SweepEstimate:
    """The estimate of a sweep of ``fulls`` (canonical flat configs) run one trial at a time on ``machine``."""
    trials = [trial(f, machine, **sizes_) for f in fulls]
    unmeasured = sorted({f["model.name"] for f, t in zip(fulls, trials) if not t.measured})
    start = machine.sweep_s if fulls and machine.measured else 0.0
    return SweepEstimate(sum(t.compute_s for t in trials) / 3600, (start + sum(t.overhead_s for t in trials)) / 3600, machine, unmeasured)
