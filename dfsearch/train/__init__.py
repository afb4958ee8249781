"""The per-worker training loop, its metrics, its checkpoint format, and a plain-Python entry (``python -m dfsearch.train``).

The loop (and torch) is imported on first use, so :mod:`dfsearch.train.checkpoint` reads checkpoints without it.
"""

__all__ = ["LocalSession", "Session", "run_local", "train_loop"]


def __getattr__(name):
    if name in __all__:
        from dfsearch.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'dfsearch.train' has no attribute {name!r}")
