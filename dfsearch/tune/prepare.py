"""``prepare --address``: the face-tracking jobs of :mod:`dfsearch.data.cache_builder` as Ray tasks over every node.

One task per video runs the same :func:`~dfsearch.data.cache_builder.prepare_video` as the single-process path,
so each video's cache entry (or failure record) is written the same way: to a temp name, renamed when complete.
The cache folder must be one every node reaches (checked as ``run --storage`` is, before any video), and so must
the videos.  Resumable as before: the driver only submits videos with no entry and no failure record.

Scheduling: a face_alignment task on a node with a GPU asks for ``gpus_per_task`` of it (fractional, several
tasks share one GPU) and detects there; the other tasks ask for one CPU and detect on it.  The driver keeps twice
as many tasks in flight as the cluster has room for (read again every few seconds, so a node that joins gets work
and a lost node's share shrinks), so a worker starts its next video as soon as one ends, and submits the next
video as one finishes.  A node lost mid-prepare: Ray runs
its unfinished tasks again elsewhere (``max_retries``); the videos it finished are already in the shared cache.
A video whose task is lost more often than that is reported unfinished (no failure record), so the next run
prepares it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import replace
from typing import Callable

import ray

from dfsearch.data.cache_builder import PrepareSummary, TrackSettings, VideoResult, limit_threads, prepare_video
from dfsearch.errors import DfsearchError
from dfsearch.tune import cluster

log = logging.getLogger(__name__)

DEFAULT_GPUS_PER_TASK = 0.25  # four face_alignment tasks share a GPU
MAX_RETRIES = 3  # Ray reruns a task lost with its node (or worker process) this many times
REFRESH_S = 5.0  # how often the driver reads the cluster's resources again
QUEUE_FACTOR = 2  # tasks in flight per slot: a worker's next video is already queued when one ends (no round trip)
SHARED_HINT = ("Every node writes the face crops of its videos to this folder and trials read them from any node, so put the "
               "cache on a folder every node mounts at the same path (ROOT/.dfsearch_cache, or --cache-dir)")


def uses_gpu(settings: TrackSettings) -> bool:
    """Whether tasks may detect on a GPU: face_alignment, unless ``--device cpu`` (OpenCV's detector is CPU only)."""
    return settings.detector == "face_alignment" and (settings.device == "auto" or settings.device.startswith("cuda"))


def task_slots(resources: dict[str, float], settings: TrackSettings, gpus_per_task: float) -> tuple[int, int]:
    """``(GPU tasks, CPU tasks)`` the cluster has room for at once: ``gpus_per_task`` of a GPU (and one CPU) per GPU
    task, one CPU per CPU task; ``--device cuda``: GPU tasks only.  At least one task, so work is queued in Ray while
    no node has room (a node lost, one still joining)."""
    cpus = int(resources.get("CPU", 0) + 1e-9)
    gpus = float(resources.get("GPU", 0.0))
    on_gpu = int(gpus / gpus_per_task + 1e-9) if uses_gpu(settings) and gpus_per_task > 0 else 0
    on_gpu = min(on_gpu, cpus)  # each GPU task also holds a CPU
    on_cpu = 0 if settings.device.startswith("cuda") else cpus - on_gpu
    if on_gpu + on_cpu == 0:
        return (1, 0) if settings.device.startswith("cuda") else (0, 1)
    return on_gpu, on_cpu


def check_args(settings: TrackSettings, gpus_per_task: float, resources: dict[str, float]) -> None:
    if not 0 < gpus_per_task <= 1:
        raise DfsearchError(f"--gpus-per-task {gpus_per_task:g}: expected a fraction of a GPU in (0, 1]")
    if settings.device.startswith("cuda") and settings.detector != "face_alignment":
        raise DfsearchError(f"--device {settings.device}: the {settings.detector} detector runs on the CPU; use --device auto")
    if settings.device.startswith("cuda") and resources.get("GPU", 0) <= 0:
        raise DfsearchError(f"--device {settings.device} but the Ray cluster has no GPU; use --device auto (CPU where a node has none)")
    if resources.get("CPU", 0) < 1:
        raise DfsearchError("the Ray cluster has no CPU for prepare tasks (each task takes one); start its nodes with CPUs")


def _node_check(sources: list[str], detector: str) -> str | None:
    """Runs on one node: None when it can read the sample videos (and has face_alignment's weights), else why not."""
    import os

    missing = [s for s in sources if not os.path.isfile(s)]
    if missing:
        return f"no video {missing[0]}"
    if detector == "face_alignment":
        from dfsearch.data.faces import face_alignment_weight_files

        absent = [p for p, _ in face_alignment_weight_files() if not os.path.isfile(p)]
        if absent:
            return f"face-alignment weights missing: {', '.join(absent)}"
    return None


def check_nodes(jobs: list[tuple], settings: TrackSettings, timeout_s: float = 120.0) -> int:
    """Every alive node sees the videos (the first and the last job's) and, for face_alignment, its weights."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    sample = sorted({jobs[0][1], jobs[-1][1]})
    task = ray.remote(num_cpus=0, max_retries=0)(_node_check)
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(sample, settings.detector)
            for n in nodes]
    try:
        answers = ray.get(refs, timeout=timeout_s)
    except Exception as exc:  # GetTimeoutError, a node lost meanwhile, ...
        raise DfsearchError(f"could not ask every node whether it sees the videos ({str(exc).strip().splitlines()[0][:300]})") from None
    blind = [f"{n.get('NodeManagerAddress')} (node {n['NodeID'][:8]}: {why})" for n, why in zip(nodes, answers) if why]
    if blind:
        raise DfsearchError(f"{len(blind)} of {len(nodes)} node(s) cannot prepare these videos: " + "; ".join(blind)
                            + ". Every node reads the videos at the driver's path: mount the dataset at the same path on each node")
    return len(nodes)


def _prepare_task(job: tuple, device: str) -> tuple[str, VideoResult]:
    """One video, on whatever node Ray picked: ``(node id, result)``."""
    limit_threads()
    video_id, src, dst, settings = job
    res = prepare_video(video_id, src, dst, replace(settings, device=device))
    return ray.get_runtime_context().get_node_id(), res


def prepare_on_cluster(jobs: list[tuple], summary: PrepareSummary, settings: TrackSettings, *, address: str | None = "auto",
                       gpus_per_task: float = DEFAULT_GPUS_PER_TASK, progress: bool = False, desc: str = "prepare",
                       on_result: Callable[[str, VideoResult, PrepareSummary], None] | None = None,
                       connect: bool = True) -> PrepareSummary:
    """Run the ``(video_id, src, dst, settings)`` ``jobs`` as Ray tasks on the cluster at ``address`` (joined here and
    left at the end unless ``connect`` is False: the caller holds the connection), recording each result in
    ``summary``.  ``on_result(node_id, result, summary)`` is called after each video (tests, benchmarks)."""
    if not jobs:
        return summary
    if connect:
        cluster.connect(address, log_to_driver=False)
    try:
        resources = ray.cluster_resources()
        check_args(settings, gpus_per_task, resources)
        cluster.check_shared(summary.cache_dir, flag="the cache", hint=SHARED_HINT)
        check_nodes(jobs, settings)
        return _run(jobs, summary, settings, gpus_per_task, progress, desc, on_result)
    finally:
        if connect:
            cluster.disconnect()


def _run(jobs, summary, settings, gpus_per_task, progress, desc, on_result) -> PrepareSummary:
    task = ray.remote(max_retries=MAX_RETRIES)(_prepare_task)
    gpu_device = settings.device if settings.device.startswith("cuda") else "cuda"
    todo = deque(jobs)
    inflight: dict = {}  # ObjectRef -> (job, on GPU?)
    nodes: set[str] = set()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=desc, unit="video", smoothing=0.1)
    t0 = time.perf_counter()
    slots, read_at = (0, 0), -REFRESH_S
    try:
        while todo or inflight:
            if time.monotonic() - read_at >= REFRESH_S:
                slots, read_at = task_slots(ray.cluster_resources(), settings, gpus_per_task), time.monotonic()
            on_gpu = sum(g for _, g in inflight.values())
            while todo and on_gpu < QUEUE_FACTOR * slots[0]:
                job = todo.popleft()
                inflight[task.options(num_cpus=1, num_gpus=gpus_per_task).remote(job, gpu_device)] = (job, True)
                on_gpu += 1
            while todo and len(inflight) - on_gpu < QUEUE_FACTOR * slots[1]:
                job = todo.popleft()
                inflight[task.options(num_cpus=1).remote(job, "cpu")] = (job, False)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                job, _ = inflight.pop(ref)
                try:
                    node, res = ray.get(ref)
                except ray.exceptions.RayError as exc:  # lost more than MAX_RETRIES times: no failure record, the next run retries
                    why = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                    summary.unfinished[job[0]] = why
                    log.warning("%s not finished: %s", job[0], why)
                    node, res = "", None
                if res is not None:
                    summary.record(res)
                    nodes.add(node)
                    if on_result is not None:
                        on_result(node, res, summary)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(failed=len(summary.failed), nodes=len(nodes), **({"lost": len(summary.unfinished)} if summary.unfinished else {}))
    except BaseException:
        for ref in inflight:  # an interrupted driver: nothing left running for it (entries are atomic, none half-written)
            ray.cancel(ref, force=True)
        raise
    finally:
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - t0
    return summary
