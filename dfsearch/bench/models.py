"""``python -m dfsearch.bench models``: cost of attention blocks on r3d-50, as ratios to the plain model.

Variants, all measured in the same run on the same device: plain r3d-50, SE after stages 1,2,3,4, non-local
``1,2,3,4`` with the fused kernel (scaled_dot_product_attention), non-local ``1,2,3,4`` with the naive
N×N reference (:func:`nonlocal_naive`), and non-local ``1,2,3,4`` fused with Wang et al.'s φ/g subsampling.

FLOPs: one training step (forward + backward) counted by ``torch.utils.flop_counter.FlopCounterMode`` on a
meta-device copy (no memory, no compute), so they are the algorithm's FLOPs, the same for the fused and the
naive kernel. Non-local blocks add real work (the block after stage 1 attends over N = 8·28·28 = 6,272
positions), so the goal is stated against FLOPs: ``time ratio ÷ FLOP ratio`` (both vs plain) says how far a
variant runs from FLOP-proportional time; a fused kernel should stay at or below 1.0×.

Time: median wall time of a training step, ``--repeats`` steps per variant after ``--warmup`` steps, run
round-robin across the variants so background load affects them alike.

Modes: ``fp32 eager`` everywhere; with ``--device cuda`` also ``bf16 + channels_last_3d + flash/efficient``
— autocast to bfloat16, weights and input in ``torch.channels_last_3d``, and scaled_dot_product_attention
limited to its FlashAttention and memory-efficient kernels (``torch.nn.attention.sdpa_kernel``), reported
as clips/s and as a speed-up over fp32 eager of the same variant.

Peak memory:
* CUDA: ``torch.cuda.max_memory_allocated`` over one step, minus the memory allocated before it (model,
  input) — the activations, attention buffers and gradients the step needs.
* CPU: the same quantity from the PyTorch profiler's memory accounting (``profile_memory=True``): each
  op's self allocation (net bytes of CPU tensors it allocated minus freed; frees outside ops are
  '[memory]' events) is replayed in time order — net allocations at the op's start, net frees at its end —
  and the running total's maximum is the peak. The profiled step is separate from the timed ones.

Goals: fused NL ``1,2,3,4`` ≤ 1.0× FLOP-proportional time and ≤ 1.2× plain memory. Only this CLI prints.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from dfsearch.errors import ConfigError
from dfsearch.models.attention import NonLocal3d

FUSED_NL = "NL 1,2,3,4 fused"

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


# ------------------------------------------------------------------------------------------------- modes


@dataclass(frozen=True)
class Mode:
    name: str
    bf16: bool = False  # autocast to bfloat16
    channels_last: bool = False  # weights and input in torch.channels_last_3d
    fused_sdpa: bool = False  # SDPA limited to FlashAttention / memory-efficient kernels

    def context(self, device: torch.device) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        if self.bf16:
            stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
        if self.fused_sdpa:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]))
        return stack


EAGER = Mode("fp32 eager")
BF16 = Mode("bf16 + flash/efficient", bf16=True, fused_sdpa=True)
FAST = Mode("bf16 + channels_last_3d + flash/efficient", bf16=True, channels_last=True, fused_sdpa=True)


def modes_for(device: torch.device) -> list[Mode]:
    return [EAGER, BF16, FAST] if device.type == "cuda" else [EAGER]


# ---------------------------------------------------------------------------------------------- measure


def _variants() -> list[tuple[str, dict, bool]]:
    nl = dict(attention="nonlocal", placement=[1, 2, 3, 4])
    return [
        ("plain", dict(attention="none"), False),
        ("SE 1,2,3,4", dict(attention="se", placement=[1, 2, 3, 4]), False),
        (FUSED_NL, nl, False),
        ("NL 1,2,3,4 naive", nl, True),
        ("NL 1,2,3,4 fused, subsampled φ/g", dict(nl, nl_subsample=True), False),
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(kwargs: dict, naive: bool, args) -> nn.Module:
    from dfsearch.models.resnet3d import ResNet3d

    model = ResNet3d(depth=args.depth, num_classes=2, widen_factor=args.widen, **kwargs)
    if naive:
        use_naive_nonlocal(model)
    return model


def step_flops(kwargs: dict, naive: bool, args) -> int:
    """FLOPs of one training step (forward + backward) at ``args``' batch and clip shape, counted on the meta
    device (the architecture's FLOPs: SDPA is counted as its two matmuls, whatever kernel runs it)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = _build(kwargs, naive, args).train()
        x = torch.empty(args.batch_size, 3, args.frames, args.size, args.size)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    return counter.get_total_flops()


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
    """One model of the comparison in one mode, with its input and a training step."""

    def __init__(self, name: str, kwargs: dict, naive: bool, mode: Mode, flops: int, args, device: torch.device):
        torch.manual_seed(0)
        self.name, self.mode, self.flops, self.device = name, mode, flops, device
        self.model = _build(kwargs, naive, args).to(device).train()
        self.x = torch.randn(args.batch_size, 3, args.frames, args.size, args.size, device=device)
        if mode.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
            self.x = self.x.contiguous(memory_format=torch.channels_last_3d)
        self.y = torch.zeros(args.batch_size, dtype=torch.long, device=device)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.times: list[float] = []
        self.peak = 0
        self.error = ""  # why this variant could not run in this mode (e.g. no fused SDPA kernel fits)

    def step(self) -> None:
        self.model.zero_grad(set_to_none=True)
        with self.mode.context(self.device):
            logits = self.model(self.x)
        nn.functional.cross_entropy(logits.float(), self.y).backward()

    def warm_up(self, n: int) -> None:
        try:
            for _ in range(n):
                self.step()
            _sync(self.device)
        except RuntimeError as exc:  # e.g. "No available kernel" when no fused SDPA kernel accepts the shapes
            self.error = str(exc).splitlines()[0][:160]
            self.model.zero_grad(set_to_none=True)

    def timed_step(self) -> None:
        if self.error:
            return
        _sync(self.device)
        t0 = time.perf_counter()
        self.step()
        _sync(self.device)
        self.times.append(time.perf_counter() - t0)

    def measure_memory(self) -> None:
        if self.error:
            return
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
        t = statistics.median(self.times) if self.times else float("nan")
        return dict(name=self.name, mode=self.mode.name, params=self.params, flops=self.flops, time=t,
                    clips_s=self.x.shape[0] / t, peak=self.peak, error=self.error)


def run(args, device: torch.device, variants, modes: list[Mode], progress=None) -> list[dict]:
    """Count each variant's FLOPs, build it in every mode, warm each up, then time them INTERLEAVED (round-robin,
    ``repeats`` rounds) so that load from other processes hits all alike; then measure each one's peak memory."""
    flops = {name: step_flops(kwargs, naive, args) for name, kwargs, naive in variants}
    built = [Variant(name, kwargs, naive, mode, flops[name], args, device) for mode in modes for name, kwargs, naive in variants]
    for v in built:
        v.warm_up(args.warmup)
    for i in range(args.repeats):
        for v in built:
            v.timed_step()
        if progress:
            progress(f"round {i + 1}/{args.repeats} timed")
    for v in built:
        v.measure_memory()
    return [v.row() for v in built]


def table(rows: list[dict]):
    """The rows as a pandas DataFrame with the ratios: vs plain in the same mode, and vs fp32 eager."""
    import pandas as pd

    df = pd.DataFrame(rows)
    plain = df[df.name == "plain"].set_index("mode")
    eager = df[df["mode"] == EAGER.name].set_index("name")
    df["flop_ratio"] = df.flops / df["mode"].map(plain.flops)
    df["time_ratio"] = df.time / df["mode"].map(plain.time)
    df["vs_flops"] = df.time_ratio / df.flop_ratio
    df["mem_ratio"] = df.peak / df["mode"].map(plain.peak)
    df["speedup"] = df.clips_s / df.name.map(eager.clips_s)
    return df


def render(df, device: torch.device) -> str:
    """Plain-text table (pandas ``to_string``)."""
    x = lambda v, d=2: "n/a" if v != v else f"{v:.{d}f}×"  # noqa: E731 - NaN for a variant that could not run
    out = df.assign(
        **{
            "params (M)": (df.params / 1e6).round(1),
            "GFLOP/step": (df.flops / 1e9).round(1),
            "FLOPs/plain": df.flop_ratio.map(x),
            "time (s)": df.time.map(lambda v: "n/a" if v != v else f"{v:.3f}"),
            "clips/s": df.clips_s.map(lambda v: "n/a" if v != v else f"{v:.1f}"),
            "time/plain": df.time_ratio.map(x),
            "time÷FLOPs": df.vs_flops.map(x),
            "peak MiB": (df.peak / 2**20).round(0).astype(int),
            "mem/plain": df.mem_ratio.map(x),
            "vs fp32 eager": df.speedup.map(x),
        }
    )
    cols = ["name", "mode", "params (M)", "GFLOP/step", "FLOPs/plain", "time (s)", "clips/s", "time/plain", "time÷FLOPs",
            "peak MiB", "mem/plain"]
    if device.type == "cuda":
        cols.append("vs fp32 eager")
    else:
        cols.remove("mode")
    return out[cols].rename(columns={"name": "model"}).to_string(index=False)


def goals(df) -> list[str]:
    lines = []
    for _, r in df[df.name == FUSED_NL].iterrows():
        if r.error:
            lines.append(f"{FUSED_NL} [{r['mode']}]: could not run ({r.error})")
            continue
        lines.append(
            f"{FUSED_NL} [{r['mode']}]: time {r.time_ratio:.2f}× plain for {r.flop_ratio:.2f}× the FLOPs = "
            f"{r.vs_flops:.2f}× FLOP-proportional time (goal ≤ 1.0×: {'met' if r.vs_flops <= 1.0 else 'NOT met'}); "
            f"memory {r.mem_ratio:.2f}× plain (goal ≤ 1.2×: {'met' if r.mem_ratio <= 1.2 else 'NOT met'})"
        )
    for _, r in df[(df["mode"] != EAGER.name) & (df.error == "")].iterrows():
        lines.append(f"{r['name']}: {r.clips_s:.1f} clips/s in {r['mode']} = {r.speedup:.2f}× fp32 eager")
    return lines


def main(argv: list[str] | None = None) -> int:
    from dfsearch.cli import guarded

    p = argparse.ArgumentParser(
        prog="python -m dfsearch.bench models", description=__doc__.split("\n")[0],
        epilog="FLOPs are per training step (forward + backward) at the chosen batch; 'time÷FLOPs' is (time/plain) ÷ "
               "(FLOPs/plain): 1.0× = exactly FLOP-proportional. On CUDA every variant also runs in bf16 + "
               "channels_last_3d with SDPA limited to its flash / memory-efficient kernels.",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=None, help="clips per step (default: 1 on CPU, 32 on CUDA)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per variant, median reported (default: 5 on CPU, 20 on CUDA)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--widen", type=float, default=1.0, help="widen_factor (1.0 = Hara's r3d)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--only", default="", help="comma-separated variant indices to run (0 = plain is always run)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    return guarded(lambda: _main(args), debug=args.debug, interrupted="nothing was written; rerun the benchmark")


def _main(args) -> int:
    if args.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device: {args.device!r} is not one of auto, cpu, cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: this PyTorch sees no CUDA device (torch.cuda.is_available() is False)")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    if args.batch_size is None:
        args.batch_size = 32 if device.type == "cuda" else 1
    if args.repeats is None:
        args.repeats = 20 if device.type == "cuda" else 5
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both modes: cuDNN picks its fastest conv algorithms
    variants = _variants()
    if args.only:
        try:
            keep = {0} | {int(i) for i in args.only.split(",")}
        except ValueError:
            raise ConfigError(f"--only: {args.only!r} is not a comma-separated list of variant indices") from None
        variants = [v for i, v in enumerate(variants) if i in keep]
    modes = modes_for(device)
    print(f"benchmarking {len(variants)} variants × {len(modes)} mode(s) on {device} "
          f"({args.warmup} warm-up + {args.repeats} timed steps each)...", file=sys.stderr, flush=True)
    rows = run(args, device, variants, modes, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    df = table(rows)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    mem = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "profiler allocator events"
    print(f"r3d-{args.depth} (widen {args.widen}) train step, batch {args.batch_size} × 3×{args.frames}×{args.size}², {dev}, "
          f"median of {args.repeats} interleaved steps, FLOPs counted on the meta device, peak memory via {mem}\n")
    print(render(df, device))
    print()
    for line in goals(df):
        print(line)
    for _, r in df[df.error != ""].iterrows():
        print(f"{r['name']} [{r['mode']}] did not run: {r.error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
