"""``python -m dfsearch.bench models``: cost of attention blocks on r3d-50, as ratios to the plain model.

Variants, all measured in the same run on the same device: plain r3d-50, SE after stages 1,2,3,4, non-local
``1,2,3,4`` with the fused kernel (scaled_dot_product_attention), non-local ``1,2,3,4`` with the naive
N×N reference (:func:`nonlocal_naive`), and non-local ``1,2,3,4`` fused with Wang et al.'s φ/g subsampling.

Time: median wall time of a training step (forward + backward), ``--repeats`` steps per variant after
``--warmup`` steps, run round-robin across the variants so background load affects them alike.

Peak memory:
* CUDA: ``torch.cuda.max_memory_allocated`` over one step, minus the memory allocated before it (model,
  input) — the activations, attention buffers and gradients the step needs.
* CPU: the same quantity from the PyTorch profiler's memory accounting (``profile_memory=True``): each
  op's self allocation (net bytes of CPU tensors it allocated minus freed; frees outside ops are
  '[memory]' events) is replayed in time order — net allocations at the op's start, net frees at its end —
  and the running total's maximum is the peak. Tensor-level like CUDA's allocator statistic, unaffected by
  glibc caching or RSS noise; resolution is one op. The profiled step is separate from the timed ones,
  so profiler overhead does not reach the times.

Targets (from the issue): fused NL ``1,2,3,4`` ≤ 1.2× plain memory and ≤ 1.3× plain time.
Only this CLI prints.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import torch
from torch import nn

from dfsearch.models.attention import NonLocal3d

# ------------------------------------------------------------------------------------- naive reference


def nonlocal_naive(block: NonLocal3d, x: torch.Tensor) -> torch.Tensor:
    """The N×N reference of a :class:`NonLocal3d` forward: materialises softmax(θᵀφ·scale) explicitly."""
    q, k, v = block.qkv(x)
    attn = torch.softmax((q @ k.transpose(-2, -1)) * block.softmax_scale, dim=-1)
    return block.project(attn @ v, x)


class NaiveNonLocal3d(NonLocal3d):
    """Same parameters as :class:`NonLocal3d`, naive N×N attention (tests and bench only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nonlocal_naive(self, x)


def use_naive_nonlocal(model: nn.Module) -> int:
    """Switch every NonLocal3d in ``model`` to the naive forward in place; returns how many."""
    n = 0
    for m in model.modules():
        if type(m) is NonLocal3d:
            m.__class__ = NaiveNonLocal3d
            n += 1
    return n


# ---------------------------------------------------------------------------------------------- measure


def _variants(depth: int) -> list[tuple[str, dict, bool]]:
    nl = dict(attention="nonlocal", placement=[1, 2, 3, 4])
    return [
        ("plain", dict(attention="none"), False),
        ("SE 1,2,3,4", dict(attention="se", placement=[1, 2, 3, 4]), False),
        ("NL 1,2,3,4 fused", nl, False),
        ("NL 1,2,3,4 naive", nl, True),
        ("NL 1,2,3,4 fused, subsampled φ/g", dict(nl, nl_subsample=True), False),
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_peak_bytes(fn) -> int:
    """Peak of live CPU tensor bytes allocated while ``fn()`` runs (profiler allocator events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Each op's SELF allocation (children excluded, so nothing is counted twice; frees outside any op are
    # '[memory]' events). Net allocations are placed at the op's start, net frees at its end, so the
    # transient buffers of an op's children are inside the window.
    events = []
    for e in prof.events():
        d = e.self_cpu_memory_usage
        if d:
            events.append((e.time_range.start if d > 0 else e.time_range.end, d))
    events.sort(key=lambda t: t[0])
    cur = peak = 0
    for _, delta in events:
        cur += delta
        peak = max(peak, cur)
    return peak


class Variant:
    """One model of the comparison, with its input and a training step."""

    def __init__(self, name: str, kwargs: dict, naive: bool, args, device: torch.device):
        from dfsearch.models.resnet3d import ResNet3d

        torch.manual_seed(0)
        self.name, self.device = name, device
        self.model = ResNet3d(depth=args.depth, num_classes=2, widen_factor=args.widen, **kwargs).to(device).train()
        if naive:
            use_naive_nonlocal(self.model)
        self.x = torch.randn(args.batch_size, 3, args.frames, args.size, args.size, device=device)
        self.y = torch.zeros(args.batch_size, dtype=torch.long, device=device)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.times: list[float] = []
        self.peak = 0

    def step(self) -> None:
        self.model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()

    def timed_step(self) -> None:
        _sync(self.device)
        t0 = time.perf_counter()
        self.step()
        _sync(self.device)
        self.times.append(time.perf_counter() - t0)

    def measure_memory(self) -> None:
        self.model.zero_grad(set_to_none=True)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            self.step()
            _sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - base
        else:
            self.peak = cpu_peak_bytes(self.step)
        self.model.zero_grad(set_to_none=True)

    def row(self) -> dict:
        return dict(name=self.name, time=statistics.median(self.times), peak=self.peak, params=self.params)


def run(args, device: torch.device, variants) -> list[dict]:
    """Build every variant, warm each up, then time them INTERLEAVED (round-robin, ``repeats`` rounds) so
    that load from other processes hits all variants alike; then measure each one's peak memory alone."""
    built = [Variant(name, kwargs, naive, args, device) for name, kwargs, naive in variants]
    for v in built:
        for _ in range(args.warmup):
            v.step()
    for _ in range(args.repeats):
        for v in built:
            v.timed_step()
    for v in built:
        v.measure_memory()
    return [v.row() for v in built]


def table(rows: list[dict], header: str) -> str:
    base = rows[0]
    out = [header, "", "| model | params (M) | fwd+bwd time (s) | time / plain | peak memory (MiB) | memory / plain |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(
            f"| {r['name']} | {r['params'] / 1e6:.1f} | {r['time']:.3f} | {r['time'] / base['time']:.2f}× | "
            f"{r['peak'] / 2**20:.0f} | {r['peak'] / base['peak']:.2f}× |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dfsearch.bench models", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=None, help="clips per step (default: 1 on CPU, 8 on CUDA)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per variant (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--widen", type=float, default=1.0, help="widen_factor (1.0 = Hara's r3d)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--only", default="", help="comma-separated variant indices to run (0 = plain is always run)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    if args.batch_size is None:
        args.batch_size = 8 if device.type == "cuda" else 1
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = _variants(args.depth)
    if args.only:
        keep = {0} | {int(i) for i in args.only.split(",")}
        variants = [v for i, v in enumerate(variants) if i in keep]
    print(f"benchmarking {len(variants)} variants on {device} ({args.warmup} warm-up + {args.repeats} timed steps each)...",
          file=sys.stderr, flush=True)
    rows = run(args, device, variants)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    mem = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "profiler allocator events"
    print(table(rows, f"r3d-{args.depth} (widen {args.widen}) train step, batch {args.batch_size} × 3×{args.frames}×{args.size}², "
                      f"{dev}, median of {args.repeats} interleaved steps, peak memory via {mem}"))
    fused = next((r for r in rows if r["name"] == "NL 1,2,3,4 fused"), None)
    if fused:
        tm, mm = fused["time"] / rows[0]["time"], fused["peak"] / rows[0]["peak"]
        print(f"\ntargets: fused NL 1,2,3,4 memory {mm:.2f}× (≤ 1.2×: {'met' if mm <= 1.2 else 'NOT met'}), "
              f"time {tm:.2f}× (≤ 1.3×: {'met' if tm <= 1.3 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
