"""python -m dfsearch.bench prepare — ``prepare`` on one process vs on a 2-node Ray cluster, in the same run.

The same synthetic FF++ tree is face-tracked twice into two caches: by the single-process path
(``prepare ROOT``, one core: OpenCV and torch limited to one thread, as each Ray task is) and by ``prepare
ROOT --address`` on a Ray cluster of ``--nodes`` nodes with ``--cpus-per-node`` CPUs each, started here on
this machine (loopback; ``ray.cluster_utils.Cluster``, Ray's documented tool for a multi-node cluster on one
machine).  Both are timed after a warm-up on the first videos (the detector built, Ray's workers started; those videos
are not counted).  Reported: frames/s of each and their ratio (ideal: the cluster's CPU count, on a machine with
that many idle cores), the one-off cost of joining the cluster with its checks, and the largest box difference
between the two caches (the same boxes: expected 0).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path


def compare_caches(a: Path, b: Path) -> tuple[int, float]:
    """(entries in both, largest |box difference| in px); raises if the two caches hold different videos."""
    import numpy as np

    from dfsearch.data import cache as C

    ea = {p.relative_to(a): p for p in a.rglob("*" + C.SUFFIX)}
    eb = {p.relative_to(b): p for p in b.rglob("*" + C.SUFFIX)}
    if ea.keys() != eb.keys():
        raise SystemExit(f"the caches differ: {len(ea.keys() ^ eb.keys())} video(s) in only one of them")
    worst = 0.0
    for key in ea:
        ba, bb = (np.array(C.read_header(p)[0]["boxes"]) for p in (ea[key], eb[key]))
        worst = max(worst, float(np.abs(ba - bb).max()) if ba.shape == bb.shape else float("inf"))
    return len(ea), worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dfsearch.bench prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=3, help="synthetic identity pairs (default %(default)s: 30 videos)")
    p.add_argument("--frames", type=int, default=96, help="frames per synthetic video (default %(default)s)")
    p.add_argument("--size", type=int, default=128, help="synthetic frame side, px (default %(default)s)")
    p.add_argument("--nodes", type=int, default=2, help="nodes of the local Ray cluster (default %(default)s)")
    p.add_argument("--cpus-per-node", type=int, default=1, help="CPUs each node offers Ray (default %(default)s)")
    args = p.parse_args(argv)
    if args.nodes < 1 or args.cpus_per_node < 1:
        p.error("--nodes and --cpus-per-node must be >= 1")
    logging.getLogger("dfsearch.data").setLevel(logging.ERROR)

    from dfsearch.data.cache_builder import TrackSettings, limit_threads, plan_tree, run_jobs
    from dfsearch.data.synthetic import SyntheticParams, generate_tree

    settings = TrackSettings(detector="opencv")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        root = generate_tree(tmp / "tree", SyntheticParams(pairs=args.pairs, frames=args.frames, size=args.size, seed=0))
        gen_s = time.perf_counter() - t0

        limit_threads()  # one core, as one Ray task gets
        jobs, summary = plan_tree(root, "c40", cache_dir=tmp / "single", settings=settings)
        warm = args.nodes * args.cpus_per_node  # videos prepared first, not timed: detector built, workers started
        run_jobs(jobs[:warm], summary, settings)
        jobs, summary = plan_tree(root, "c40", cache_dir=tmp / "single", settings=settings)
        single = run_jobs(jobs, summary, settings)

        from ray.cluster_utils import Cluster

        from dfsearch.tune import cluster as ray_cluster
        from dfsearch.tune.prepare import prepare_on_cluster

        os.environ.pop("RAY_ADDRESS", None)
        t0 = time.perf_counter()
        local = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus_per_node, "include_dashboard": False})
        try:
            for _ in range(args.nodes - 1):
                local.add_node(num_cpus=args.cpus_per_node)
            local.wait_for_nodes()
            start_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            ray_cluster.connect(local.address, log_to_driver=False)
            jobs, summary = plan_tree(root, "c40", cache_dir=tmp / "cluster", settings=settings)
            prepare_on_cluster(jobs[: 2 * warm], summary, settings, connect=False)  # two per CPU: each node starts its workers
            join_s = time.perf_counter() - t0
            jobs, summary = plan_tree(root, "c40", cache_dir=tmp / "cluster", settings=settings)
            multi = prepare_on_cluster(jobs, summary, settings, connect=False)
        finally:
            ray_cluster.disconnect()
            local.shutdown()
        n, worst = compare_caches(tmp / "single", tmp / "cluster")

    cpus = args.nodes * args.cpus_per_node
    print(f"# dfsearch prepare benchmark (synthetic tree: {single.total} videos x {args.frames} frames at {args.size}² px, "
          f"generated in {gen_s:.1f} s; opencv detector, every {settings.every} frames; {os.cpu_count()} cores on this machine)\n")
    print("| path | videos | frames | seconds | frames/s | vs one process |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| one process (`prepare ROOT`, one core) | {single.done} | {single.frames} | {single.seconds:.1f} | {single.fps:.0f} | 1.00× |")
    print(f"| {args.nodes}-node Ray cluster, {args.cpus_per_node} CPU each (`prepare ROOT --address`) | {multi.done} | "
          f"{multi.frames} | {multi.seconds:.1f} | {multi.fps:.0f} | {multi.fps / single.fps:.2f}× |")
    print(f"\nideal: {cpus}× ({cpus} CPUs) on {cpus} idle cores.  Both timed after a warm-up on the first videos (not counted); "
          f"once per run on the cluster: joining it, its checks (shared cache, videos on every node) and starting the workers "
          f"with the first {2 * warm} videos: {join_s:.1f} s; starting the cluster: {start_s:.1f} s.  Same cache: {n} videos in both, "
          f"largest box difference {worst:.2f} px; failed: {len(single.failed)} / {len(multi.failed)}.  Load average at the end: "
          f"{os.getloadavg()[0]:.1f}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
