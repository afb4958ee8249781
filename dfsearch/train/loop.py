"""The per-worker training loop: train, validate each epoch, checkpoint, then test the best-on-validation model.

It knows nothing about Ray.  Where metrics and checkpoints go is a :class:`Session`: :class:`LocalSession`
writes folders (plain-Python runs, debugging), ``dfsearch.tune.worker.RaySession`` hands them to Ray Train.
If ``torch.distributed`` is initialised (Ray Train's ``TorchConfig`` does that, dfsearch.tune.driver), the loop runs DDP: each rank trains on its
shard and evaluates a shard of the videos; rank 0 writes checkpoints.

Model selection never sees test data: the test split is evaluated once, at the end, with the weights of the
epoch that scored best on validation (``eval.select_metric``, which a search space sets from ``search.metric``).
Every validation report carries ``val/videos`` and ``val/videos_expected``, the test report ``test/videos`` and
``test/videos_expected``: the videos evaluated and those the protocol's split files list (see
:func:`incomplete_test`).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from dfsearch import data as dfdata
from dfsearch.data import pretext
from dfsearch import models
from dfsearch.config import VAL_METRICS, TrialConfig
from dfsearch.train.checkpoint import HISTORY_FILE, STATE_FILE, best_weights_of
from dfsearch.train.metrics import summarize

log = logging.getLogger(__name__)



class Session(Protocol):
    """Where a run reports to.  ``report`` is called by every rank (``state`` only on rank 0)."""

    def report(self, metrics: dict[str, Any], state: dict | None) -> None: ...

    def load_latest(self) -> dict | None: ...


class LocalSession:
    """Checkpoints as ``out/checkpoints/epoch_NNNN/state.pt`` (written under a temp name, then renamed) and
    metrics as lines of ``out/metrics.jsonl``; keeps the newest ``keep`` checkpoints."""

    def __init__(self, out_dir: str | os.PathLike, keep: int = 2):
        self.out = Path(out_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.keep = keep
        self.ckpt_root.mkdir(parents=True, exist_ok=True)

    def report(self, metrics: dict[str, Any], state: dict | None) -> None:
        if state is not None:
            final = self.ckpt_root / f"epoch_{state['epoch']:04d}"
            tmp = self.ckpt_root / f".tmp_{final.name}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            write_checkpoint(tmp, state)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in sorted(self.ckpt_root.glob("epoch_*"))[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")

    def load_latest(self) -> dict | None:
        done = sorted(self.ckpt_root.glob("epoch_*"))
        return load_state(done[-1]) if done else None


def write_checkpoint(folder: str | os.PathLike, state: dict) -> None:
    torch.save(state, Path(folder) / STATE_FILE)
    (Path(folder) / HISTORY_FILE).write_text(json.dumps(state["history"]))


def load_state(checkpoint_dir: str | os.PathLike) -> dict:
    # Our own checkpoints hold only tensors and plain containers, so the safe loader suffices.
    return torch.load(Path(checkpoint_dir) / STATE_FILE, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------- building blocks


@dataclass
class Ranks:
    """This process's place in the DDP group (rank 0 of 1 when torch.distributed is not initialised)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Ranks":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def gather(self, obj: Any) -> list:
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        # Ray (and torchrun) expose one GPU per worker through CUDA_VISIBLE_DEVICES / LOCAL_RANK.
        local = int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count()
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def make_optimizer(cfg: TrialConfig, params) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def make_scheduler(cfg: TrialConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule of optim.lr: linear warm-up over ``optim.warmup_epochs`` (lr/(w+1), 2·lr/(w+1), ...),
    then cosine to 0 over the remaining epochs, or constant; its state_dict resumes it."""
    from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, SequentialLR

    warm = cfg.optim.warmup_epochs
    if cfg.optim.schedule == "constant":
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)  # the identity schedule
    else:
        main = CosineAnnealingLR(optimizer, T_max=max(1, cfg.train.epochs - warm))
    if warm == 0:
        return main
    warmup = LinearLR(optimizer, start_factor=1.0 / (warm + 1), end_factor=1.0, total_iters=warm)
    return SequentialLR(optimizer, [warmup, main], milestones=[warm])


class Normalizer:
    """uint8 clips -> normalised float on the device (cheaper than normalising in the data workers)."""

    def __init__(self, cfg: TrialConfig, device: torch.device):
        mean, std = models.input_stats(cfg)
        shape = (1, 3, 1, 1, 1)
        self.mean = torch.tensor(mean, device=device).view(shape)
        self.std = torch.tensor(std, device=device).view(shape)
        self.device = device

    channels_last: bool = False  # 3D conv models on CUDA: the batch in torch.channels_last_3d (see use_channels_last)

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips.to(self.device, non_blocking=True).float().div_(255.0)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last and x.dim() == 5 else x


def use_channels_last(model: torch.nn.Module, device: torch.device) -> bool:
    """3D conv models on CUDA train in ``torch.channels_last_3d`` (weights and input): cuDNN's NDHWC kernels,
    1,069 vs 928 clips/s for a bf16 r3d-50 on an H200 (``python -m dfsearch.bench models --device cuda``)."""
    return device.type == "cuda" and any(isinstance(m, torch.nn.Conv3d) for m in model.modules())


def trial_cpus() -> int:
    """The CPUs this training process may use: Ray sets OMP_NUM_THREADS to a worker's CPUs; else the affinity."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_options(num_workers: int, device: torch.device, cpus: int) -> dict[str, Any]:
    """DataLoader settings for a training worker holding ``cpus`` CPUs.  ``data.num_workers`` 0 keeps loading in
    this process.  On CUDA the GPU waits for the data, so the loader gets every CPU but the training process's own
    (at least ``data.num_workers``), pinned memory and a deeper prefetch; on the CPU, loaders and training share
    the cores, so ``data.num_workers`` is capped at the CPUs left to them."""
    if num_workers <= 0:
        return {"num_workers": 0, "pin_memory": device.type == "cuda"}
    spare = max(1, cpus - 1)
    if device.type == "cuda":
        return {"num_workers": max(num_workers, spare), "pin_memory": True, "prefetch_factor": 4}
    return {"num_workers": min(num_workers, spare), "pin_memory": False}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA memory allocated on the device, else the peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


# ----------------------------------------------------------------------------------------------- train / eval


def train_one_epoch(model, loader, optimizer, scaler, loss_weights, norm, cfg: TrialConfig, epoch: int, after_step=None) -> dict[str, float]:
    """One epoch of SGD; ``after_step(model)`` (the detector spec's hook, e.g. a weight constraint) after every step."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    start_wall, start, waited = time.time(), time.perf_counter(), 0.0
    batches = iter(loader)
    for step in itertools.count():
        t = time.perf_counter()
        try:
            clips, labels = next(batches)
        except StopIteration:
            break
        waited += time.perf_counter() - t  # time the step waited for its batch (the loss.item() below syncs the GPU)
        if cfg.train.max_steps_per_epoch and step >= cfg.train.max_steps_per_epoch:
            break
        labels = labels.to(norm.device)
        with autocast(norm.device, cfg.train.amp):
            logits = model(norm(clips))
            loss = F.cross_entropy(logits.float(), labels, weight=loss_weights)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if after_step is not None:
            after_step(unwrap(model))
        total_loss += loss.item() * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        if step % cfg.train.log_every == 0:
            log.info("epoch %d step %d loss %.4f", epoch, step, loss.item())
    # What the training part of the epoch cost (validation apart): python -m dfsearch.bench sweep reads these.
    return {"train/loss": total_loss / max(seen, 1), "train/acc": 100.0 * correct / max(seen, 1), "train/clips": float(seen),
            "time/train_s": time.perf_counter() - start, "time/data_wait_s": waited, "time/train_start": start_wall,
            "time/train_end": time.time()}


def fit_one_pass(model, train_set, norm, cfg: TrialConfig, one_pass) -> dict[str, float]:
    """The epoch of a family fitted in one pass (``DetectorSpec.one_pass``): ``model.<frames_key>`` passes over the
    training videos, one random clip of each per pass, handed to the family's ``fit``.  Every rank draws the same
    clips (seeded by train.seed alone) and so fits the same model."""
    passes = int(getattr(cfg.model.arch, one_pass.frames_key))
    generator = torch.Generator().manual_seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)  # TrainClips draws its randomness from torch's generator

    def batches():
        for _ in range(passes):
            loader = DataLoader(train_set, batch_size=cfg.eval.batch_size, sampler=RandomSampler(train_set, generator=generator),
                                num_workers=cfg.data.num_workers)
            for clips, labels in loader:
                yield norm(clips), labels

    unwrap(model).eval()
    with torch.no_grad():
        return one_pass.fit(unwrap(model), batches(), cfg)


@torch.no_grad()
def video_prob(model, views: torch.Tensor, norm, cfg: TrialConfig) -> float:
    """One video's score: its views (trunks / crops / frames) in batches of eval.batch_size, P(fake) averaged.
    ``dfsearch.predict`` calls this too, so a prediction equals the trial's test score for the same video."""
    probs = []
    for chunk in torch.split(views, cfg.eval.batch_size):
        with autocast(norm.device, cfg.train.amp):
            probs.append(torch.softmax(model(norm(chunk)).float(), dim=1)[:, 1].cpu())
    return float(torch.cat(probs).mean())


@torch.no_grad()
def score_videos(model, dataset, norm, cfg: TrialConfig, ranks: Ranks) -> list[tuple[str, int, float]]:
    """``(video_id, label, P(fake))`` per video of ``dataset``; videos are sharded over ranks and gathered."""
    model = unwrap(model).eval()
    shard = list(range(ranks.rank, len(dataset), ranks.world))
    loader = DataLoader(torch.utils.data.Subset(dataset, shard), batch_size=None, num_workers=cfg.data.num_workers)
    rows = [(str(video_id), int(label), video_prob(model, views, norm, cfg)) for views, label, video_id in loader]
    return [r for part in ranks.gather(rows) for r in part]


def evaluate(model, dataset, norm, cfg: TrialConfig, ranks: Ranks, split: str, rows: list | None = None) -> dict[str, float]:
    """Video-level metrics of ``dataset`` (``rows``: already computed :func:`score_videos` output)."""
    rows = score_videos(model, dataset, norm, cfg, ranks) if rows is None else rows
    scores = np.array([r[2] for r in rows])
    labels = np.array([r[1] for r in rows])
    p_true = np.clip(np.where(labels == 1, scores, 1.0 - scores), 1e-7, 1.0)
    return {**summarize(scores, labels, split), f"{split}/loss": float(-np.log(p_true).mean()) if len(rows) else float("nan")}


def incomplete_test(final: dict) -> str:
    """'' if the final report tested every video the protocol's split files list, else one line saying how
    many it tested (a video missing on disk, one where no face was found, or eval.max_videos)."""
    seen, expected = final.get("test/videos"), final.get("test/videos_expected")
    if seen is None or expected is None or seen >= expected:
        return ""
    return f"test set incomplete: {int(seen)} of {int(expected)} videos evaluated"


def better(candidate: dict, best: dict | None, metric: str) -> bool:
    """Higher TCR/AUC (lower loss) wins; ties go to the lower validation loss."""
    if best is None:
        return True
    sign = -1.0 if VAL_METRICS.get(metric) == "min" else 1.0
    key = lambda m: (sign * m[metric], -m["val/loss"])  # noqa: E731
    return key(candidate) > key(best)


def best_metrics(best: dict) -> dict[str, float]:
    """``best/val/*``: the validation metrics of the epoch chosen so far (``eval.select_metric``).  Every report
    carries them, the final test report included, so Tune's searchers and schedulers always find their metric."""
    return {f"best/{k}": v for k, v in best.items()}


# --------------------------------------------------------------------------------------------------- the loop


def train_loop(cfg: TrialConfig, session: Session) -> dict[str, float]:
    """Train ``cfg`` to the end (resuming from the session's latest checkpoint) and return the test metrics."""
    ranks = Ranks.current()
    torch.manual_seed(cfg.train.seed + ranks.rank)
    np.random.seed(cfg.train.seed + ranks.rank)
    device = pick_device()

    datasets = dfdata.build_datasets(cfg)
    test_sets = dfdata.build_test_sets(cfg)  # data.test_sets: scored after the FF++ test, never for selection
    spec = models.get(cfg.model.name)
    model = models.create(cfg, makers=pretext.MAKERS).to(device)  # pretext:// weights of a --smoke twin
    norm = Normalizer(cfg, device)
    if use_channels_last(model, device):
        model = model.to(memory_format=torch.channels_last_3d)
        norm.channels_last = True
    optimizer = make_optimizer(cfg, model.parameters())
    scheduler = make_scheduler(cfg, optimizer)
    use_fp16_scaler = device.type == "cuda" and cfg.train.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16_scaler)

    start_epoch, best, best_weights, history = 1, None, None, []
    state = session.load_latest()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        best, history = state["best"], state["history"]
        best_weights = best_weights_of(state)
        start_epoch = state["epoch"] + 1
        log.info("resumed from epoch %d (best %s = %.3f at epoch %d)", state["epoch"], cfg.eval.select_metric, best[cfg.eval.select_metric], best["epoch"])

    if ranks.world > 1 and spec.one_pass is None:  # a one-pass fit has no gradients to reduce
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = DistributedSampler(datasets.train, seed=cfg.train.seed) if ranks.world > 1 else None
    loss_weights = datasets.class_weights.to(device)

    for epoch in range(start_epoch, cfg.train.epochs + 1):
        t0 = time.monotonic()
        if sampler is not None:
            sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(cfg.train.seed * 1000 + epoch)
        loader = DataLoader(
            datasets.train,
            batch_size=cfg.train.batch_size,
            sampler=sampler or RandomSampler(datasets.train, generator=generator),
            drop_last=len(datasets.train) > cfg.train.batch_size * ranks.world,
            persistent_workers=False,
            **loader_options(cfg.data.num_workers, device, trial_cpus()),
        )
        metrics = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        if spec.one_pass is not None:
            metrics |= fit_one_pass(model, datasets.train, norm, cfg, spec.one_pass)
        else:
            metrics |= train_one_epoch(model, loader, optimizer, scaler, loss_weights, norm, cfg, epoch, spec.after_step)
            scheduler.step()
        metrics |= evaluate(model, datasets.val, norm, cfg, ranks, "val")
        metrics["val/videos_expected"] = float(datasets.expected["val"])
        metrics["time/epoch_s"] = time.monotonic() - t0
        metrics["mem/peak_mb"] = peak_memory_mb(device)
        is_best = better(metrics, best, cfg.eval.select_metric)
        if is_best:
            best = {k: v for k, v in metrics.items() if k.startswith("val/")} | {"epoch": epoch}
        metrics |= best_metrics(best)
        history.append(metrics)

        state = None
        if ranks.rank == 0:
            weights = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
            if is_best:
                best_weights = weights
            state = {
                "epoch": epoch,
                "model": weights,
                # The best model rides along in every checkpoint (None when it *is* this epoch's model), so a
                # resumed run can still test the best-on-validation weights.
                "best_model": None if is_best else best_weights,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "best": best,
                "history": history,
            }
        session.report(metrics, state)

    # Test once, with the weights that were best on validation.
    if ranks.rank != 0:
        best_weights = None
    if ranks.world > 1:
        holder = [best_weights]
        dist.broadcast_object_list(holder, src=0)
        best_weights = holder[0]
    unwrap(model).load_state_dict(best_weights)
    t0 = time.monotonic()
    rows = score_videos(model, datasets.test, norm, cfg, ranks)
    final = evaluate(model, datasets.test, norm, cfg, ranks, "test", rows)
    final["time/test_s"] = time.monotonic() - t0  # the FF++ test's cost: python -m dfsearch.bench sweep calibrates the estimate with it
    # Honest test sets: what was evaluated next to what the protocol's split files list (complete when equal).
    final["test/videos_expected"] = float(datasets.expected["test"])
    final |= {"epoch": cfg.train.epochs, **best_metrics(best)}
    for name, (dataset, expected) in test_sets.items():  # the same tested weights and test view, beyond FF++
        final |= evaluate(model, dataset, norm, cfg, ranks, f"test/{name}")
        final[f"test/{name}/videos_expected"] = float(expected)
    # Per video, for the MLflow CSV and plots: a JSON string, which Tune's loggers pass over (a list is not a metric).
    final["test_scores"] = json.dumps([list(r) for r in rows])
    session.report(final, None)
    return final


def run_local(cfg: TrialConfig, out_dir: str | os.PathLike) -> dict[str, float]:
    """Plain-Python entry (no Ray): prepare the data if needed, then train in this process."""
    dfdata.ensure_prepared(cfg.data)
    return train_loop(cfg, LocalSession(out_dir))
