"""A trial's configuration fingerprint: one paper cell, one configuration, one number.

The fingerprint is a short hash of the *resolved* trial config (every key, defaults included, after the
typed config has parsed and canonicalised it: ``single:DF`` and ``single:Deepfakes`` are the same trial),
minus what does not change the result:

* sweep-only keys: where the face cache lives, DataLoader processes, evaluation batch size, log cadence, the
  test-only sets scored after the FF++ test (``data.test_sets``);
* keys the trial's detector family does not read (a 3D ResNet's ``model.space_time``, the placement of
  ``attention: none``), so two spaces that write a cell differently still agree on it;
* a setting added later, at the value that behaves as before it existed (:data:`ADDED_NEUTRAL`);
* the path of a real dataset (the same FaceForensics++ wherever it is mounted); ``synthetic`` stays
  ``synthetic``, with its generator settings.

``run`` skips trials whose fingerprint already has a FINISHED, tested run in the tracking store, and the
report groups a cell's seeds by :func:`fingerprint` with ``seed=False``.
"""

from __future__ import annotations

import ast
import hashlib
import json
from typing import Any

from dfsearch import config

TAG = "dfsearch.fingerprint"  # the trial's fingerprint (seed included): what `run` skips on
SEEDLESS_TAG = "dfsearch.seed_group"  # the same without train.seed: the report's mean ± CI groups

# data.test_sets: test-only sets scored after training never change the FF++ result (nor the weights)
SWEEP_ONLY = ("data.cache_dir", "data.num_workers", "data.test_sets", "eval.batch_size", "train.log_every")
SEED_KEY = "train.seed"
# Settings added after runs were fingerprinted, with the value that behaves as before they existed: at that value
# they stay out of the fingerprint, so a store's earlier runs still fill the same cells and `run` still skips them.
ADDED_NEUTRAL = {"eval.val_frames": 0}

def canonical(flat: dict[str, Any]) -> dict[str, Any]:
    """The full flat config a trial runs with: parsed, validated and written back by the typed config."""
    return config.to_flat(config.from_flat(flat))


def relevant(full: dict[str, Any], seed: bool = True) -> dict[str, Any]:
    """The keys of a canonical flat config (from :func:`canonical`) that can change a trial's result.

    Keys the detector family does not read are already absent: ``config.to_flat`` lists only the settings that
    apply (no placement without attention, no ResNet keys for TimeSformer)."""
    out = {k: v for k, v in full.items() if k not in SWEEP_ONLY and (seed or k != SEED_KEY)
           and not (k in ADDED_NEUTRAL and v == ADDED_NEUTRAL[k])}
    if full.get("data.root") != "synthetic":
        out["data.root"] = "faceforensics++"
        out = {k: v for k, v in out.items() if not k.startswith("data.synthetic_")}
    return out


def _digest(values: dict[str, Any]) -> str:
    text = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def of_canonical(full: dict[str, Any], seed: bool = True) -> str:
    """Fingerprint of a config already canonical (from :func:`canonical`, or a run's params read back)."""
    return _digest(relevant(full, seed=seed))


def fingerprint(flat: dict[str, Any], seed: bool = True) -> str:
    """Fingerprint of a trial's flat dotted config (as Tune hands it over, cases resolved)."""
    return of_canonical(canonical(flat), seed=seed)


def tags(flat: dict[str, Any]) -> dict[str, str]:
    """The MLflow tags every trial's run carries: its fingerprint, and the seed-free one."""
    full = canonical(flat)
    return {TAG: of_canonical(full), SEEDLESS_TAG: of_canonical(full, seed=False)}


def parse_param(text: str) -> Any:
    """An MLflow param (``str(value)``) back to the value: ``"0.001"`` -> 0.001, ``"true"`` -> True,
    ``"(1, 2)"`` -> (1, 2); anything else stays the string it is."""
    import yaml

    if text == "":
        return ""
    if text[:1] in "([{":
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None or isinstance(value, (dict, list)) else value


def from_params(params: dict[str, str]) -> dict[str, Any]:
    """A run's logged params -> the canonical flat config (raises ConfigError when they no longer parse)."""
    known = set(config.valid_keys())
    return canonical(config.as_logged({k: parse_param(v) for k, v in params.items() if k in known}))


def of_run(tags: dict[str, str], params: dict[str, str], seed: bool = True) -> str:
    """The fingerprint of a logged trial run: its tag, or (a run logged before the tag existed) recomputed from
    its params.  ConfigError when the params no longer parse as a trial config."""
    found = tags.get(TAG if seed else SEEDLESS_TAG)
    return found or of_canonical(from_params(params), seed=seed)
