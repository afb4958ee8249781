"""The one typed trial config.

A trial is described by a small tree of dataclasses (model / data / protocol / optim / train / eval), each
field with its default and a one-line meaning.  Ray Tune hands a trial a *flat* dict with dotted keys
(``{"model.attention": "se", "optim.lr": 1e-3}``); :func:`from_flat` turns that into a validated
:class:`TrialConfig`, and :func:`to_flat` goes back (for MLflow params and the dry-run table).

Validation names the key, the bad value, what was expected and, for typos, the nearest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any

from dfsearch.errors import ConfigError

# The four FaceForensics++ manipulations and the short names the paper's tables use.
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
METHOD_ALIASES = {"DF": "Deepfakes", "F2F": "Face2Face", "FS": "FaceSwap", "NT": "NeuralTextures"}
OPTIONAL_METHODS = ("FaceShifter",)

MODEL_NAMES = ("resnet3d", "timesformer", "xception", "meso4", "mesoinception4")
RESNET_DEPTHS = (10, 18, 34, 50, 101, 152, 200)


@dataclass
class ModelConfig:
    name: str = "resnet3d"  # resnet3d | timesformer | xception | meso4 | mesoinception4
    pretrained: str = "none"  # none | kinetics400 | kinetics700 | imagenet | /path/to/file (paper: kinetics400)
    dropout: float = 0.0  # dropout before the classification head
    # 3D ResNet (Hara et al.)
    depth: int = 50  # 10 | 18 | 34 | 50 | 101 | 152 | 200
    shortcut: str = "auto"  # A | B | auto (Hara's CVPR-2018 files: A for 10/18/34, B for 50+)
    conv1_t_size: int = 7  # temporal kernel of the first conv
    conv1_t_stride: int = 1  # temporal stride of the first conv
    no_max_pool: bool = False  # drop the max-pool after conv1
    widen_factor: float = 1.0  # channel multiplier (1.0 = Hara's widths; <1 for CPU tests)
    attention: str = "none"  # none | se | nonlocal — attention blocks after ResNet stages
    placement: str = "1,2,3,4"  # stages that get a block; a stage listed k>=2 times gets 2k blocks: "4,4" = four after stage 4 (Table II)
    se_reduction: int = 16  # SE reduction ratio r (paper eq. 2)
    nl_subsample: bool = False  # max-pool phi/g by 2 in space (Wang et al.'s option)
    nl_scale: bool = False  # scale theta.phi by 1/sqrt(d) (Wang et al. use no scaling)
    # TimeSformer
    space_time: str = "divided"  # joint | divided | space_only (Table III: joint vs "dissociated")
    vit_size: str = "base"  # tiny | small | base (ViT-B/16 is the paper's)
    patch_size: int = 16


@dataclass
class DataConfig:
    root: str = "synthetic"  # FaceForensics++ root, or "synthetic" for the generated stand-in
    compression: str = "c40"  # raw | c23 | c40 (paper: c40 = LQ)
    cache_dir: str = ""  # face-crop cache; "" = <root>/.dfsearch_cache (synthetic: under the user cache)
    detector: str = "auto"  # auto | opencv | face_alignment (auto: face_alignment for real data, opencv for synthetic)
    clip_len: int = 16  # frames per training clip (3D ResNet: 16, TimeSformer: 8)
    frame_stride: int = 1  # step between sampled frames (TimeSformer: 32 = "1/32 sampling rate")
    crop_size: int = 112  # network input side (3D ResNet: 112, TimeSformer: 224)
    test_trunk: int = 250  # 3D ResNet test: frames per trunk; video score = mean trunk score
    hflip: bool = True  # random horizontal flips when training
    num_workers: int = 2  # DataLoader worker processes per training worker
    # synthetic stand-in (used only when root == "synthetic")
    synthetic_pairs: int = 12  # identity pairs; split ~ 60/20/20 into train/val/test
    synthetic_frames: int = 40  # frames per synthetic video
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
    select_metric: str = "val/tcr"  # which validation metric picks the checkpoint tested at the end
    batch_size: int = 4  # views (trunks / crops / frames) per forward pass at test time
    max_videos: int = 0  # 0 = every video; >0 caps val/test (quick checks only)


@dataclass
class TrialConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


SECTIONS = tuple(f.name for f in dataclasses.fields(TrialConfig))


def _sections() -> dict[str, type]:
    return typing.get_type_hints(TrialConfig)


def _field_types(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def valid_keys() -> list[str]:
    """Every dotted key a search space may set, e.g. ``model.attention``."""
    return [f"{section}.{name}" for section, cls in _sections().items() for name in _field_types(cls)]


def nearest_key(key: str) -> str | None:
    match = difflib.get_close_matches(key, valid_keys(), n=1, cutoff=0.5)
    if match:
        return match[0]
    # A bare field name ("lr") is a common slip: find the section that has it.
    for candidate in valid_keys():
        if candidate.split(".", 1)[1] == key:
            return candidate
    return None


def check_key(key: str) -> None:
    if key not in valid_keys():
        hint = nearest_key(key)
        raise ConfigError(f"unknown key '{key}'" + (f"; did you mean '{hint}'?" if hint else "; see search_spaces/README.md"))


def _coerce(key: str, value: Any, typ: type) -> Any:
    """Accept what YAML and Tune hand us (ints for floats, 'true' strings) and nothing looser."""
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
    elif typ is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # placement: 4 -> "4"
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
            return ",".join(str(v) for v in value)  # placement: [1, 2] -> "1,2"
    raise ConfigError(f"{key}: expected {typ.__name__}, got {value!r} ({type(value).__name__})")


def from_flat(flat: dict[str, Any]) -> TrialConfig:
    """Build and validate a TrialConfig from Tune's flat dotted dict (unknown keys are errors)."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    hints = _sections()
    for key, value in flat.items():
        check_key(key)
        section, name = key.split(".", 1)
        sections[section][name] = _coerce(key, value, _field_types(hints[section])[name])
    cfg = TrialConfig(**{name: hints[name](**values) for name, values in sections.items()})
    validate(cfg)
    return cfg


def to_flat(cfg: TrialConfig) -> dict[str, Any]:
    return {f"{section}.{k}": v for section, values in dataclasses.asdict(cfg).items() for k, v in values.items()}


def default_flat() -> dict[str, Any]:
    return to_flat(TrialConfig())


# ---------------------------------------------------------------------------------------------- validation


def _one_of(key: str, value: Any, allowed) -> None:
    if value not in allowed:
        hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        raise ConfigError(
            f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}" + (f"; did you mean '{hint[0]}'?" if hint else "")
        )


def _positive(key: str, value, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}: expected a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")


def parse_placement(placement: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``; ``"4,4"`` -> ``[4, 4]`` (a repeated stage gets that many blocks)."""
    try:
        stages = [int(s) for s in str(placement).replace(" ", "").split(",") if s != ""]
    except ValueError:
        raise ConfigError(f"model.placement: {placement!r} is not a comma-separated list of ResNet stages 1-4") from None
    if not stages or any(s not in (1, 2, 3, 4) for s in stages):
        raise ConfigError(f"model.placement: {placement!r} names a stage that does not exist; stages are 1, 2, 3, 4 (e.g. '1,2,3,4' or '4,4')")
    return sorted(stages)


def canonical_method(name: str, key: str = "protocol.name") -> str:
    method = METHOD_ALIASES.get(name, name)
    _one_of(key, method, METHODS + OPTIONAL_METHODS)
    return method


def parse_protocol(name: str) -> tuple[str, str | None]:
    """``"all"`` -> ``("all", None)``; ``"cross:NT"`` -> ``("cross", "NeuralTextures")``."""
    kind, _, method = str(name).partition(":")
    _one_of("protocol.name", kind, ("all", "single", "cross"))
    if kind == "all":
        if method:
            raise ConfigError(f"protocol.name: 'all' takes no method, got {name!r}")
        return "all", None
    if not method:
        raise ConfigError(f"protocol.name: {name!r} needs a method, e.g. '{kind}:Deepfakes' or '{kind}:NT'")
    return kind, canonical_method(method)


def validate(cfg: TrialConfig) -> None:
    m, d, o, t, e = cfg.model, cfg.data, cfg.optim, cfg.train, cfg.eval
    _one_of("model.name", m.name, MODEL_NAMES)
    _one_of("model.depth", m.depth, RESNET_DEPTHS)
    _one_of("model.shortcut", m.shortcut, ("auto", "A", "B"))
    _one_of("model.attention", m.attention, ("none", "se", "nonlocal"))
    _one_of("model.space_time", m.space_time, ("joint", "divided", "space_only"))
    _one_of("model.vit_size", m.vit_size, ("tiny", "small", "base"))
    if m.attention != "none":
        parse_placement(m.placement)
    if m.name != "resnet3d" and m.attention != "none":
        raise ConfigError(f"model.attention: {m.attention!r} applies to resnet3d only (model.name is {m.name!r}); TimeSformer uses model.space_time")
    _positive("model.se_reduction", m.se_reduction)
    _positive("model.widen_factor", m.widen_factor)
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout: expected 0 <= dropout < 1, got {m.dropout!r}")
    if m.name == "timesformer" and d.crop_size % m.patch_size:
        raise ConfigError(f"data.crop_size: {d.crop_size} is not a multiple of model.patch_size {m.patch_size}")
    _one_of("data.compression", d.compression, ("raw", "c23", "c40"))
    _one_of("data.detector", d.detector, ("auto", "opencv", "face_alignment"))
    for key in ("clip_len", "frame_stride", "crop_size", "test_trunk", "synthetic_pairs", "synthetic_frames", "synthetic_size"):
        _positive(f"data.{key}", getattr(d, key))
    _positive("data.num_workers", d.num_workers, allow_zero=True)
    if d.root == "synthetic" and d.synthetic_pairs < 3:
        raise ConfigError("data.synthetic_pairs: need at least 3 identity pairs (one per split)")
    parse_protocol(cfg.protocol.name)
    _one_of("optim.name", o.name, ("sgd", "adam", "adamw"))
    _one_of("optim.schedule", o.schedule, ("cosine", "constant"))
    _positive("optim.lr", o.lr)
    _positive("optim.weight_decay", o.weight_decay, allow_zero=True)
    _positive("optim.warmup_epochs", o.warmup_epochs, allow_zero=True)
    _positive("train.epochs", t.epochs)
    _positive("train.batch_size", t.batch_size)
    _positive("train.max_steps_per_epoch", t.max_steps_per_epoch, allow_zero=True)
    _positive("train.log_every", t.log_every)
    _one_of("eval.select_metric", e.select_metric, ("val/tcr", "val/auc", "val/loss"))
    _positive("eval.batch_size", e.batch_size)
    _positive("eval.max_videos", e.max_videos, allow_zero=True)
