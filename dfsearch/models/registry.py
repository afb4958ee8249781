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
# The --smoke budget of a family without its own (DetectorSpec.smoke): the per-frame budget of the MesoNets.
# Validation scores 8 of each video's 32 frames (eval.val_frames): all 32 cost the per-frame families 2-3x their
# training each epoch, 4x on `all` (Bayar and Stamm: 13.6 s of validation to 3.9 s of training an epoch); the test
# still scores every frame.
SMOKE_FRAME = {"data.crop_size": 64, "train.batch_size": 8, "train.epochs": 8, "optim.lr": 1.0e-3, "eval.batch_size": 32,
               "eval.val_frames": 8}

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
class Cost:
    """How :mod:`dfsearch.estimate` prices a trial of the family (forward FLOPs and training throughput).

    ``gflops`` is the forward GFLOPs of one clip of ``frames`` x ``side``² (a number, or a function of the
    canonical flat config for families whose settings change it: depth, attention, width); a trial's clip scales
    it linearly in frames x pixels.  ``tflops`` is the training TFLOP/s one H200 achieved on the family (AMP bf16).
    How many clips score a whole video follows from the spec's ``test_view``.  The default prices an unknown
    family like a mid-size frame CNN.
    """

    gflops: float | Callable[[dict], float] = 10.0
    frames: int = 1
    side: int = 224
    tflops: float = 30.0

    def clip_gflops(self, full: dict) -> float:
        """Forward GFLOPs of one clip of the flat config's ``data.clip_len`` x ``data.crop_size``²."""
        g = self.gflops(full) if callable(self.gflops) else float(self.gflops)
        clip, crop = full.get("data.clip_len") or 1, full.get("data.crop_size") or 112
        return g * clip * crop**2 / (self.frames * self.side**2)


@dataclass(frozen=True)
class Pretext:
    """A family whose ``--smoke`` twin keeps its pretrained rows pretrained (:mod:`dfsearch.data.pretext`): the
    pretext training recipe and the family's published checkpoint layout it writes."""

    backbone: tuple[str, ...]  # the settings the file depends on (attention blocks are new parts, as with Kinetics)
    recipe: dict[str, Any]  # per_class (videos per class), epochs, batch, lr (Adam)
    filename: Callable[[dict, dict], str]  # (backbone settings, clip) -> file name, in the family's published naming
    pack: Callable[[dict, dict, int], dict]  # (state_dict, backbone settings, epochs) -> the object saved (published layout)
    head: str = "head"  # attribute of the model's classifier (replaced by the pretext task's own head)


@dataclass(frozen=True)
class AttentionMaps:
    """What ``predict --explain`` draws for a family: ``compute(model, x)`` takes the model in eval mode and ONE
    normalised clip x (1, 3, T, H, W) and returns ``(rows, P(fake))``, rows = [(label, map (T', h, w))] drawn over
    the clip's frames; written as ``<video>.<suffix>.png`` under ``title``."""

    compute: Callable[[Any, Any], tuple[list, float]]
    title: str
    suffix: str


@dataclass(frozen=True)
class OnePassFit:
    """A family fitted in one pass instead of trained by SGD (e.g. hand-made features + a linear SVM).

    The train loop calls ``fit(model, batches, cfg)`` once, in its only epoch, in place of the SGD steps (the typed
    config canonicalises ``train.epochs`` to 1 for such a family, whatever was asked): ``batches`` yields ``(normalised clips, labels)`` of the training videos, as many passes over
    them as the family's setting ``model.<frames_key>`` (each pass one random clip of each video, with the training
    crop and flip).  ``fit`` stores what it fitted in the model's buffers (so the checkpoint holds it) and returns
    numbers to log (``train/acc``, feature dimension, seconds); validation, checkpoint and test follow as for any
    detector.
    """

    fit: Callable[..., dict]
    frames_key: str = "max_frames"  # the family's setting: clips (frames) drawn per training video


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
    # The rest of the system asks these (each has a default, so a family of your own gets all of them):
    display_name: Callable[[dict], str] | None = None  # flat config -> the model part of a run name; None: the name
    cost: Cost = Cost()  # FLOPs / throughput model of the GPU-hour estimate
    smoke: dict[str, Any] | None = None  # --smoke budget (flat keys); None: SMOKE_FRAME (see smoke_budget)
    smoke_all: dict[str, Any] | None = None  # keys of the --smoke budget replaced on protocol `all` (four families to learn)
    pretext: Pretext | None = None  # --smoke pretrained rows get pretext weights; None: they run from scratch
    attention_maps: AttentionMaps | None = None  # predict --explain's maps; None: none beyond the generic blocks
    after_step: Callable[[Any], None] | None = None  # called with the model after every optimiser step (constraints)
    one_pass: OnePassFit | None = None  # fitted in one pass by the train loop instead of epochs of SGD
    # settings added to the family after configs were logged: {key: (value it had before, when it applies: flat ->
    # bool)}.  A logged config (every setting written out) without one predates it: see config.as_logged
    added: dict[str, tuple[Any, Callable[[dict], bool]]] = field(default_factory=dict)

    def input_stats(self, pretrained: str) -> tuple[RGB, RGB]:
        w = self.weights.get(pretrained)
        if w is not None and w.mean is not None:
            return w.mean, w.std
        return self.mean, self.std

    def model_name(self, flat: dict) -> str:
        """The model part of a run name for a canonical flat config (``resnet3d-50``, ``se@1,2,3,4``, ``meso4``)."""
        return self.display_name(flat) if self.display_name is not None else self.name

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


def display_name(flat: dict) -> str:
    """The model part of a run name for a flat config; the bare ``model.name`` when no detector has it (an old
    run of a detector no longer registered)."""
    name = flat.get("model.name", "?")
    try:
        spec = get(str(name))
    except ConfigError:
        return str(name)
    return spec.model_name(flat)


def names() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def specs() -> list[DetectorSpec]:
    discover()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def smoke_budget(spec: "DetectorSpec", protocol: str = "") -> dict[str, Any]:
    """What ``run --smoke`` trains a family with (flat keys): its own budget, else :data:`SMOKE_FRAME`; on
    protocol ``all``, with its ``smoke_all`` keys on top."""
    budget = spec.smoke or SMOKE_FRAME
    return {**budget, **(spec.smoke_all or {})} if protocol == "all" else budget
