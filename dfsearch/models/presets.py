"""Named model settings that code outside :mod:`dfsearch.models` uses: the default detector and the models the
benchmarks train.  They live here so that only the models package names a family (the registry's promise):
a bench says "the small 3D model", this file says which family and size that is.

Each preset is a dict of ``model.*`` keys (``model.name`` first), as ``--set`` and search spaces write them;
:func:`nested` turns one into the ``model:`` block of a search space.
"""

from __future__ import annotations

DEFAULT = "resnet3d"  # model.name when a config names none: the paper's backbone

# The smoke sweep's 3D ResNet: r3d-10 at a quarter of the width, a 3-frame first kernel (8-frame clips).
SMALL_3D = {"model.name": "resnet3d", "model.depth": 10, "model.widen_factor": 0.25, "model.conv1_t_size": 3}
# Half that width again: the benches that time Ray and MLflow around a model, not the model.
TINY_3D = {**SMALL_3D, "model.widen_factor": 0.125}
# The paper's 3D ResNet-50 (Hara's r3d-50), Table II's shape.
PAPER_3D = {"model.name": "resnet3d", "model.depth": 50}
# A per-frame detector (mean of per-frame logits): the one that cannot see frame order.
PER_FRAME = {"model.name": "meso4"}


def nested(preset: dict) -> dict:
    """``{"model.depth": 10, ...}`` -> ``{"depth": 10, ...}``: a preset as a search space's ``model:`` block."""
    return {key.removeprefix("model."): value for key, value in preset.items()}
