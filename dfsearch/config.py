"""The one typed trial config.

A trial is described by a small tree of dataclasses (model / data / protocol / optim / train / eval), each
field with its default and a one-line meaning.  Ray Tune hands a trial a *flat* dict with dotted keys
(``{"model.attention": "se", "optim.lr": 1e-3}``); :func:`from_flat` turns that into a validated
:class:`TrialConfig`, and :func:`to_flat` goes back (for MLflow params and the dry-run table).

The model section has the settings every detector shares (name, pretrained, dropout); ``model.name`` picks a
registered detector (:mod:`dfsearch.models.registry`), whose own settings dataclass becomes ``cfg.model.arch``
(its fields are the keys ``model.<field>``).  Parsing happens once, here: values are typed (``model.placement``
a tuple of stages), protocol names canonical (``single:DF`` -> ``single:Deepfakes``), the clip defaults the
detector's.  Validation names the key, the bad value, what was expected and, for typos, the nearest valid key.

This module imports no torch; the registry (and so the detector modules) is imported when a config is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfsearch.errors import ConfigError

log = logging.getLogger(__name__)

# The four FaceForensics++ manipulations and the short names the paper's tables use (accepted on input only).
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
METHOD_ALIASES = {"DF": "Deepfakes", "F2F": "Face2Face", "FS": "FaceSwap", "NT": "NeuralTextures"}
OPTIONAL_METHODS = ("FaceShifter",)
PROTOCOL_KINDS = ("all", "single", "cross")
# One list of allowed values per concept.
VAL_METRICS = {"val/tcr": "max", "val/auc": "max", "val/loss": "min"}  # metric -> which way is better
COMPRESSIONS = ("raw", "c23", "c40")
FACE_DETECTORS = ("auto", "opencv", "face_alignment")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant")
# Test-only datasets a trial also scores after its FF++ test (dfsearch.data.testsets); never used for selection.
TEST_SETS = ("celebdf", "dfdc", "deeperforensics", "faceshifter", "dfd")


@dataclass
class ModelConfig:
    # A registered detector (python -c "import dfsearch.models as m; print(m.names())"); "" = the default one,
    # dfsearch.models.presets.DEFAULT (the family is named only in the models package).
    name: str = ""
    pretrained: str = "none"  # none | a named weight of the detector (kinetics400, kinetics700, imagenet) | /path/to/file
    dropout: float = 0.0  # dropout before the classification head
    # The detector's own settings (its DetectorSpec.config dataclass), set as model.<field>, e.g. model.depth,
    # model.attention, model.placement of the 3D ResNet; model.space_time of TimeSformer.  None = its defaults.
    arch: Any = None

    def __post_init__(self):
        self.name = self.name or default_detector()
        if self.arch is None:
            self.arch = _registry().get(self.name).config()


@dataclass
class DataConfig:
    root: str = "synthetic"  # FaceForensics++ root, or "synthetic" for the generated stand-in
    compression: str = "c40"  # raw | c23 | c40 (paper: c40 = LQ)
    cache_dir: str = ""  # face-crop cache; "" = <root>/.dfsearch_cache (synthetic: under the user cache)
    detector: str = "auto"  # face detector: auto | opencv | face_alignment (auto: face_alignment for real data, opencv for synthetic)
    # The clip the detector trains on; None = the detector's own (DetectorSpec.clip): 3D ResNet 16 frames,
    # stride 1, 112 px; TimeSformer 8 frames, stride 32 ("1/32 sampling rate"), 224 px; frame models 1 frame.
    clip_len: int | None = None  # frames per training clip
    frame_stride: int | None = None  # step between sampled frames
    crop_size: int | None = None  # network input side
    test_trunk: int = 250  # 3D ResNet test: frames per trunk; video score = mean trunk score
    hflip: bool = True  # random horizontal flips when training
    # Test-only sets scored after the FF++ test with the same weights: NAME (root from $CELEBDF_ROOT, $DFDC_ROOT,
    # $DEEPERFORENSICS_ROOT; faceshifter / dfd: data.root) or NAME=/path, e.g. "celebdf,dfdc=/data/dfdc"
    test_sets: tuple[str, ...] = ()
    num_workers: int = 2  # DataLoader worker processes per training worker
    # synthetic stand-in (used only when root == "synthetic")
    synthetic_pairs: int = 50  # identity pairs: the first of the official split files, 60/20/20 train/val/test (50: 500 videos)
    synthetic_frames: int = 32  # frames per synthetic video
    synthetic_size: int = 128  # side of the synthetic frames
    synthetic_seed: int = 0


@dataclass
class ProtocolConfig:
    name: str = "all"  # all | single:<METHOD> | cross:<METHOD>  (METHOD: Deepfakes or DF, Face2Face or F2F, ...)
    weighted_loss: bool = True  # weight the cross-entropy by inverse class frequency (the paper, for "all")


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 1e-3  # the paper's learning rate
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | constant
    warmup_epochs: int = 0


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 8  # clips per training worker per step
    seed: int = 0  # Tune's num_samples repeats each config with seed + repeat index
    amp: bool = True  # mixed precision on GPU (ignored on CPU)
    max_steps_per_epoch: int = 0  # 0 = the whole training set each epoch
    log_every: int = 20  # steps between train-loss log lines


@dataclass
class EvalConfig:
    select_metric: str = "val/tcr"  # the validation metric whose best epoch is tested; a search space sets it from search.metric
    batch_size: int = 4  # views (trunks / crops / frames) per forward pass at test time
    max_videos: int = 0  # 0 = every video; >0 caps val/test (quick checks only)
    # Per-frame detectors (test view `frames`) score every frame of every validation video each epoch, many times
    # their training frames; >0 validates on this many evenly spaced frames a video instead.  The test always
    # scores every frame.  Other test views ignore it.
    val_frames: int = 0


@dataclass
class TrialConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        clip = _registry().get(self.model.name).clip
        for key in ("clip_len", "frame_stride", "crop_size"):
            if getattr(self.data, key) is None:
                setattr(self.data, key, getattr(clip, key))


SECTIONS = tuple(f.name for f in dataclasses.fields(TrialConfig))


def _registry():
    # The registry imports the detector modules (torch); config itself stays importable without torch.
    from dfsearch.models import registry

    return registry


def default_detector() -> str:
    from dfsearch.models import presets

    return presets.DEFAULT


def _sections() -> dict[str, type]:
    return typing.get_type_hints(TrialConfig)


def _field_types(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name != "arch"}


def _family_keys() -> dict[str, list[str]]:
    """``model.<field>`` -> the detectors that have that setting."""
    owners: dict[str, list[str]] = {}
    for spec in _registry().specs():
        for name in spec.fields():
            owners.setdefault(f"model.{name}", []).append(spec.name)
    return owners


def valid_keys() -> list[str]:
    """Every dotted key a search space may set, e.g. ``model.attention`` (detector settings of every family)."""
    common = [f"{section}.{name}" for section, cls in _sections().items() for name in _field_types(cls)]
    return common + [k for k in _family_keys() if k not in common]


def nearest_key(key: str) -> str | None:
    keys = valid_keys()
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if match:
        return match[0]
    # A bare field name ("lr") is a common slip: find the section that has it.
    for candidate in keys:
        if candidate.split(".", 1)[1] == key:
            return candidate
    return None


def check_key(key: str) -> None:
    if key not in valid_keys():
        hint = nearest_key(key)
        raise ConfigError(f"unknown key '{key}'" + (f"; did you mean '{hint}'?" if hint else "; see search_spaces/README.md"))


def key_type(key: str) -> type:
    """The type of a dotted key (a detector setting: its type in the families that have it)."""
    section, _, name = key.partition(".")
    fields = _field_types(_sections()[section]) if section in SECTIONS else {}
    if name in fields:
        return fields[name]
    for spec in _registry().specs():
        if name in spec.fields() and section == "model":
            return spec.fields()[name]
    check_key(key)
    raise AssertionError(key)


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Accept what YAML and Tune hand us (ints for floats, 'true' strings, "1,2" or [1, 2] for tuples) and nothing looser."""
    args = typing.get_args(typ)
    if type(None) in args:  # Optional: None, or the other type
        if value is None:
            return None
        typ = next(a for a in args if a is not type(None))
        args = typing.get_args(typ)
    if typing.get_origin(typ) is tuple and args[-1] is Ellipsis:  # tuple[int, ...]: "1,2,4", [1, 2, 4] or 4
        items = value.replace(" ", "").split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
        try:
            return tuple(_coerce(key, int(v) if isinstance(v, str) and v.lstrip("-").isdigit() else v, args[0]) for v in items if v != "")
        except ConfigError:
            raise ConfigError(f"{key}: expected a comma-separated list of {args[0].__name__}s like \"1,2,4\" or [1, 2, 4], got {value!r}") from None
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML (YAML 1.1) reads "3e-3" (no dot) as a string; people write learning rates that way.
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
            return float(value)
    elif typ is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    name = getattr(typ, "__name__", str(typ))
    raise ConfigError(f"{key}: expected {name}, got {value!r} ({type(value).__name__})")


def _flat_value(value: Any) -> Any:
    """The flat (YAML / MLflow param) form of a typed value: tuples as "1,2,4"."""
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else value


def canonical(key: str, value: Any) -> Any:
    """A raw YAML / Tune value of ``key`` in its canonical flat form: ``[1, 2]`` -> ``"1,2"``,
    ``single:DF`` -> ``single:Deepfakes``.  The search-space parser stores every value this way."""
    value = _coerce(key, value, key_type(key))
    if key == "protocol.name":
        value = canonical_protocol(value)
    return _flat_value(value)


def from_flat(flat: dict[str, Any]) -> TrialConfig:
    """Build and validate a TrialConfig from Tune's flat dotted dict (unknown keys are errors).

    ``model.name`` picks the detector; the other ``model.*`` keys must be settings of that detector.
    """
    hints = _sections()
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    arch_values: dict[str, Any] = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        fields = _field_types(hints[section]) if section in SECTIONS else {}
        if section == "model" and name not in fields and f"model.{name}" in _family_keys():
            arch_values[name] = value
            continue
        if name not in fields:
            check_key(key)
        sections[section][name] = _coerce(key, value, fields[name])
    spec = _registry().get(sections["model"].get("name") or default_detector())
    arch_types = spec.fields()
    for name in arch_values:
        if name not in arch_types:
            owners = _family_keys()[f"model.{name}"]
            raise ConfigError(
                f"model.{name} is a setting of {' / '.join(owners)}, not of model.name {spec.name!r}"
                f" ({spec.name} settings: {', '.join(arch_types) or 'none'})"
            )
    arch = spec.config(**{name: _coerce(f"model.{name}", v, arch_types[name]) for name, v in arch_values.items()})
    sections["model"]["arch"] = arch
    cfg = TrialConfig(**{name: hints[name](**values) for name, values in sections.items()})
    validate(cfg)
    return cfg


def to_flat(cfg: TrialConfig) -> dict[str, Any]:
    """The flat dotted form (MLflow params, dry-run tables): only the chosen detector's settings, and of those
    only the ones that apply (a family config may list the others in ``unused()``, e.g. no placement without
    attention); tuples as "1,2,4".  ``from_flat(to_flat(cfg))`` rebuilds an equivalent config."""
    out: dict[str, Any] = {}
    for section in SECTIONS:
        values = getattr(cfg, section)
        for name in _field_types(type(values)):
            out[f"{section}.{name}"] = _flat_value(getattr(values, name))
        if section == "model":
            arch = cfg.model.arch
            unused = set(arch.unused()) if hasattr(arch, "unused") else set()
            for f in dataclasses.fields(arch):
                if f.name not in unused:
                    out[f"model.{f.name}"] = _flat_value(getattr(arch, f.name))
    return out


def flat_from_yaml(path) -> dict[str, Any]:
    """A trial-config YAML file (sections ``model:``, ``data:``, ... or dotted keys, e.g. a run's
    ``config/trial.yaml`` artifact) -> the flat dotted dict :func:`from_flat` takes."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the trial config ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a trial config (sections model:, data:, ... or dotted keys), got {type(doc).__name__}")
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        flat.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
    return flat


def as_logged(flat: dict[str, Any]) -> dict[str, Any]:
    """A flat config that dfsearch logged (a run's ``config/trial.yaml`` or params, a logged model's trial.yaml),
    with every setting added to its family since then at the value it had before (``DetectorSpec.added``): the
    weights were trained that way, where today's default could build another model around them."""
    from dfsearch.models import registry

    try:
        spec = registry.get(flat.get("model.name") or default_detector())
    except ConfigError:
        return flat  # an unknown family: from_flat names it
    missing = {k: before for k, (before, applies) in spec.added.items() if k not in flat and applies(flat)}
    return {**flat, **missing}


# The first line of a trial config that dfsearch wrote: a trial run's config/trial.yaml, a logged model's trial.yaml.
LOGGED_HEADERS = ("# dfsearch trial ", "# trial config of MLflow run ")


def is_logged_yaml(path) -> bool:
    """A trial config YAML that dfsearch logged (complete, so a setting it lacks did not exist when it was written)."""
    try:
        with open(path) as f:
            return f.readline().startswith(LOGGED_HEADERS)
    except OSError:
        return False


def default_flat() -> dict[str, Any]:
    """Every key of the default trial (the default detector's settings)."""
    return to_flat(TrialConfig())


# ---------------------------------------------------------------------------------------------- validation


def one_of(key: str, value: Any, allowed) -> None:
    """ConfigError unless ``value`` is in ``allowed`` (with the nearest allowed value as a hint)."""
    if value not in allowed:
        hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        raise ConfigError(
            f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}" + (f"; did you mean '{hint[0]}'?" if hint else "")
        )


def positive(key: str, value, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}: expected a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")


def canonical_method(name: str, key: str = "protocol.name") -> str:
    method = METHOD_ALIASES.get(name, name)
    one_of(key, method, METHODS + OPTIONAL_METHODS)
    return method


def parse_protocol(name: str) -> tuple[str, str | None]:
    """``"all"`` -> ``("all", None)``; ``"cross:NT"`` -> ``("cross", "NeuralTextures")``."""
    kind, _, method = str(name).partition(":")
    one_of("protocol.name", kind, PROTOCOL_KINDS)
    if kind == "all":
        if method:
            raise ConfigError(f"protocol.name: 'all' takes no method, got {name!r}")
        return "all", None
    if not method:
        raise ConfigError(f"protocol.name: {name!r} needs a method, e.g. '{kind}:Deepfakes' or '{kind}:NT'")
    return kind, canonical_method(method)


def fake_test_videos_per_real(name: str) -> int:
    """Fake test videos per real one: 4 on ``all`` (every method's fakes of each pair), 1 on ``single``/``cross``."""
    kind, _ = parse_protocol(name)
    return len(METHODS) if kind == "all" else 1


def canonical_protocol(name: str) -> str:
    """``single:DF`` -> ``single:Deepfakes`` (the one spelling used in configs, MLflow tags and reports)."""
    kind, method = parse_protocol(name)
    return kind if method is None else f"{kind}:{method}"


def validate(cfg: TrialConfig) -> None:
    """Check the common sections (the detector's settings validate themselves) and canonicalise in place."""
    m, d, o, t, e = cfg.model, cfg.data, cfg.optim, cfg.train, cfg.eval
    spec = _registry().get(m.name)
    if not isinstance(m.arch, spec.config):
        raise ConfigError(f"model.name is {m.name!r} but the model settings are {type(m.arch).__name__}")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout: expected 0 <= dropout < 1, got {m.dropout!r}")
    _check_pretrained(spec, m.pretrained)
    one_of("data.compression", d.compression, COMPRESSIONS)
    one_of("data.detector", d.detector, FACE_DETECTORS)
    for key in ("clip_len", "frame_stride", "crop_size", "test_trunk", "synthetic_pairs", "synthetic_frames", "synthetic_size"):
        positive(f"data.{key}", getattr(d, key))
    positive("data.num_workers", d.num_workers, allow_zero=True)
    _check_test_sets(d)
    if d.root == "synthetic" and d.synthetic_pairs < 3:
        raise ConfigError("data.synthetic_pairs: need at least 3 identity pairs (one per split)")
    cfg.protocol.name = canonical_protocol(cfg.protocol.name)
    one_of("optim.name", o.name, OPTIMIZERS)
    one_of("optim.schedule", o.schedule, SCHEDULES)
    positive("optim.lr", o.lr)
    positive("optim.weight_decay", o.weight_decay, allow_zero=True)
    positive("optim.warmup_epochs", o.warmup_epochs, allow_zero=True)
    positive("train.epochs", t.epochs)
    if spec.one_pass is not None and t.epochs != 1:
        # a family fitted in one pass (DetectorSpec.one_pass) runs one epoch whatever was asked (e.g. a sweep's
        # --set train.epochs=3 meant for its SGD models): the canonical config says 1, so the logged params, the
        # fingerprint and the MLflow run all record what ran
        log.info("train.epochs: %s -> 1 for model.name %s (fitted in one pass)", t.epochs, m.name)
        t.epochs = 1
    positive("train.batch_size", t.batch_size)
    positive("train.max_steps_per_epoch", t.max_steps_per_epoch, allow_zero=True)
    positive("train.log_every", t.log_every)
    one_of("eval.select_metric", e.select_metric, tuple(VAL_METRICS))
    positive("eval.batch_size", e.batch_size)
    positive("eval.max_videos", e.max_videos, allow_zero=True)
    positive("eval.val_frames", e.val_frames, allow_zero=True)
    if spec.check is not None:
        spec.check(cfg)


def _check_test_sets(d: DataConfig) -> None:
    """``data.test_sets``: known names, each once, ``NAME`` or ``NAME=/path`` (roots are checked by the driver)."""
    seen = []
    for item in d.test_sets:
        name, sep, root = str(item).partition("=")
        one_of("data.test_sets", name.strip().lower(), TEST_SETS)
        if sep and not root.strip():
            raise ConfigError(f"data.test_sets: {item!r}: expected NAME or NAME=/path/to/root")
        if name.strip().lower() in seen:
            raise ConfigError(f"data.test_sets: {name!r} listed twice")
        seen.append(name.strip().lower())


def _check_pretrained(spec, pretrained: str) -> None:
    """A weight name must be one the detector offers; anything path-like is checked when it is loaded."""
    if pretrained in ("", "none") or pretrained in spec.weights:
        return
    named = {w for s in _registry().specs() for w in s.weights}
    if pretrained in named or not any(c in pretrained for c in "/\\.~"):
        offered = ", ".join(spec.weights) or "none"
        raise ConfigError(
            f"model.pretrained: {pretrained!r} is not available for model {spec.name!r} "
            f"(named weights: {offered}; or give a path to a state-dict file, or 'none')"
        )


def parse_set(item: str) -> tuple[str, Any]:
    """``--set KEY=VALUE`` (train, run) -> (key, value parsed as YAML; text that is not YAML stays text)."""
    import yaml

    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=5")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip(), value
