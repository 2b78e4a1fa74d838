"""The run config's schema: one dataclass per section, the rules between keys, building from plain data.

Every field carries its check (:mod:`segattn.engine.config_checks`); reading files and ``--set``
overrides is :mod:`segattn.engine.config_files`.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional

from segattn.engine.config_checks import (
    _DEVICE,
    _NONNEG_INT,
    _POS_INT,
    Bool,
    ClassWeight,
    ConfigError,
    Float,
    Int,
    Mapping_,
    Numbers,
    Opt,
    Size,
    Str,
    _f,
    _LossName,
)


# ----------------------------------------------------------------------------------------- schema
@dataclass
class ModelConfig:
    """Arguments of ``segattn.create_model``; ``kwargs`` go through unchanged.

    ``pretrained``: backbone weights (a torchvision / timm / mmseg / segattn ResNet file) or a segattn
    training checkpoint (``last.pt`` / ``best.pt``) to fine-tune from.
    ``init``: a ``save_pretrained`` / converted-zoo folder to fine-tune from; its architecture,
    normalisation and eval settings replace the config's (:mod:`segattn.engine.finetune`).
    """

    name: str = _f("fcn", Str())
    backbone: str = _f("resnet50", Str())
    output_stride: int = _f(8, Int(choices=(8, 16, 32)))
    pretrained: Optional[str] = _f(None, Opt(Str()))
    init: Optional[str] = _f(None, Opt(Str()))
    aux: bool = _f(True, Bool())
    kwargs: Dict[str, Any] = _f({}, Mapping_())


@dataclass
class DataConfig:
    """Dataset, augmentation and loader settings (see ``segattn.data.transforms.build_transforms``).

    ``transforms: false`` passes no transform: the dataset returns [0, 1] images (synthetic data).
    ``resize`` is the (h, w) box training images are fitted into (keep ratio) before random scaling;
    ``val_resize`` (default: none) fits validation images *and masks*; to score full-resolution masks
    while running the model smaller, leave it unset and use ``eval.scales: [0.5]`` instead.
    Sizes are ``[h, w]`` (a single ``n`` means ``[n, n]``).
    """

    dataset: str = _f("synthetic", Str())
    root: Optional[str] = _f(None, Opt(Str()))
    train_split: str = _f("train", Str())
    val_split: Optional[str] = _f("val", Opt(Str()))
    dataset_kwargs: Dict[str, Any] = _f({}, Mapping_())
    train_kwargs: Dict[str, Any] = _f({}, Mapping_())
    val_kwargs: Dict[str, Any] = _f({}, Mapping_())
    transforms: bool = _f(True, Bool())
    crop_size: Optional[List[int]] = _f(None, Opt(Size()))
    scale_range: Optional[List[float]] = _f([0.5, 2.0], Opt(Numbers(Float(0.0, 16.0, lo_open=True), 2)))
    cat_max_ratio: float = _f(0.75, Float(0.0, 1.0, lo_open=True))
    flip_prob: float = _f(0.5, Float(0.0, 1.0))
    photometric: bool = _f(True, Bool())
    resize: Optional[List[int]] = _f(None, Opt(Size()))
    val_resize: Optional[List[int]] = _f(None, Opt(Size()))
    mean: List[float] = _f([123.675, 116.28, 103.53], Numbers(Float()))
    std: List[float] = _f([58.395, 57.12, 57.375], Numbers(Float(0.0, lo_open=True)))
    batch_size: int = _f(8, _POS_INT)
    val_batch_size: int = _f(1, _POS_INT)
    num_workers: int = _f(0, _NONNEG_INT)


@dataclass
class OptimConfig:
    """``sgd`` (momentum, optional nesterov) or ``adamw``; ``head_lr_mult`` scales non-backbone params."""

    name: str = _f("sgd", Str(("sgd", "adamw")))
    lr: float = _f(0.01, Float(0.0, lo_open=True))
    momentum: float = _f(0.9, Float(0.0, 1.0, hi_open=True))
    nesterov: bool = _f(False, Bool())
    weight_decay: float = _f(5e-4, Float(0.0))
    betas: List[float] = _f([0.9, 0.999], Numbers(Float(0.0, 1.0, hi_open=True), 2))
    head_lr_mult: float = _f(1.0, Float(0.0))
    no_decay_norm_bias: bool = _f(False, Bool())


@dataclass
class ScheduleConfig:
    """Per-iteration poly LR, ``lr * (1 - t/T)^power`` down to ``min_lr``, after a linear warmup."""

    iters: int = _f(80000, _POS_INT)
    power: float = _f(0.9, Float(0.0))
    min_lr: float = _f(1e-4, Float(0.0))
    warmup_iters: int = _f(0, _NONNEG_INT)
    warmup_ratio: float = _f(0.1, Float(0.0, 1.0))


@dataclass
class LossConfig:
    """``segattn.models.losses.build_loss`` arguments; ``class_weight`` may be a list or ``"auto"``."""

    name: str = _f("ce", _LossName())
    class_weight: Optional[Any] = _f(None, ClassWeight())
    kwargs: Dict[str, Any] = _f({}, Mapping_())


@dataclass
class TrainConfig:
    """Loop settings. ``amp_dtype``: ``bf16`` or ``fp16`` (fp16 on CUDA only, with a GradScaler).

    ``resume``: ``auto`` (``<work_dir>/last.pt``; an error when there is none) or a checkpoint path.
    ``overwrite``: start afresh in a work dir that holds an earlier run (its checkpoints, logs and
    config are removed first). ``allow_config_change``: resume although the config differs from the
    one stored in the work dir (the differences are printed). ``nonfinite_tolerance``: consecutive
    non-finite losses accepted while an fp16 GradScaler skips those steps (without a scaler the first
    non-finite loss stops the run).
    """

    work_dir: str = _f("runs/default", Str())
    seed: int = _f(0, _NONNEG_INT)
    deterministic: bool = _f(False, Bool())
    amp: bool = _f(False, Bool())
    amp_dtype: str = _f("bf16", Str(("bf16", "fp16")))
    grad_clip: Optional[float] = _f(None, Opt(Float(0.0, lo_open=True)))
    sync_bn: bool = _f(True, Bool())
    eval_interval: int = _f(0, _NONNEG_INT)
    ckpt_interval: int = _f(1000, _NONNEG_INT)
    log_interval: int = _f(50, _POS_INT)
    resume: Optional[str] = _f(None, Opt(Str()))
    overwrite: bool = _f(False, Bool())
    allow_config_change: bool = _f(False, Bool())
    nonfinite_tolerance: int = _f(5, _NONNEG_INT)
    progress: bool = _f(True, Bool())
    tensorboard: bool = _f(True, Bool())
    device: str = _f("auto", _DEVICE)
    threads: Optional[int] = _f(None, Opt(_POS_INT))
    channels_last: bool = _f(False, Bool())
    find_unused_parameters: bool = _f(False, Bool())


MAX_EVAL_SCALE = 8.0


@dataclass
class EvalConfig:
    """``mode``: ``whole`` or ``slide`` (needs ``crop_size`` and ``stride``); ``scales`` + ``flip`` for TTA;
    ``max_samples``: score only the first N validation images (not batches)."""

    mode: str = _f("whole", Str(("whole", "slide")))
    crop_size: Optional[List[int]] = _f(None, Opt(Size()))
    stride: Optional[List[int]] = _f(None, Opt(Size()))
    scales: List[float] = _f([1.0], Numbers(Float(0.0, MAX_EVAL_SCALE, lo_open=True)))
    flip: bool = _f(False, Bool())
    max_samples: Optional[int] = _f(None, Opt(_POS_INT))


@dataclass
class Config:
    """A whole run."""

    name: str = _f("run", Str())
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> Config:
        """Check (and normalise in place) every key and the rules between keys; returns ``self``."""
        for section in dataclasses.fields(self):
            obj = getattr(self, section.name)
            if section.name in _SECTIONS:
                for f in dataclasses.fields(obj):
                    setattr(obj, f.name, f.metadata["check"](getattr(obj, f.name), f"{section.name}.{f.name}"))
            else:
                setattr(self, section.name, section.metadata["check"](obj, section.name))
        _check_rules(self)
        return self


_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}
# keys an earlier segattn wrote but never read: dropped when they hold their old default, else an error
_REMOVED = {("eval", "transforms"): (True, "eval.transforms was never read (evaluation uses data.transforms)")}


def _check_rules(cfg: Config) -> None:
    """Rules that involve more than one key."""
    d, e = cfg.data, cfg.eval
    if len(d.mean) != len(d.std):
        raise ConfigError(f"config keys data.mean and data.std: got {len(d.mean)} and {len(d.std)} values, "
                          "expected one of each per input channel")
    if d.scale_range is not None and d.scale_range[0] > d.scale_range[1]:
        raise ConfigError(f"config key data.scale_range: got {d.scale_range}, expected [low, high] with low <= high")
    if e.mode == "slide":
        for key in ("crop_size", "stride"):
            if getattr(e, key) is None:
                raise ConfigError(f"config key eval.{key}: got null, expected [h, w] (slide mode needs it)")
    if cfg.optim.nesterov and cfg.optim.name == "sgd" and cfg.optim.momentum == 0:
        raise ConfigError("config key optim.momentum: got 0, expected > 0 (optim.nesterov needs momentum)")
    if cfg.model.init and cfg.model.pretrained:
        raise ConfigError(f"config keys model.init ({cfg.model.init!r}) and model.pretrained "
                          f"({cfg.model.pretrained!r}) exclude each other: the init folder holds every layer")
    if cfg.train.resume and cfg.train.overwrite:
        raise ConfigError(f"config keys train.resume ({cfg.train.resume!r}) and train.overwrite (true) exclude each "
                          "other: resume continues the run in the work dir, overwrite replaces it")


def _unknown(key: str, accepted: Iterable[str], where: str) -> ConfigError:
    accepted = sorted(accepted)
    hint = difflib.get_close_matches(key, accepted, n=1)
    full = f"{where}.{key}" if where else key
    did = f" (did you mean {(where + '.' if where else '') + hint[0]!r}?)" if hint else ""
    kind = "key" if where else "section or key"
    return ConfigError(f"unknown config {kind} {full!r}{did}; accepted in {where or 'the top level'}: "
                       f"{', '.join(accepted)}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where or '<root>'}: got {data!r}, expected a mapping (key: value, ...)")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        removed = _REMOVED.get((where, key))
        if removed is not None:
            if value == removed[0]:
                continue
            raise ConfigError(f"config key {where}.{key}: got {value!r}; {removed[1]}; remove the key")
        if key not in fields:
            raise _unknown(str(key), fields, where)
        target = _SECTIONS.get(key) if cls is Config else None
        if target is not None:
            kwargs[key] = _build(target, value, key)
        else:
            kwargs[key] = fields[key].metadata["check"](value, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def config_from_dict(data: Dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested plain data; every key is type- and range-checked
    (:class:`ConfigError`, a ``ValueError``, names the key, the value and what is expected)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k != "_base_"}
    return _build(Config, data, "").validate()


def config_differences(a: Dict[str, Any], b: Dict[str, Any], ignore: Iterable[str] = ()) -> List[str]:
    """``"key: A -> B"`` for every dotted key whose value differs between plain config dicts ``a`` and ``b``."""
    skip = set(ignore)
    out: List[str] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        if prefix in skip:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=str):
                walk(x.get(k, "<unset>"), y.get(k, "<unset>"), f"{prefix}.{k}" if prefix else str(k))
        elif x != y:
            out.append(f"{prefix}: {x!r} -> {y!r}")

    walk(a, b, "")
    return out

