"""Connecting to Ray: a local cluster by default, or an existing one (``--address auto`` / ``host:port``).

An unreachable address must fail in seconds with a message that names it, not hang in Ray's retry loop.
"""

from __future__ import annotations

import logging
import os
import socket

import uuid

import ray

from dfsearch import storage
from dfsearch.errors import DfsearchError

log = logging.getLogger(__name__)

DEFAULT_GCS_PORT = 6379

# Ray Train V2 settings, read from the environment of Train's controller (Train hands the RAY_TRAIN_* variables
# of the trial actor on to it).  Every trial pays them, so they are part of the job's runtime env; a value set
# in the user's shell wins.  `python -m dfsearch.bench ray` measures each one.
TRAIN_ENV = {
    # The controller polls its workers every 2 s by default, and a worker's `ray.train.report` waits for that
    # poll (one-slot queue): with per-epoch and test reports that puts ~2 s per report, ~6 s per trial, on the
    # critical path.  A poll is one small RPC per worker.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
}
# A local cluster is this machine alone: none of its nodes is ever preempted (drained), so Train's preemption
# watcher, one more actor process per trial started just as the workers start training, only costs CPU there.
# On a real cluster it stays on: it makes a spot preemption a retry of its own (FailureConfig.max_preemption_failures)
# instead of one of the trial's max_failures.
LOCAL_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def _free_port() -> int:
    """A TCP port free on this machine now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_address(address: str | None) -> None:
    """Fail in seconds on an address nobody listens on (before data preparation or any trial)."""
    if address not in (None, "", "local", "auto") and not address.startswith("ray://"):
        _check_reachable(address)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    host, _, port = address.rpartition(":")
    if not host:
        host, port = address, str(DEFAULT_GCS_PORT)
    try:
        port_number = int(port)
    except ValueError:
        raise DfsearchError(f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379), 'auto' or 'local'") from None
    try:
        with socket.create_connection((host, port_number), timeout=timeout):
            pass
    except OSError as exc:
        raise DfsearchError(f"cannot reach the Ray cluster at {host}:{port_number} ({exc.strerror or exc}); is `ray start --head` running there?") from None


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None, log_to_driver: bool = True) -> dict:
    """Start or join Ray.  ``None``/``local``: a fresh local cluster (``num_cpus`` / ``num_gpus``: its resources,
    default what Ray detects); ``auto``: the cluster this machine belongs to (``ray start``); ``HOST:PORT``: that
    cluster's GCS.  Returns the cluster's resources."""
    if ray.is_initialized():
        return ray.cluster_resources()
    # Workers of a cluster started with `ray start` do not see this shell's environment: hand them our own
    # settings (data cache, weights folder, ...) so they resolve the same paths as the driver did.
    local = address in (None, "", "local")
    shell = {k: v for k, v in os.environ.items() if k.startswith(("DFSEARCH_", "RAY_TRAIN_"))}
    env_vars = {**TRAIN_ENV, **(LOCAL_TRAIN_ENV if local else {}), **shell}
    kwargs = {"log_to_driver": log_to_driver, "configure_logging": True, "logging_level": logging.WARNING,
              "runtime_env": {"env_vars": env_vars}}
    if local:
        # RAY_ADDRESS would silently turn a local run into a cluster run; local means local.
        os.environ.pop("RAY_ADDRESS", None)
        # Ray Train's placement-group cleaner (a detached actor) asks the state API whether its trial's controller
        # lives, finding the API by address; with two local clusters on this machine (two sweeps, two test
        # processes) it cannot tell which is its own, gives up, and a trial stopped mid-run (ASHA) keeps its
        # CPUs for good: the next trial's workers never start.  Give every worker the API's URL: the dashboard
        # on a port chosen here (RAY_API_SERVER_ADDRESS, read by Ray's state API client before any guessing).
        port = _free_port()
        kwargs["runtime_env"]["env_vars"]["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        # address="local": a new instance even where `ray start` runs on this machine (without it Ray joins that one)
        context = ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=True, dashboard_port=port, **kwargs)
        if context.dashboard_url and not str(context.dashboard_url).endswith(f":{port}"):
            log.warning("Ray's dashboard took %s, not port %d: with another local Ray cluster on this machine, a trial "
                        "stopped mid-run may keep its CPUs", context.dashboard_url, port)
    else:
        check_address(address)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "a running cluster on this machine (`ray start --head` first)" if address == "auto" else address
            raise DfsearchError(f"cannot connect to the Ray cluster at {where}: {str(exc).splitlines()[0]}") from None
    resources = ray.cluster_resources()
    log.info("Ray cluster: %s", resources)
    return resources


def check_fits(per_trial: dict[str, float], cluster: dict[str, float], where: str = "the cluster has") -> None:
    """A trial that can never be scheduled would wait forever: say so before starting."""
    for kind, need in per_trial.items():
        have = cluster.get(kind, 0.0)
        if need > have:
            raise DfsearchError(
                f"each trial asks for {need:g} {kind} (resources: workers x {kind.lower()}s_per_worker) but {where} {have:g}; "
                f"lower resources.workers / resources.{kind.lower()}s_per_worker or add nodes"
            )


def local_upper_bound(num_cpus: int | None) -> dict[str, float] | None:
    """At most what a local cluster started here would have, known before Ray starts (seconds earlier): ``--num-cpus``
    or every CPU; no GPU when this machine certainly has none Ray could count (no NVIDIA or AMD device node, and torch,
    if imported, sees no CUDA device).  None when it cannot tell (Ray's resources overridden, or a device is there):
    then :func:`check_fits` decides after Ray started, on what Ray reports."""
    import glob
    import sys

    if os.environ.get("RAY_OVERRIDE_RESOURCES") or os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1", "NoDevFiles"):
        return None
    if glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd"):
        return None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return None
    return {"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": 0.0}


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()


def _probe(location: str, token: str) -> str | None:
    """Runs on one node: None when it reads back what the driver wrote at ``location``, else why not."""
    try:
        found = storage.read_text(location)
    except FileNotFoundError:
        return "the file is not there"
    except Exception as exc:  # credentials, network, permissions: any reason the node cannot read it
        return storage.first_line(exc)
    return None if found == token else "it holds another file of that name"


def check_shared(location: str, timeout_s: float = 120.0, *, flag: str = "--storage", hint: str = "") -> int:
    """The driver can write to the storage, and, on a cluster of several nodes, make sure every node sees the storage as the driver does: the driver
    writes a file there and a task pinned to each node reads it back.  Returns the number of nodes checked;
    raises :class:`DfsearchError` naming the nodes that cannot see it (``flag`` names the option that chose the
    location, ``hint`` replaces the sweep's advice at the end of the message)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    storage.check_writable(location)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return len(nodes)
    token = uuid.uuid4().hex
    probe = storage.join(location, f"{storage.PROBE_PREFIX}{token}")
    storage.write_text(probe, token)
    try:
        task = ray.remote(num_cpus=0, max_retries=0)(_probe)
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(probe, token) for n in nodes]
        try:
            answers = ray.get(refs, timeout=timeout_s)
        except Exception as exc:  # GetTimeoutError, a node lost meanwhile, ...
            raise DfsearchError(f"{flag} {location}: could not ask every node whether it sees the storage ({storage.first_line(exc)})") from None
    finally:
        storage.delete(probe)
    blind = [f"{n.get('NodeManagerAddress')} (node {n['NodeID'][:8]}: {why})" for n, why in zip(nodes, answers) if why]
    if blind:
        kind = "URI" if storage.is_uri(location) else "folder"
        hint = hint or (f"Every node writes its trials' checkpoints to this {kind}, and a trial that moves to another node reads them back, "
                        "so pass --storage (or DFSEARCH_STORAGE) a folder that every node mounts at the same path, or a URI such as s3://bucket/sweeps")
        raise DfsearchError(
            f"storage {location} is not shared: {len(blind)} of {len(nodes)} node(s) cannot read the file the driver wrote there: "
            + "; ".join(blind) + ". " + hint
        )
    return len(nodes)
