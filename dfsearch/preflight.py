"""What ``run`` can refuse before it starts a cluster or builds any data (seconds; no Ray here).

* **Pretrained weights**: every ``model.pretrained`` a trial names resolves to a file that exists (the weights
  folder, or a path); nothing is downloaded at run time, so a missing file is refused now instead of failing
  every trial after the data was built.  ``pretext://`` weights of a ``--smoke`` twin are built on demand and
  are not checked here.
* **Real datasets** (``data.root`` a FaceForensics++ tree): the tree exists, its face cache is complete, and each
  trial's protocol finds real and fake videos in every split (its test set among them).  The synthetic stand-in
  is generated later and is not checked here.

Sampled keys are checked at each of the values :meth:`dfsearch.space.Dist.probe_values` gives (a choice: every
value; a range: its ends).
"""

from __future__ import annotations

from typing import Any

from dfsearch import space
from dfsearch.space import SweepSpec

PROBED = ("model.", "data.", "protocol.")  # sampled keys that can name a weights file or a dataset


def trial_configs(spec: SweepSpec) -> list:
    """The typed configs of the trials, sampled keys at their probe values (one key at a time)."""
    sampled = {k: d for k, d in spec.searched.items() if d.kind != "grid"}
    variants: list[dict[str, Any]] = [{}] + [{k: v} for k, d in sampled.items() if k.startswith(PROBED) for v in d.probe_values()]
    out = {}
    for point in spec.grid_points():
        for variant in variants:
            flat = {**{k: d.probe_values()[0] for k, d in sampled.items()}, **point, **variant}
            cfg = space.trial_config(spec, flat)
            out.setdefault(repr((cfg.model, cfg.data, cfg.protocol)), cfg)
    return list(out.values())


def check_weights(configs: list) -> None:
    """Raises WeightsError (naming the file, the folder and where it is published) for a missing weights file."""
    from dfsearch.data import pretext
    from dfsearch.models import registry
    from dfsearch.models import weights as W

    seen = set()
    for cfg in configs:
        m = cfg.model
        key = (m.name, m.pretrained, repr(m.arch))
        if key in seen or m.pretrained in ("", "none", None) or pretext.is_pretext(m.pretrained):
            continue
        seen.add(key)
        W.resolve(registry.get(m.name), m)


def check_datasets(configs: list) -> None:
    """Raises DataError for a real dataset that is missing, not prepared, or lacks a split's videos for a protocol."""
    from dfsearch import data as dfdata
    from dfsearch.data.protocols import protocol_videos

    prepared: dict[str, list] = {}
    for cfg in configs:
        d = cfg.data
        if d.root == "synthetic":
            continue
        key = repr(d)
        if key not in prepared:
            prepared[key] = dfdata.load_prepared(d)[2]
        protocol_videos(prepared[key], cfg.protocol.name)


def check(spec: SweepSpec) -> None:
    configs = trial_configs(spec)
    check_weights(configs)
    check_datasets(configs)
