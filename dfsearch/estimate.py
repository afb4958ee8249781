"""A trial's GPU-hours, estimated from its FLOPs: what `run --dry-run` prints, what the search spaces' headers
quote, and what `run` says it saved when it skips trials that already finished.

The model: forward GFLOPs of one clip at the detector's default input, measured once with
``torch.utils.flop_counter.FlopCounterMode`` (attention through the math SDPA kernel, so it is counted),
scaled linearly by frames × pixels (and width² for narrow models); training = 3 × forward per clip (forward +
backward), one clip per training video per epoch (what TrainClips draws); validation every epoch and the
final test see every video whole (3D ResNet: all frames in trunks; TimeSformer: 3 crops of the middle clip;
frame detectors: every frame).  FaceForensics++ split sizes (720/140/140 identities; 500 frames per c40 video
on average).  Throughput: what one NVIDIA H200 achieved on these models' training steps with AMP (bf16) at
the search spaces' batch sizes (measured 2026-11-26 with this code base: r3d-50 plain 45.5, NL 1,2,3,4 68.9,
NL 4,4 31.0 TFLOP/s at batch 16; TimeSformer joint 260, divided 166 at batch 8; Xception 31.4 at batch 32),
``DetectorSpec.cost.tflops`` per family, rounded down.  Data loading, start-up and checkpointing are not counted: read the
result as a lower bound, in H200-hours.
"""

from __future__ import annotations

from typing import Any

ASSUMPTION = ("FLOPs x clips at the TFLOP/s one H200 achieved on each model family with AMP (3D ResNet 40, TimeSformer 160, "
              "frame models 30); FF++ c40 splits 720/140/140, 500 frames a video; compute only, a lower bound")
FRAMES_PER_VIDEO = 500
SPLIT = {"train": 720, "val": 140, "test": 140}  # identities (real videos) per split; each method has as many fakes
# The FLOPs and TFLOP/s of each family are facts of its detector spec (DetectorSpec.cost, in its family file).


def _spec(full: dict[str, Any]):
    from dfsearch.models import registry  # imported here: the family modules load torch

    return registry.get(full["model.name"])


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


def gpu_hours(full: dict[str, Any], epochs: int | None = None, *, split_videos: dict[str, int] | None = None,
              frames_per_video: int = FRAMES_PER_VIDEO) -> float:
    """Estimated GPU-hours of one trial (canonical flat config), training for ``epochs`` (default: its own).
    ``split_videos`` / ``frames_per_video``: another dataset than FF++ c40 (the synthetic one of ``bench sweep``)."""
    epochs = int(epochs if epochs is not None else full.get("train.epochs", 10))
    protocol = str(full.get("protocol.name", "all"))
    n = split_videos or {split: videos(protocol, split) for split in SPLIT}
    train = epochs * n["train"] * 3 * clip_gflops(full)
    evals = (epochs * n["val"] + n["test"]) * eval_gflops(full, frames_per_video)
    tflops = _spec(full).cost.tflops
    return (train + evals) * 1e9 / (tflops * 1e12) / 3600
