"""What Ray loads outside the Train workers stays light.

Every Tune trial actor imports ``dfsearch.tune.driver`` (it unpickles the trainable) and builds a
``TorchTrainer`` whose worker entry is pickled by reference; only the workers call that entry.  If the driver
imported the training stack, every trial would pay seconds of imports in its trial actor before Train even
starts (issue 12).  Each check runs in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Heavy packages only the workers (or the sweep driver, for MLflow) may import, and our own training stack.
HEAVY = ("timm", "torchvision", "cv2", "av", "mlflow", "dfsearch.models", "dfsearch.data", "dfsearch.train.loop")

# A fresh interpreter that does what a Tune trial actor does before ``TorchTrainer.fit()``: unpickle the trial
# function with its settings (and, inside them, the worker entry that Train's controller and workers get by
# reference), then resolve the trial's config.  It prints the heavy modules it ended up with, then those it has
# after importing what the worker entry imports (so the first list is empty because of the driver, not because
# the training stack never loads).
TRIAL_ACTOR = """
import json, sys
import cloudpickle
run_trial, settings, entry, backend = cloudpickle.loads(sys.stdin.buffer.read())
assert entry.__module__ == "dfsearch.tune.driver" and callable(run_trial)
settings.spec.resolve({})
actor = sorted(m for m in HEAVY if m in sys.modules)
import dfsearch.tune.worker
print(json.dumps([actor, sorted(m for m in HEAVY if m in sys.modules)]))
"""


def test_trial_driver_and_worker_entry_import_no_training_stack():
    import cloudpickle

    from dfsearch import space
    from dfsearch.tune import driver
    from dfsearch.tune.backend import DeviceTorchConfig

    # Pickled here, as the sweep driver does (it has parsed the space, so it has the zoo loaded).
    spec = space.parse({"name": "imports", "model": {"name": "xception"}, "train": {"epochs": 1}}, "test")
    settings = driver.DriverSettings(train_storage="/tmp/unused", spec=spec)
    # The torch backend config is what Train's controller unpickles of ours (with Ray's TuneReportCallback).
    shipped = cloudpickle.dumps((driver.run_trial, settings, driver.train_loop_per_worker, DeviceTorchConfig()))
    out = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{TRIAL_ACTOR}"], input=shipped, capture_output=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    in_trial_actor, in_worker = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert in_trial_actor == []
    assert {"dfsearch.train.loop", "dfsearch.models", "dfsearch.data"} <= set(in_worker)
