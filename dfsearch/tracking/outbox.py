"""MLflow logging off the caller's thread, durable across a crash and patient with a server that is away.

The sweep driver's Tune callback must return in milliseconds: every MLflow call is a network round trip to a
tracking server, and Tune's event loop waits for its callbacks.  So the callback only *records* an event:

* :class:`Outbox` appends it to a JSON-lines file in the sweep folder (flushed to the OS, so a SIGKILL of the
  driver loses nothing) and remembers, in a second file, the last event that reached MLflow;
* :class:`BackgroundWriter` sends events from one thread, in order (so a run's events keep their order), and
  retries a call that failed for a transient reason (server down, timeout, locked database) with backoff,
  until it goes through: a tracking server that is away for minutes delays the logging, it fails no trial.

After a crash, the events recorded but not yet sent are sent first (``--resume``).  An event may then reach
MLflow twice (sent, then killed before it was marked done): the events are written so that this changes
nothing (metrics carry their own timestamp and MLflow keeps one row per identical metric; tags, params and
artifacts overwrite; runs are found by tags before one is created).

No Ray and no MLflow here: the handler that turns an event into MLflow calls is the caller's.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

# MLflow error codes of a server that is away, overloaded or failing: worth waiting for.
TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}
# Exception types (by name, anywhere in the class's ancestry) of a connection that failed or timed out, or of a
# database that is locked or gone for a moment (SQLAlchemy's OperationalError).
TRANSIENT_TYPES = {"OSError", "ConnectionError", "TimeoutError", "Timeout", "OperationalError"}


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the server or the database is away, not the request wrong (nor a bug of ours)."""
    code = getattr(exc, "error_code", None)
    if code is not None:
        return code in TRANSIENT_CODES
    return bool({c.__name__ for c in type(exc).__mro__} & TRANSIENT_TYPES)


class Outbox:
    """``<folder>/mlflow-outbox.jsonl`` (one event a line, numbered) and ``mlflow-outbox.done`` (the number of
    the last event sent)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.events = self.folder / "mlflow-outbox.jsonl"
        self.done_file = self.folder / "mlflow-outbox.done"
        self._lock = threading.Lock()
        self._last = max((e["seq"] for e in self._read()), default=0)

    def _read(self) -> list[dict]:
        if not self.events.is_file():
            return []
        out = []
        with open(self.events) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:  # the last line of a file whose writer was killed mid-line
                    log.warning("%s: skipping an unreadable line (cut short by a crash)", self.events)
        return out

    def done(self) -> int:
        try:
            return int(self.done_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def append(self, event: dict) -> dict:
        with self._lock:
            self._last += 1
            event = {**event, "seq": self._last}
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.events, "a") as f:
                f.write(json.dumps(event, default=str) + "\n")
        return event

    def pending(self) -> list[dict]:
        done = self.done()
        return [e for e in self._read() if e["seq"] > done]

    def mark_done(self, seq: int) -> None:
        tmp = self.done_file.with_name(self.done_file.name + ".tmp")
        tmp.write_text(str(seq))
        os.replace(tmp, self.done_file)

    def clear(self) -> None:
        """Everything was sent: start the next run of the sweep with empty files."""
        with self._lock:
            for path in (self.events, self.done_file):
                path.unlink(missing_ok=True)
            self._last = 0


class BackgroundWriter:
    """One thread that hands each recorded event to ``handle`` in order, retrying transient failures."""

    def __init__(self, outbox: Outbox, handle: Callable[[dict], None], *, first_wait_s: float = 1.0, max_wait_s: float = 30.0):
        self.outbox = outbox
        self.handle = handle
        self.first_wait_s, self.max_wait_s = first_wait_s, max_wait_s
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="dfsearch-mlflow-writer", daemon=True)
        self.retries = 0  # transient failures so far (for tests and the flush message)

    def start(self) -> "BackgroundWriter":
        """Start sending: first whatever an earlier process recorded and did not send."""
        for event in self.outbox.pending():
            self._queue.put(event)
        self._thread.start()
        return self

    def submit(self, event: dict) -> None:
        self._queue.put(self.outbox.append(event))

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                self._send(event)
            finally:
                self._queue.task_done()

    def _send(self, event: dict) -> None:
        wait = self.first_wait_s
        while True:
            try:
                self.handle(event)
                break
            except Exception as exc:  # MLflow raises many types (HTTP, SQL, OS)
                if not is_transient(exc):
                    log.warning("a %s event of trial %s could not be logged to MLflow and is dropped: %s: %s", event.get("kind"),
                                event.get("trial_id", "-"), type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.INFO))
                    break
                self.retries += 1
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                log.warning("MLflow call failed (%s); retrying in %.0f s, the sweep goes on", first, wait)
                time.sleep(wait)
                wait = min(self.max_wait_s, wait * 2)
        self.outbox.mark_done(event["seq"])

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def flush(self, say: Callable[[str], None] = log.warning, every_s: float = 30.0) -> None:
        """Wait until every recorded event is in MLflow (saying so every ``every_s`` while it waits)."""
        waited = 0.0
        while self._queue.unfinished_tasks:
            time.sleep(0.05)
            waited += 0.05
            if waited >= every_s:
                say(f"waiting for MLflow: {self._queue.unfinished_tasks} event(s) not written yet")
                waited = 0.0

    def close(self) -> None:
        """Flush, then stop the thread."""
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=10)
