"""The per-worker training loop, its metrics, and a plain-Python entry (``python -m dfsearch.train``)."""

from dfsearch.train.loop import LocalSession, Session, run_local, train_loop

__all__ = ["LocalSession", "Session", "run_local", "train_loop"]
