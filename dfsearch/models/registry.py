"""The detector registry: every fact about a detector family in one :class:`DetectorSpec`.

A family lives in one module (``resnet3d.py``, ``timesformer.py``, ``frame.py``, or a file of your own) that
defines its settings dataclass and its builder and calls :func:`register` once at import, the way timm
registers models.  Nothing else in dfsearch names a family: the trial config takes the family's settings
from ``spec.config`` (keys ``model.<field>``), :func:`dfsearch.models.create` builds and loads through
``spec.build`` / ``spec.load``, the train loop normalises with the spec's mean/std, and the datasets use its
``test_view``.

Built-in families are found by importing the modules of the ``dfsearch.models`` package; modules of your
own are listed in ``$DFSEARCH_DETECTORS`` (comma-separated import names; Ray workers inherit it), or simply
imported before the config is parsed.  A family module imports only torch at top level; heavy libraries
(timm) are imported inside the function that needs them.

This module itself imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import pkgutil
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from dfsearch.errors import ConfigError

ENV_VAR = "DFSEARCH_DETECTORS"
# How a detector is tested (video score = mean over the views of each video):
#   trunks:             the whole video cut into data.test_trunk-frame trunks, centre crop (3D ResNet)
#   middle_clip_3crops: the middle clip of clip_len frames, top-left / centre / bottom-right crops (TimeSformer)
#   frames:             every frame on its own, centre crop (frame detectors: Xception, MesoNet)
TEST_VIEWS = ("trunks", "middle_clip_3crops", "frames")
COMMON_FIELDS = ("name", "pretrained", "dropout")  # model.* keys every detector has (dfsearch.config.ModelConfig)

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Weights:
    """A named pretrained weight (a ``model.pretrained`` value): a file the user puts in the weights folder."""

    file: str | Callable[[Any], str]  # file name; a str is formatted with the family settings, e.g. "resnet-{depth}-kinetics.pth"
    published: str  # where it is published (shown when the file is missing); may use {stem} (file name without suffix)
    mean: RGB | None = None  # input mean/std (0-1 pixel units) these weights were trained with; None: the spec's
    std: RGB | None = None

    def filename(self, arch: Any) -> str:
        return self.file(arch) if callable(self.file) else self.file.format(**dataclasses.asdict(arch))

    def source(self, arch: Any) -> str:
        return self.published.replace("{stem}", self.filename(arch).rsplit(".", 1)[0])


@dataclass(frozen=True)
class Clip:
    """The clip a detector trains on: the defaults of ``data.clip_len`` / ``data.frame_stride`` / ``data.crop_size``."""

    clip_len: int
    frame_stride: int
    crop_size: int


@dataclass(frozen=True)
class DetectorSpec:
    """Everything dfsearch needs to train and test one detector family.

    ``build(cfg, state_dict)`` returns the 2-class ``nn.Module`` for a :class:`~dfsearch.config.TrialConfig`
    (``cfg.model.arch`` is an instance of ``config``; ``state_dict`` is the pretrained file about to be loaded,
    or None, for builders that adapt to it).  ``load(model, state_dict, path)`` maps the file's keys and loads
    it, returning a :class:`~dfsearch.models.weights.LoadResult`; None loads the file as it is, only the
    ``head`` prefix may be missing.  ``check(cfg)`` raises ConfigError for settings that only fail together
    with other sections (e.g. a crop size the patch size does not divide).
    """

    name: str
    config: type  # dataclass of the family's own model.* settings, with defaults; validates in __post_init__
    build: Callable[..., Any]
    clip: Clip
    test_view: str
    mean: RGB = (0.0, 0.0, 0.0)  # input normalisation for training from scratch / a file path
    std: RGB = (1.0, 1.0, 1.0)
    weights: dict[str, Weights] = field(default_factory=dict)  # model.pretrained name -> file
    load: Callable[..., Any] | None = None
    check: Callable[[Any], None] | None = None
    head: str = "head."  # parameter prefix of the classifier (new when loading a file with load=None)
    description: str = ""

    def input_stats(self, pretrained: str) -> tuple[RGB, RGB]:
        w = self.weights.get(pretrained)
        if w is not None and w.mean is not None:
            return w.mean, w.std
        return self.mean, self.std

    def fields(self) -> dict[str, Any]:
        """The family's setting names and their types (``model.<name>`` keys)."""
        hints = typing.get_type_hints(self.config)
        return {f.name: hints[f.name] for f in dataclasses.fields(self.config)}


_REGISTRY: dict[str, DetectorSpec] = {}
_discovered = False


def register(spec: DetectorSpec) -> DetectorSpec:
    """Add a detector family; call once at the top level of its module.  Returns ``spec``."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", spec.name):
        raise ConfigError(f"detector name {spec.name!r}: use lower-case letters, digits and '_'")
    if not dataclasses.is_dataclass(spec.config):
        raise ConfigError(f"detector {spec.name!r}: config must be a dataclass of its model.* settings")
    if spec.test_view not in TEST_VIEWS:
        raise ConfigError(f"detector {spec.name!r}: test_view {spec.test_view!r} is not one of {', '.join(TEST_VIEWS)}")
    fields = spec.fields()
    clash = [f for f in fields if f in COMMON_FIELDS or f == "arch"]
    if clash:
        raise ConfigError(f"detector {spec.name!r}: setting(s) {', '.join(clash)} clash with the common model.* keys {', '.join(COMMON_FIELDS)}")
    for other in _REGISTRY.values():
        if other.name == spec.name:
            continue
        for key, typ in other.fields().items():
            if key in fields and fields[key] != typ:
                raise ConfigError(f"detector {spec.name!r}: model.{key} is {fields[key]} but {typ} in {other.name!r}; one key, one type")
    old = _REGISTRY.get(spec.name)
    if old is not None and old.config.__module__ != spec.config.__module__:
        raise ConfigError(f"detector {spec.name!r} is already registered by {old.config.__module__}")
    _REGISTRY[spec.name] = spec
    return spec


def discover() -> None:
    """Import the built-in family modules and those named in ``$DFSEARCH_DETECTORS`` (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import dfsearch.models as package

    for mod in pkgutil.iter_modules(package.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{mod.name}")
    for name in filter(None, (n.strip() for n in os.environ.get(ENV_VAR, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            _discovered = False
            raise ConfigError(f"${ENV_VAR}: cannot import detector module {name!r} ({exc})") from None


def get(name: str) -> DetectorSpec:
    """The spec of ``model.name``; ConfigError naming the registered detectors if there is none."""
    discover()
    spec = _REGISTRY.get(name)
    if spec is None:
        hint = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        raise ConfigError(
            f"model.name: {name!r} is not one of {', '.join(names())}" + (f"; did you mean '{hint[0]}'?" if hint else "")
            + f" (a detector of your own: a module that calls dfsearch.models.registry.register, listed in ${ENV_VAR})"
        )
    return spec


def names() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def specs() -> list[DetectorSpec]:
    discover()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]
