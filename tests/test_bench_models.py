"""bench models: FLOPs per variant, time ÷ FLOP ratios, and the bf16 / channels_last_3d / fused-SDPA mode."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from dfsearch.bench import models as B

TINY = dict(depth=10, widen=0.25, frames=4, size=64, batch_size=2, warmup=1, repeats=1)
# B.FAST without bf16: CPU bf16 conv3d has no fast kernel (minutes per step); CPU has SDPA's flash kernel.
CPU_FAST = B.Mode("channels_last_3d + flash/efficient", channels_last=True, fused_sdpa=True)


def test_flops_are_the_algorithms_and_every_ratio_is_computed():
    """Fused and naive non-local do the same FLOPs; NL adds work, φ/g subsampling removes some; a second mode
    (channels_last_3d + SDPA limited to flash/efficient) runs every variant and is compared with fp32 eager."""
    args = argparse.Namespace(**TINY)
    rows = B.run(args, torch.device("cpu"), B._variants(), [B.EAGER, CPU_FAST])
    df = B.table(rows)
    assert len(df) == 10 and (df.error == "").all(), df.error.tolist()
    flops = df[df["mode"] == B.EAGER.name].set_index("name").flops
    assert flops[B.FUSED_NL] == flops["NL 1,2,3,4 naive"]
    assert flops["plain"] < flops["NL 1,2,3,4 fused, subsampled φ/g"] < flops[B.FUSED_NL]
    assert flops["plain"] <= flops["SE 1,2,3,4"] < 1.01 * flops["plain"]
    # forward + backward: more than twice the forward FLOPs
    with torch.device("meta"):
        model = B._build({"attention": "none"}, False, args)
        x = torch.empty(args.batch_size, 3, args.frames, args.size, args.size)
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    assert flops["plain"] > 2 * counter.get_total_flops()

    for _, r in df.iterrows():
        assert r.time > 0 and math.isfinite(r.clips_s)
        assert r.vs_flops == pytest.approx(r.time_ratio / r.flop_ratio)
    plain = df[df.name == "plain"]
    assert (plain.time_ratio == 1.0).all() and (plain.flop_ratio == 1.0).all()
    assert (df[df["mode"] == B.EAGER.name].speedup == 1.0).all()
    text = B.render(df, torch.device("cuda"))  # the CUDA layout: mode column and the speed-up vs fp32 eager
    assert "time÷FLOPs" in text and "vs fp32 eager" in text and CPU_FAST.name in text
    lines = B.goals(df)
    assert any("FLOP-proportional time (goal ≤ 1.0×" in line for line in lines)
    assert any(line.startswith("plain: ") and "fp32 eager" in line for line in lines)


def test_cli_prints_the_table_and_refuses_a_missing_cuda(capsys):
    argv = ["--depth", "10", "--widen", "0.25", "--frames", "4", "--size", "64", "--repeats", "1", "--warmup", "0",
            "--only", "2", "--device", "cpu"]
    assert B.main(argv) == 0
    out = capsys.readouterr().out
    assert "GFLOP/step" in out and "time÷FLOPs" in out and B.FUSED_NL in out and "vs fp32 eager" not in out
    assert "FLOP-proportional time" in out
    if not torch.cuda.is_available():
        assert B.main(["--device", "cuda"]) == 2
        assert "error: --device cuda: this PyTorch sees no CUDA device" in capsys.readouterr().err
    assert B.main(["--device", "tpu"]) == 2
