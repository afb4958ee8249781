"""Connecting to Ray: a local cluster by default, or an existing one (``--address auto`` / ``host:port``).

An unreachable address must fail in seconds with a message that names it, not hang in Ray's retry loop.
"""

from __future__ import annotations

import logging
import os
import socket

import ray

from dfsearch.errors import DfsearchError

log = logging.getLogger(__name__)

DEFAULT_GCS_PORT = 6379


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


def connect(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = True) -> dict:
    """Start or join Ray.  ``None``/``local``: a fresh local cluster; ``auto``: the cluster this machine
    belongs to (``ray start``); ``HOST:PORT``: that cluster's GCS.  Returns the cluster's resources."""
    if ray.is_initialized():
        return ray.cluster_resources()
    # Workers of a cluster started with `ray start` do not see this shell's environment: hand them our own
    # settings (data cache, weights folder, ...) so they resolve the same paths as the driver did.
    env_vars = {k: v for k, v in os.environ.items() if k.startswith("DFSEARCH_")}
    kwargs = {"log_to_driver": log_to_driver, "configure_logging": True, "logging_level": logging.WARNING,
              "runtime_env": {"env_vars": env_vars}}
    if address in (None, "", "local"):
        # RAY_ADDRESS would silently turn a local run into a cluster run; local means local.
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(num_cpus=num_cpus, include_dashboard=True, **kwargs)
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


def check_fits(per_trial: dict[str, float], cluster: dict[str, float]) -> None:
    """A trial that can never be scheduled would wait forever: say so before starting."""
    for kind, need in per_trial.items():
        have = cluster.get(kind, 0.0)
        if need > have:
            raise DfsearchError(
                f"each trial asks for {need:g} {kind} (resources: workers x {kind.lower()}s_per_worker) but the cluster has {have:g}; "
                f"lower resources.workers / resources.{kind.lower()}s_per_worker or add nodes"
            )


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()
