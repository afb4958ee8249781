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
# reference), then resolve the trial's config.  Prints the heavy modules it ended up with.
TRIAL_ACTOR = """
import json, sys
import cloudpickle
run_trial, settings, entry = cloudpickle.loads(sys.stdin.buffer.read())
assert entry.__module__ == "dfsearch.tune.driver" and callable(run_trial)
settings.spec.resolve({})
print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
"""


def loaded_after(code: str, stdin: bytes = b"") -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{code}"], input=stdin, capture_output=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def test_trial_driver_and_worker_entry_import_no_training_stack():
    import cloudpickle

    from dfsearch import space
    from dfsearch.tune import driver

    # Pickled here, as the sweep driver does (it has parsed the space, so it has the zoo loaded).
    spec = space.parse({"name": "imports", "model": {"name": "xception"}, "train": {"epochs": 1}}, "test")
    settings = driver.DriverSettings(train_storage="/tmp/unused", spec=spec)
    shipped = cloudpickle.dumps((driver.run_trial, settings, driver.train_loop_per_worker))
    assert loaded_after(TRIAL_ACTOR, shipped) == []


def test_worker_module_is_where_the_training_stack_lives():
    # The other side of the pattern: the module the worker entry imports does bring the loop in, so the
    # check above is about the driver, not about a training stack that never loads.
    loaded = loaded_after("import sys, dfsearch.tune.worker\nimport json\nprint(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))")
    assert "dfsearch.train.loop" in loaded and "dfsearch.models" in loaded
