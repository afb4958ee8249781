"""Live progress of a sweep on the console: one line per epoch and per finished trial.

It is a Tune callback (so it lives in the Ray layer) but its only job is what the ``run`` CLI shows.
"""

from __future__ import annotations

import sys
import time

from ray.tune import Callback

from dfsearch.tune.driver import KEPT_KEY


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


class ProgressPrinter(Callback):
    def __init__(self, spec, total_trials: int, epochs: int):
        self.spec = spec
        self.total = total_trials
        self.epochs = epochs  # the most any trial trains; each epoch line says its own trial's

    def _epochs_of(self, trial) -> int:
        """A trial's own ``train.epochs`` (a --smoke twin trains each family its own budget; a one-pass family 1)."""
        try:
            return int(self.spec.resolve(trial.config).get("train.epochs", self.epochs))
        except Exception:  # a config the spec cannot resolve: the sweep's maximum still reads sensibly
            return self.epochs

    def _label(self, trial) -> str:
        flat = self.spec.resolve(trial.config)
        varied = ", ".join(f"{k.split('.', 1)[1]}={flat.get(k)}" for k in self.spec.varied_keys())
        return f"{trial.trial_id}" + (f" ({varied})" if varied else "")

    def _print(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stdout, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._print(f"start  {self._label(trial)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(KEPT_KEY):
            self._print(f"kept   {trial.trial_id}: finished before the interruption (not run again)")
        elif "test/tcr" in result:
            self._print(f"test   {trial.trial_id}: test TCR {_fmt(result['test/tcr'])}  AUC {_fmt(result.get('test/auc'))}  (best epoch {result.get('best/epoch')})")
        elif "val/tcr" in result:
            self._print(
                f"epoch  {trial.trial_id} {result.get('epoch')}/{self._epochs_of(trial)}: train loss {_fmt(result.get('train/loss'))}  "
                f"val TCR {_fmt(result['val/tcr'])}  AUC {_fmt(result.get('val/auc'))}  ({_fmt(result.get('time/epoch_s'))} s)"
            )

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = sum(t.status == "TERMINATED" for t in trials) + (trial.status != "TERMINATED")
        self._print(f"done   {trial.trial_id}  [{done}/{max(self.total, len(trials))} trials]")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(f"ERROR  {self._label(trial)}: see {getattr(trial, 'error_file', None) or 'the trial logs'}")
