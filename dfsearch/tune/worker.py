"""What runs inside each Ray Train worker: the plain training loop, reporting through Ray Train.

Only Train workers import this module (through ``dfsearch.tune.driver.train_loop_per_worker``), so it may
import the whole training stack at the top.
"""

from __future__ import annotations

import tempfile
from typing import Any

import ray.train

from dfsearch import config
from dfsearch.train.loop import load_state, train_loop, write_checkpoint


class RaySession:
    """A :class:`dfsearch.train.Session` backed by ``ray.train.report`` / ``ray.train.get_checkpoint``."""

    def report(self, metrics: dict[str, Any], state: dict | None) -> None:
        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint(tmp, state)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def load_latest(self) -> dict | None:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return load_state(folder)


def run_worker(flat_config: dict[str, Any]) -> None:
    train_loop(config.from_flat(flat_config), RaySession())
