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
``TFLOPS`` per family, rounded down.  Data loading, start-up and checkpointing are not counted: read the
result as a lower bound, in H200-hours.
"""

from __future__ import annotations

from typing import Any

TFLOPS = {"resnet3d": 40.0, "timesformer": 160.0, "frame": 30.0}  # training TFLOP/s one H200 achieved (AMP bf16)
ASSUMPTION = ("FLOPs x clips at the TFLOP/s one H200 achieved on each model family with AMP (3D ResNet 40, TimeSformer 160, "
              "frame models 30); FF++ c40 splits 720/140/140, 500 frames a video; compute only, a lower bound")
FRAMES_PER_VIDEO = 500
SPLIT = {"train": 720, "val": 140, "test": 140}  # identities (real videos) per split; each method has as many fakes

# Forward GFLOPs at the detector's default clip (16x112² for 3D ResNet-50, 8x224² for TimeSformer ViT-B/16,
# one 299² / 256² frame for Xception / MesoNet), measured on this code base.
R3D50 = 20.1
NL_STAGE = {1: 21.8, 2: 1.5, 3: 0.4, 4: 0.3}  # extra GFLOPs of one non-local block after each stage
R3D_DEPTH = {10: 0.45, 18: 0.42, 34: 0.8, 50: 1.0, 101: 1.9, 152: 2.8, 200: 3.7}  # rough, relative to depth 50
TIMESFORMER = {"joint": 359.1, "divided": 391.7, "space_only": 268.4}
VIT_SCALE = {"tiny": 1 / 16, "small": 1 / 4, "base": 1.0}
FRAME_MODELS = {"xception": (16.7, 299), "meso4": (0.1, 256), "mesoinception4": (0.2, 256)}


def videos(protocol: str, split: str) -> int:
    """Videos of ``split`` under ``protocol``: its real videos plus one fake per real video for each method the
    split uses.  Which methods that is comes from :func:`dfsearch.data.protocols.protocol_methods`, the one
    definition the datasets use too (``cross:M`` validates on the three other methods, tests on M)."""
    from dfsearch.data.protocols import protocol_methods  # imported here: dfsearch.data loads torch and OpenCV

    return SPLIT[split] * (1 + len(protocol_methods(protocol)[split]))


def clip_gflops(full: dict[str, Any]) -> float:
    """Forward GFLOPs of one training clip of a canonical flat config."""
    name = full["model.name"]
    clip, crop = full.get("data.clip_len") or 1, full.get("data.crop_size") or 112
    if name == "resnet3d":
        g = R3D50 * R3D_DEPTH.get(int(full.get("model.depth", 50)), 1.0)
        if full.get("model.attention") == "nonlocal":
            g += sum(NL_STAGE[int(s)] for s in str(full.get("model.placement", "")).split(",") if s.strip())
        return g * float(full.get("model.widen_factor", 1.0)) ** 2 * clip * crop**2 / (16 * 112**2)
    if name == "timesformer":
        g = TIMESFORMER.get(full.get("model.space_time", "divided"), 391.7) * VIT_SCALE.get(full.get("model.vit_size", "base"), 1.0)
        return g * clip * crop**2 / (8 * 224**2)
    base, side = FRAME_MODELS.get(name, (10.0, 224))
    return base * crop**2 / side**2


def eval_gflops(full: dict[str, Any]) -> float:
    """Forward GFLOPs to score one whole video at validation / test time."""
    g = clip_gflops(full)
    name, clip = full["model.name"], full.get("data.clip_len") or 1
    if name == "resnet3d":
        return g * FRAMES_PER_VIDEO / clip
    if name == "timesformer":
        return 3 * g
    return g * FRAMES_PER_VIDEO


def gpu_hours(full: dict[str, Any], epochs: int | None = None) -> float:
    """Estimated GPU-hours of one trial (canonical flat config), training for ``epochs`` (default: its own)."""
    epochs = int(epochs if epochs is not None else full.get("train.epochs", 10))
    protocol = str(full.get("protocol.name", "all"))
    train = epochs * videos(protocol, "train") * 3 * clip_gflops(full)
    evals = (epochs * videos(protocol, "val") + videos(protocol, "test")) * eval_gflops(full)
    tflops = TFLOPS.get(full["model.name"], TFLOPS["frame"])
    return (train + evals) * 1e9 / (tflops * 1e12) / 3600
