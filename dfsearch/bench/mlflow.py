"""Tune's callback time per result: MLflow logging inline (what the callback did before) vs recorded and sent
by the background writer (what it does now), against a real ``mlflow server`` behind a proxy that delays every
request (a remote tracking server; default 100 ms).

    python -m dfsearch.bench mlflow [--trials 16] [--epochs 5] [--delay-ms 100]

Both arms drive the sweep's own ``MLflowTrialLogger`` with the same events (start, one result per epoch, the
test result with per-video scores, complete) for ``--trials`` trials.  "inline" times ``handle(event)`` (the
MLflow calls made in the callback, as before); "recorded" times the hook's path (``record``: the event to the
outbox file and the queue).  Reported: the median and 95th percentile per result, and the time the writer then
needed to send everything (it overlaps with training in a real sweep).  Target: recorded median <= 20 ms.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

RESULT = {"train/loss": 0.5, "val/tcr": 80.0, "val/auc": 0.9, "best/val/tcr": 80.0, "val/videos": 100.0, "time/epoch_s": 8.0, "lr": 1e-3}


class DelayProxy:
    """A TCP proxy that holds every chunk a client sends for ``delay_s`` before passing it on (one request, one
    delay, as a distant server would add)."""

    def __init__(self, upstream_port: int, delay_s: float):
        self.upstream_port, self.delay_s = upstream_port, delay_s
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.sock.accept()
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, server, self.delay_s), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, 0.0), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            while data := src.recv(65536):
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def events(trials: int, epochs: int) -> list[tuple[str, dict]]:
    """The events of a sweep, trials interleaved as concurrent trials report."""
    from dfsearch.space import CASE_KEY

    scores = json.dumps([[f"v{i:03d}", i % 2, (i % 7) / 7] for i in range(140)])
    out = [("start", {"trial_id": f"bench_{t:05d}", "config": {CASE_KEY: t}}) for t in range(trials)]
    for epoch in range(1, epochs + 1):
        for t in range(trials):
            result = {**RESULT, "epoch": epoch, "timestamp": time.time()}
            if epoch == epochs:
                result |= {"test/tcr": 75.0, "test/auc": 0.8, "test/videos": 140.0, "test/videos_expected": 140.0, "test_scores": scores}
            out.append(("result", {"trial_id": f"bench_{t:05d}", "config": {CASE_KEY: t}, "result": result}))
    out += [("complete", {"trial_id": f"bench_{t:05d}", "config": {CASE_KEY: t}, "tested": True}) for t in range(trials)]
    return out


def make_logger(uri: str, name: str, trials: int, outbox: str):
    from dfsearch import space
    from dfsearch.models import presets
    from dfsearch.tracking.names import SYNTHETIC_TAG
    from dfsearch.tune.mlflow_log import MLflowTrialLogger

    raw = {"name": name, "data": {"root": "synthetic", "synthetic_pairs": 3}, "model": presets.nested(presets.SMALL_3D),
           "cases": [{"train.seed": t} for t in range(trials)]}
    spec = space.parse(raw, name)
    return MLflowTrialLogger(uri, name, spec, {SYNTHETIC_TAG: "true"}, "/tmp/bench-train", log_best=False, outbox_dir=outbox)


def to_event(kind: str, fields: dict) -> dict:
    from dfsearch.tune.mlflow_log import result_fields

    fields = dict(fields)
    if "result" in fields:
        fields |= result_fields(fields.pop("result"))
    return {"kind": kind, **fields}


def run_arm(logger, evs, recorded: bool) -> tuple[list[float], float]:
    from dfsearch.tracking.outbox import BackgroundWriter, Outbox

    per_result = []
    if recorded:
        logger._writer = BackgroundWriter(Outbox(logger.outbox_dir), logger.handle).start()
        logger._writer.submit({"kind": "setup"})
    else:
        logger.handle({"kind": "setup"})
    for kind, fields in evs:
        t0 = time.perf_counter()
        if recorded:
            logger._writer.submit(to_event(kind, fields))  # what the hook does after reading the trial
        else:
            logger.handle({**to_event(kind, fields), "seq": 0})
        if kind == "result":
            per_result.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    if recorded:
        logger._writer.close()
    return per_result, time.perf_counter() - t0


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dfsearch.bench mlflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--delay-ms", type=float, default=100.0, help="added to every request to the tracking server (default %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import os
    import subprocess
    import sys

    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run ..." line per finished run
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db", "--host", "127.0.0.1",
                                   "--port", str(port), "--workers", "1", "--default-artifact-root", f"{tmp}/artifacts"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for(port, server)
            proxy = DelayProxy(port, args.delay_ms / 1000)
            uri = f"http://127.0.0.1:{proxy.port}"
            print(f"mlflow server on :{port}, behind a {args.delay_ms:g} ms proxy on :{proxy.port}; {args.trials} trials x {args.epochs} epochs")
            rows = []
            for arm, recorded in (("inline (before)", False), ("recorded (now)", True)):
                evs = events(args.trials, args.epochs)
                outbox = Path(tmp) / arm.split()[0]
                logger = make_logger(uri, f"bench-{arm.split()[0]}", args.trials, str(outbox))
                per, drain = run_arm(logger, evs, recorded)
                per.sort()
                rows.append((arm, statistics.median(per), per[int(0.95 * (len(per) - 1))], sum(per) / 1000, drain))
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"\n{'callback path':18s} {'median ms':>10s} {'p95 ms':>8s} {'in callbacks s':>15s} {'then sending s':>15s}")
    for arm, med, p95, total, drain in rows:
        print(f"{arm:18s} {med:10.1f} {p95:8.1f} {total:15.1f} {drain:15.1f}")
    ratio = rows[0][1] / max(rows[1][1], 1e-9)
    print(f"\nmedian callback time per result: {ratio:.0f}x lower recorded than inline; target <= 20 ms: "
          + ("met" if rows[1][1] <= 20 else "NOT met"))
    return 0 if rows[1][1] <= 20 else 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, proc) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("mlflow server exited before it listened")
            time.sleep(0.3)
    raise SystemExit("mlflow server did not start in 90 s")
