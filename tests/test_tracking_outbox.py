"""MLflow logging off Tune's loop (dfsearch.tracking.outbox): recorded to disk at once, sent in order by one
thread, retried while the tracking server is away, resent after a crash."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfsearch.tracking.outbox import BackgroundWriter, Outbox, is_transient


def test_outbox_keeps_what_was_not_sent_and_survives_a_cut_line(tmp_path):
    box = Outbox(tmp_path)
    for i in range(3):
        box.append({"kind": "result", "i": i})
    box.mark_done(1)
    with open(box.events, "a") as f:
        f.write('{"kind": "res')  # a writer killed mid-line
    again = Outbox(tmp_path)  # the next process
    assert [e["i"] for e in again.pending()] == [1, 2]
    assert again.append({"kind": "start"})["seq"] == 4  # numbering goes on
    again.clear()
    assert Outbox(tmp_path).pending() == []


def test_a_bug_is_not_retried_a_server_away_is():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

    assert is_transient(ConnectionRefusedError())
    assert is_transient(MlflowException("API request failed", error_code=INTERNAL_ERROR))
    assert not is_transient(MlflowException("bad", error_code=INVALID_PARAMETER_VALUE))
    assert not is_transient(KeyError("a bug of ours"))


def test_events_are_sent_in_order_and_a_failing_one_does_not_block_the_rest(tmp_path):
    sent, failures = [], {"n": 0}

    def handle(event):
        if event["i"] == 1 and failures["n"] < 2:  # transient twice, then through
            failures["n"] += 1
            raise ConnectionResetError("server went away")
        if event["i"] == 3:
            raise ValueError("a bug")  # dropped with a warning
        sent.append(event["i"])

    writer = BackgroundWriter(Outbox(tmp_path), handle, first_wait_s=0.01).start()
    for i in range(5):
        writer.submit({"kind": "result", "i": i})
    writer.close()
    assert sent == [0, 1, 2, 4] and writer.retries == 2
    assert Outbox(tmp_path).pending() == []


# ------------------------------------------------------------------------------------- a real MLflow server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1", "--default-artifact-root", str(db.parent / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240  # MLflow 3's server starts job consumers too: minutes on a loaded 2-core machine
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            assert proc.poll() is None, "mlflow server exited"
            time.sleep(0.3)
    stop_server(proc)  # its workers too, or they outlive the test
    raise RuntimeError("mlflow server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGKILL the server's whole group (uvicorn and MLflow's job consumers outlive the `mlflow server` process)."""
    with contextlib.suppress(ProcessLookupError):  # a group already gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_a_tracking_server_away_for_a_while_delays_the_logging_and_loses_nothing(tmp_path, monkeypatch):
    """A real `mlflow server`, stopped mid-way and started again: events recorded meanwhile return at once,
    wait, and reach MLflow when it is back; a second process sends what the first left unsent."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    db, port = tmp_path / "mlflow.db", free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(db, port)
    try:
        client = MlflowClient(uri)
        # (with MLflow's own retries and timeout: a new server's first request can take seconds on a busy machine)
        run_id = client.create_run(client.create_experiment("outbox")).info.run_id
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # from here our writer retries, not MLflow's client
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")  # a refused connection fails at once anyway

        def handle(event):
            client.log_batch(run_id, metrics=[Metric("val/tcr", float(event["i"]), 1000 + event["i"], event["i"])])

        writer = BackgroundWriter(Outbox(tmp_path / "sweep"), handle, first_wait_s=0.2, max_wait_s=1.0).start()
        for i in range(3):
            writer.submit({"kind": "result", "i": i})
        writer.flush()
        stop_server(server)
        t0 = time.monotonic()
        for i in range(3, 6):
            writer.submit({"kind": "result", "i": i})
        assert time.monotonic() - t0 < 0.5  # the caller (Tune's loop) does not wait for the server
        time.sleep(3)
        assert writer.pending() > 0 and writer.retries > 0
        server = start_server(db, port)
        writer.close()
        assert [m.step for m in client.get_metric_history(run_id, "val/tcr")] == list(range(6))

        # A process killed with events recorded but not sent: the next one sends them first, once each.
        box = Outbox(tmp_path / "crashed")
        for i in range(6, 9):
            box.append({"kind": "result", "i": i})
        BackgroundWriter(Outbox(tmp_path / "crashed"), handle).start().close()
        assert [m.step for m in client.get_metric_history(run_id, "val/tcr")] == list(range(9))
    finally:
        stop_server(server)
