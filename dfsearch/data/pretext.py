"""Pretrained weights for the ``--smoke`` twins: a short pretext training on synthetic face videos, written in
the family's published format, built on demand and cached like the synthetic data.

A paper space that says ``model.pretrained: kinetics400`` cannot load Kinetics files into the narrow smoke
models, and a CPU machine has none.  Its ``--smoke`` twin says ``model.pretrained: pretext://synthetic-v1``
(:data:`PRETEXT`) instead, which the train loop turns into a file made here (:data:`MAKERS`):

- **the pretext task** (our Kinetics): 4-way classification of a face video's *action*: the head moving (nodding
  / shaking) or still x the light on the face changing or steady (:data:`CLASSES`); every face talks.  A single
  frame does not tell the classes apart (a still head is one frame of a moving one), so the model has to learn
  frame-to-frame features, as action recognition does;
- **the videos**: the generator of :mod:`dfsearch.data.synthetic` (same two photos, same face states) with
  identities that are *not* in the stand-in (indices from :data:`ID_OFFSET`, another seed), rendered as head
  crops at the smoke clip size (what the face cache gives a model) and never written to disk;
- **the file**: Hara's ``.pth`` for the 3D ResNet (``{"arch", "epoch", "state_dict"}`` with DataParallel
  ``module.*`` keys and a 4-way ``fc``), facebookresearch's ``.pyth`` for TimeSformer (``{"epoch",
  "model_state"}`` with ``model.*`` keys, one file per ``space_time``).  A trial loads it through the same
  :func:`~dfsearch.models.weights.read_state_dict` and family loader as a real Kinetics file;
- **the cache**: ``<cache>/pretext/<key>/`` (``<cache>`` = ``$DFSEARCH_CACHE`` or ``~/.cache/dfsearch``), the key a
  hash of the family's backbone settings, the clip and this recipe.  The first trial that asks builds it (a
  file lock makes a concurrent trial wait for it instead of building it twice); later ones read it.

It checks the system, not detectors: what the pretext weights teach is planted, like the stand-in's traces.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PRETEXT = "pretext://synthetic-v1"  # the model.pretrained value of a smoke twin's pretrained rows
VERSION = 1  # of the recipe below; part of the cache key
ID_OFFSET = 5000  # pretext identities: indices >= this (the stand-in uses FF++'s ids 000-999)
SEED = 7919  # identity seed (the stand-in's synthetic_seed is 0)
# (head moving, light changing) per class; moving: the head crop oscillates +-MOVE_PX at 2-3.5 Hz along a random
# direction; changing light: +-20 % at 2-3.5 Hz (the stand-in's real videos: +-12-20 % at 1-2 Hz); still / steady:
# frozen at a random value.  (Talking alone, tried first, was too small a change at 64 px to learn in minutes.)
CLASSES = [(False, False), (False, True), (True, False), (True, True)]
MOVE_HZ, MOVE_PX, LIGHT_HZ, LIGHT_AMP = (2.0, 3.5), 5.0, (2.0, 3.5), 0.2
CROP_OF_PATCH = 0.95  # a model's 7/8 crop of the x1.3 face box shows about the whole 112-px head patch
# Per family (DetectorSpec.pretext, in its family file): the settings the file depends on, the recipe (videos per
# class, epochs, batch, Adam lr: sized to a few minutes on one CPU core), the file's published name and layout.


def pretext_home() -> Path:
    base = os.environ.get("DFSEARCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "dfsearch") / "pretext"


def is_pretext(pretrained) -> bool:
    return str(pretrained) == PRETEXT


# ------------------------------------------------------------------------------------------------ what to build


def _pretext(family: str):
    """The family's :class:`~dfsearch.models.registry.Pretext`."""
    from dfsearch.models import registry

    spec = registry.get(family)
    if spec.pretext is None:
        have = ", ".join(s.name for s in registry.specs() if s.pretext is not None)
        raise ValueError(f"no pretext weights for model {family!r} (only {have})")
    return spec.pretext


def _backbone(family: str, arch) -> dict:
    """The family settings the file depends on (attention blocks are new parts, as with a Kinetics file)."""
    a = dataclasses.asdict(arch)
    return {k: a[k] for k in _pretext(family).backbone}


def _clip(family: str) -> dict:
    """The smoke twin's clip of the family (the weights are trained on what its trials see)."""
    from dfsearch.models import registry

    smoke = registry.smoke_budget(registry.get(family))
    return {"clip_len": smoke.get("data.clip_len", 1), "frame_stride": smoke.get("data.frame_stride", 1), "crop_size": smoke["data.crop_size"]}


def _filename(family: str, backbone: dict, clip: dict) -> str:
    return _pretext(family).filename(backbone, clip)


def weights_path(family: str, arch) -> Path:
    backbone, clip = _backbone(family, arch), _clip(family)
    blob = json.dumps({"family": family, "backbone": backbone, "clip": clip, "recipe": _pretext(family).recipe, "classes": CLASSES,
                       "move": [MOVE_HZ, MOVE_PX], "light": LIGHT_HZ, "light_amp": LIGHT_AMP,
                       "version": VERSION}, sort_keys=True)
    key = hashlib.sha1(blob.encode()).hexdigest()[:12]
    return pretext_home() / key / _filename(family, backbone, clip)


def ensure_weights(family: str, arch) -> Path:
    """The pretext file for a detector's settings ``arch``: built once (under a file lock), then reused."""
    path = weights_path(family, arch)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent trial waits here, then finds the file
        try:
            if not path.is_file():
                build_weights(family, arch, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


# What the train loop hands dfsearch.models.create: the weights made here, by model.pretrained value.
MAKERS = {PRETEXT: ensure_weights}


# ------------------------------------------------------------------------------------------------ the videos


def pretext_clips(n_per_class: int, clip_len: int, stride: int, crop: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(clips uint8 (N, 3, T, crop, crop), labels (N,)): head crops of new identities, one clip per video."""
    import cv2

    from dfsearch.data import synthetic as S

    photos = S.face_photos()
    span = (clip_len - 1) * stride + 1
    side = int(round(S.PATCH * CROP_OF_PATCH))
    clips, labels = [], []
    for label, (move, light) in enumerate(CLASSES):
        for i in range(n_per_class):
            index = ID_OFFSET + label * n_per_class + i
            rng = np.random.default_rng([seed, index])
            ident = S.make_identity(index, rng, 128, photos)
            ident = dataclasses.replace(ident, light_freq=float(rng.uniform(*LIGHT_HZ)) if light else 0.0, light_amp=LIGHT_AMP,
                                        light_phase=float(rng.uniform(0, 2 * np.pi)))
            start = int(rng.integers(0, 50))  # a random moment of the video
            patches = S.face_patches(ident, None, "original", start + span, rng)[start::stride]
            # the head: an oscillating or a fixed shift of the crop (the patch is padded so that the crop stays inside)
            angle, phase, hz = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi), rng.uniform(*MOVE_HZ)
            t = np.arange(len(patches)) * stride / S.FPS
            shift = MOVE_PX * (np.sin(2 * np.pi * hz * t + phase) if move else np.full(len(t), np.sin(phase)))
            pad = int(np.ceil(MOVE_PX)) + 1
            frames = []
            for p, d in zip(patches, shift):
                p = cv2.copyMakeBorder(p, pad, pad, pad, pad, cv2.BORDER_REFLECT)
                x0 = int(round(pad + (S.PATCH - side) / 2 + d * np.cos(angle)))
                y0 = int(round(pad + (S.PATCH - side) / 2 + d * np.sin(angle)))
                frames.append(cv2.resize(p[y0 : y0 + side, x0 : x0 + side], (crop, crop), interpolation=cv2.INTER_AREA))
            clips.append(np.stack(frames).transpose(3, 0, 1, 2))
            labels.append(label)
    return np.stack(clips), np.array(labels)


# ------------------------------------------------------------------------------------------------ training


def _model(family: str, backbone: dict, clip: dict):
    """The detector's backbone with a 4-way head, built by the family's own builder."""
    from torch import nn

    from dfsearch import config
    from dfsearch.models import registry

    flat = {"model.name": family, **{f"model.{k}": v for k, v in backbone.items()}, "data.clip_len": clip["clip_len"],
            "data.frame_stride": clip["frame_stride"], "data.crop_size": clip["crop_size"]}
    cfg = config.from_flat(flat)
    model = registry.get(family).build(cfg, None)
    head = _pretext(family).head
    setattr(model, head, nn.Linear(getattr(model, head).in_features, len(CLASSES)))
    return model


def build_weights(family: str, arch, path: Path) -> Path:
    """Train the pretext task and write ``path`` in the family's published format (atomically)."""
    import torch

    # The pretext task seeds and draws from torch's global generator, inside the trial that happens to build the file:
    # that trial must go on from the state it had, or it would train unlike the trials that find the file.
    with torch.random.fork_rng(devices=[]):
        return _train_and_write(family, arch, path)


def _train_and_write(family: str, arch, path: Path) -> Path:
    import torch
    import torch.nn.functional as F

    from dfsearch.models import registry

    t0 = time.perf_counter()
    backbone, clip, recipe = _backbone(family, arch), _clip(family), _pretext(family).recipe
    log.info("building pretext weights %s (%s, %s)", path, backbone, clip)
    x, y = pretext_clips(recipe["per_class"], clip["clip_len"], clip["frame_stride"], clip["crop_size"])
    n_val = len(CLASSES) * 8  # a few held-out videos to report what the pretext learned
    order = np.random.default_rng(SEED).permutation(len(y))
    val, train = order[:n_val], order[n_val:]
    # The same normalisation a trial uses with this file (the family's own: it is a path, not a named weight).
    mean, std = registry.get(family).input_stats(PRETEXT)
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1, 1), torch.tensor(std).view(1, 3, 1, 1, 1)

    def norm(batch: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(batch).float() / 255.0 - mean_t) / std_t

    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    model = _model(family, backbone, clip)
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe["epochs"])
    for _ in range(recipe["epochs"]):
        model.train()
        perm = train[torch.randperm(len(train), generator=gen).numpy()]
        for s in range(0, len(perm) - recipe["batch"] + 1, recipe["batch"]):
            idx = perm[s : s + recipe["batch"]]
            batch = x[idx]
            flip = torch.rand(len(idx), generator=gen).numpy() < 0.5
            batch[flip] = batch[flip][..., ::-1]
            loss = F.cross_entropy(model(norm(batch)), torch.from_numpy(y[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(norm(x[val])).argmax(1).numpy() == y[val]).mean())
    secs = time.perf_counter() - t0
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    obj = _pretext(family).pack(state, backbone, recipe["epochs"])  # the family's published layout
    obj["pretext"] = json.dumps({"task": "head moving x light changing, 4-way", "classes": CLASSES, "held_out_acc": acc, "seconds": round(secs, 1),
                                 "backbone": backbone, "clip": clip, "recipe": recipe, "version": VERSION})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    log.info("pretext weights %s: held-out accuracy %.2f (chance %.2f), %.0f s", path, acc, 1 / len(CLASSES), secs)
    return path
