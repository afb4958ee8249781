"""Does the system recover the answer planted in the synthetic data?  A per-frame detector (Meso4) against a 3D
ResNet on the purely temporal family (Deepfakes) and on the purely spatial family (FaceSwap); see
:mod:`dfsearch.data.synthetic` for how each family is made and why the answer is known.

    python -m dfsearch.bench planted [--epochs 15] [--seed 0] [--threads 2] [--per-frame bayar,rahmouni,...]
                                     [--one-pass-clips 2]

Each of the four runs trains through ``dfsearch.train.train_loop`` in this process (no Ray, CPU), selects
its epoch on validation and reports the test AUC.  The planted ranking is recovered when

- temporal family: per-frame AUC <= 0.65 (it cannot see frame order) and 3D ResNet AUC >= 0.85;
- spatial family: both >= 0.85.

Exit status 0 when it is recovered, 1 when not.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from dfsearch import config
from dfsearch.models import presets

# The two detectors: the smoke sweep's 3D ResNet, and Meso4 scoring each frame (mean of per-frame logits).
COMMON = {
    "data.root": "synthetic", "data.clip_len": 8, "data.crop_size": 64, "data.num_workers": 0,
    "optim.name": "adam", "optim.lr": 1e-3, "train.batch_size": 8, "train.amp": False, "eval.batch_size": 32,
    "eval.select_metric": "val/auc",
}
MODELS = {
    "per-frame (Meso4)": presets.PER_FRAME,
    "3D ResNet-10": presets.SMALL_3D,
}
FAMILIES = {  # protocol -> (trace, what each model should reach)
    "single:Deepfakes": "temporal", "single:FaceSwap": "spatial",
}
# A one-pass family (steg_svm) fits on this many random clips of each training video (x 8 frames at the bench's
# clip length): 2 x 8 = 16 frames a video, against the family's default 16 clips (128 frames a video here).
ONE_PASS_CLIPS = 2
CHANCE_MAX = 0.65  # "cannot see it": at most this test AUC
DETECT_MIN = 0.85  # "detects it": at least this test AUC


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dfsearch.bench planted", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=15, help="epochs per run (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default %(default)s)")
    p.add_argument("--per-frame", default="", metavar="NAME,...",
                   help="check these per-frame detectors (model.name) instead of Meso4 and the 3D ResNet")
    p.add_argument("--one-pass-clips", type=int, default=ONE_PASS_CLIPS, metavar="N",
                   help="a one-pass family (steg_svm) is fitted on N clips of each training video, its "
                        "model.<frames_key> (default %(default)s: N x 8 frames a video)")
    return p.parse_args(argv)


def expected(family: str, model: str) -> str:
    if family == "temporal" and model.startswith("per-frame"):
        return f"<= {CHANCE_MAX}"
    return f">= {DETECT_MIN}"


def meets(auc: float, want: str) -> bool:
    bound = float(want.split()[1])
    return auc <= bound if want.startswith("<=") else auc >= bound


def run_one(flat: dict, out: Path) -> tuple[float, float, float]:
    """(test AUC, seconds, mean seconds per epoch (training or the one-pass fit, plus validation)) of one
    plain-Python training run."""
    import json

    from dfsearch.train.loop import LocalSession, train_loop

    t0 = time.perf_counter()
    final = train_loop(config.from_flat(flat), LocalSession(out))
    secs = time.perf_counter() - t0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epochs = [m["time/epoch_s"] for m in lines if "time/epoch_s" in m]  # the last line is the test's
    return final["test/auc"], secs, sum(epochs) / max(len(epochs), 1)


def size(flat: dict) -> str:
    """Parameters of the detector (a one-pass family: its feature dimension, the fitted numbers being one more)."""
    from dfsearch import models

    model = models.create(config.from_flat(flat))
    if models.get(flat["model.name"]).one_pass is not None:
        return f"{model.net.features_dim:,} features"
    return f"{sum(p.numel() for p in model.parameters()):,} params"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from dfsearch import data as dfdata

    torch.set_num_threads(args.threads)
    base = {**COMMON, "train.epochs": args.epochs, "train.seed": args.seed}
    t0 = time.perf_counter()
    info = dfdata.ensure_prepared(config.from_flat(base).data, progress=True)
    print(f"# planted-answer check on SYNTHETIC FF++ ({info.n_videos} videos, {info.root}; data ready in "
          f"{time.perf_counter() - t0:.0f} s); {args.epochs} epochs per run, seed {args.seed}, {args.threads} threads, CPU\n")
    models = MODELS
    if args.per_frame:
        from dfsearch.models import registry

        models = {}
        for name in filter(None, (n.strip() for n in args.per_frame.split(","))):
            one_pass = registry.get(name).one_pass  # fitted in one pass (the config makes it one epoch)
            models[f"per-frame ({name})"] = {"model.name": name,
                                             **({f"model.{one_pass.frames_key}": args.one_pass_clips} if one_pass else {})}
    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="dfsearch-planted-") as tmp:
        for protocol, family in FAMILIES.items():
            for model, keys in models.items():
                flat = {**base, **keys, "protocol.name": protocol}
                auc, secs, per_epoch = run_one(flat, Path(tmp) / f"{protocol}-{model}")
                want = expected(family, model)
                good = meets(auc, want)
                ok &= good
                rows.append((protocol, family, model, size(flat), auc, want, "yes" if good else "NO", per_epoch, secs))
                print(f"  {protocol:18s} {model:22s} test AUC {auc:.3f}  ({secs:.0f} s, {per_epoch:.1f} s/epoch)", flush=True)
    print("\n| protocol | trace | detector | size | test AUC | planted | met | s/epoch | seconds |")
    print("| --- | --- | --- | ---: | ---: | --- | --- | ---: | ---: |")
    for protocol, family, model, n, auc, want, good, per_epoch, secs in rows:
        print(f"| {protocol} | {family} | {model} | {n} | {auc:.3f} | {want} | {good} | {per_epoch:.1f} | {secs:.0f} |")
    print(f"\nplanted ranking recovered: {'yes' if ok else 'NO'} (temporal: per-frame blind, 3D ResNet detects; spatial: both detect)")
    return 0 if ok else 1
