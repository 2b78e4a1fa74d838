"""The run config's schema: one pydantic model per section, the rules between keys, building from plain data.

Every field's type carries its check and its expectation in words (:mod:`segattn.engine.config_checks`);
unknown keys are refused (``extra="forbid"``) with the closest accepted key; reading files and
``--set`` overrides is :mod:`segattn.engine.config_files`. ``Config.model_json_schema()`` describes
every key (types, ranges, defaults) as JSON Schema.
"""

from typing import Any, Dict, Iterable, List

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from segattn.engine.config_checks import (
    BOOL,
    CLASS_WEIGHT,
    MAPPING,
    SIZE,
    ConfigError,
    choice,
    error_text,
    integer,
    number,
    numbers,
    optional,
    pattern,
    text,
)
from segattn.engine.short import shorten_config


def _loss_names() -> List[str]:
    try:
        from segattn.models.losses import LOSSES
    except ImportError:  # pragma: no cover - engine without the models package
        return ["ce"]
    return sorted(LOSSES)


TEXT = text()
OPT_TEXT = optional(TEXT)
POS_INT, NONNEG_INT = integer(1), integer(0)
OPT_SIZE = optional(SIZE)
LOSS_NAME = choice(_loss_names)
DEVICE = pattern(r"auto|cpu|mps|cuda(:\d+)?", "'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'")
MAX_EVAL_SCALE = 8.0


class _Section(BaseModel):
    """A config section: unknown keys refused, NaN/inf refused, defaults trusted."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelConfig(_Section):
    """Arguments of ``segattn.create_model``; ``kwargs`` go through unchanged.

    ``pretrained``: backbone weights (a torchvision / timm / mmseg / segattn ResNet file) or a segattn
    training checkpoint (``last.pt`` / ``best.pt``) to fine-tune from.
    ``init``: a ``save_pretrained`` / converted-zoo folder to fine-tune from; its architecture,
    normalisation and eval settings replace the config's (:mod:`segattn.engine.finetune`).
    """

    name: TEXT = "fcn"
    backbone: TEXT = "resnet50"
    output_stride: choice(8, 16, 32) = 8
    pretrained: OPT_TEXT = None
    init: OPT_TEXT = None
    aux: BOOL = True
    kwargs: MAPPING = {}


class DataConfig(_Section):
    """Dataset, augmentation and loader settings (see ``segattn.data.transforms.build_transforms``).

    ``transforms: false`` passes no transform: the dataset returns [0, 1] images (synthetic data).
    ``resize`` is the (h, w) box training images are fitted into (keep ratio) before random scaling;
    ``val_resize`` (default: none) fits validation images *and masks*; to score full-resolution masks
    while running the model smaller, leave it unset and use ``eval.scales: [0.5]`` instead.
    Sizes are ``[h, w]`` (a single ``n`` means ``[n, n]``).
    """

    dataset: TEXT = "synthetic"
    root: OPT_TEXT = None
    train_split: TEXT = "train"
    val_split: OPT_TEXT = "val"
    dataset_kwargs: MAPPING = {}
    train_kwargs: MAPPING = {}
    val_kwargs: MAPPING = {}
    transforms: BOOL = True
    crop_size: OPT_SIZE = None
    scale_range: optional(numbers(number(0.0, 16.0, lo_open=True), 2)) = [0.5, 2.0]
    cat_max_ratio: number(0.0, 1.0, lo_open=True) = 0.75
    flip_prob: number(0.0, 1.0) = 0.5
    photometric: BOOL = True
    resize: OPT_SIZE = None
    val_resize: OPT_SIZE = None
    mean: numbers(number()) = [123.675, 116.28, 103.53]
    std: numbers(number(0.0, lo_open=True)) = [58.395, 57.12, 57.375]
    batch_size: POS_INT = 8
    val_batch_size: POS_INT = 1
    num_workers: NONNEG_INT = 0


class OptimConfig(_Section):
    """``sgd`` (momentum, optional nesterov) or ``adamw``; ``head_lr_mult`` scales non-backbone params."""

    name: choice("sgd", "adamw") = "sgd"
    lr: number(0.0, lo_open=True) = 0.01
    momentum: number(0.0, 1.0, hi_open=True) = 0.9
    nesterov: BOOL = False
    weight_decay: number(0.0) = 5e-4
    betas: numbers(number(0.0, 1.0, hi_open=True), 2) = [0.9, 0.999]
    head_lr_mult: number(0.0) = 1.0
    no_decay_norm_bias: BOOL = False


class ScheduleConfig(_Section):
    """Per-iteration poly LR, ``lr * (1 - t/T)^power`` down to ``min_lr``, after a linear warmup."""

    iters: POS_INT = 80000
    power: number(0.0) = 0.9
    min_lr: number(0.0) = 1e-4
    warmup_iters: NONNEG_INT = 0
    warmup_ratio: number(0.0, 1.0) = 0.1


class LossConfig(_Section):
    """``segattn.models.losses.build_loss`` arguments; ``class_weight`` may be a list or ``"auto"``."""

    name: LOSS_NAME = "ce"
    class_weight: CLASS_WEIGHT = None
    kwargs: MAPPING = {}


class TrainConfig(_Section):
    """Loop settings. ``amp_dtype``: ``bf16`` or ``fp16`` (fp16 on CUDA only, with a GradScaler).

    ``resume``: ``auto`` (``<work_dir>/last.pt``; an error when there is none) or a checkpoint path.
    ``overwrite``: start afresh in a work dir that holds an earlier run (its checkpoints, logs and
    config are removed first). ``allow_config_change``: resume although the config differs from the
    one stored in the work dir (the differences are printed). ``nonfinite_tolerance``: consecutive
    non-finite losses accepted while an fp16 GradScaler skips those steps (without a scaler the first
    non-finite loss stops the run).
    """

    work_dir: TEXT = "runs/default"
    seed: NONNEG_INT = 0
    deterministic: BOOL = False
    amp: BOOL = False
    amp_dtype: choice("bf16", "fp16") = "bf16"
    grad_clip: optional(number(0.0, lo_open=True)) = None
    sync_bn: BOOL = True
    eval_interval: NONNEG_INT = 0
    ckpt_interval: NONNEG_INT = 1000
    log_interval: POS_INT = 50
    resume: OPT_TEXT = None
    overwrite: BOOL = False
    allow_config_change: BOOL = False
    nonfinite_tolerance: NONNEG_INT = 5
    progress: BOOL = True
    tensorboard: BOOL = True
    device: DEVICE = "auto"
    threads: optional(POS_INT) = None
    channels_last: BOOL = False
    find_unused_parameters: BOOL = False


class EvalConfig(_Section):
    """``mode``: ``whole`` or ``slide`` (needs ``crop_size`` and ``stride``); ``scales`` + ``flip`` for TTA;
    ``max_samples``: score only the first N validation images (not batches)."""

    mode: choice("whole", "slide") = "whole"
    crop_size: OPT_SIZE = None
    stride: OPT_SIZE = None
    scales: numbers(number(0.0, MAX_EVAL_SCALE, lo_open=True)) = [1.0]
    flip: BOOL = False
    max_samples: optional(POS_INT) = None


class Config(_Section):
    """A whole run."""

    name: TEXT = "run"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        """Keys an earlier segattn wrote but never read: dropped when they hold their old default."""
        if not isinstance(data, dict):
            return data
        for (section, key), (old, why) in _REMOVED.items():
            part = data.get(section)
            if isinstance(part, dict) and key in part:
                if part[key] != old:
                    raise ValueError(f"config key {section}.{key}: got {part[key]!r}; {why}; remove the key")
                data = {**data, section: {k: v for k, v in part.items() if k != key}}
        return data

    @model_validator(mode="after")
    def _rules(self) -> "Config":
        _check_rules(self)
        return self

    def to_dict(self) -> Dict[str, Any]:
        return self.model_dump(warnings=False)

    def validate(self) -> "Config":  # type: ignore[override]  # (BaseModel.validate: a deprecated classmethod)
        """Check (and normalise in place) every key and the rules between keys; returns ``self``."""
        checked = config_from_dict(self.to_dict())
        for name in type(self).model_fields:
            setattr(self, name, getattr(checked, name))
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


def _check_rules(cfg: "Config") -> None:
    """Rules that involve more than one key."""
    d, e = cfg.data, cfg.eval
    if len(d.mean) != len(d.std):
        raise ValueError(f"config keys data.mean and data.std: got {len(d.mean)} and {len(d.std)} values, "
                          "expected one of each per input channel")
    if d.scale_range is not None and d.scale_range[0] > d.scale_range[1]:
        raise ValueError(f"config key data.scale_range: got {d.scale_range}, expected [low, high] with low <= high")
    if e.mode == "slide":
        for key in ("crop_size", "stride"):
            if getattr(e, key) is None:
                raise ValueError(f"config key eval.{key}: got null, expected [h, w] (slide mode needs it)")
        if any(s > c for s, c in zip(e.stride, e.crop_size)):
            raise ValueError(f"config key eval.stride: got {e.stride}, expected at most eval.crop_size {e.crop_size} "
                             "on each side (a larger step leaves pixels between the windows unpredicted)")
    if cfg.optim.nesterov and cfg.optim.name == "sgd" and cfg.optim.momentum == 0:
        raise ValueError("config key optim.momentum: got 0, expected > 0 (optim.nesterov needs momentum)")
    if cfg.model.init and cfg.model.pretrained:
        raise ValueError(f"config keys model.init ({cfg.model.init!r}) and model.pretrained "
                          f"({cfg.model.pretrained!r}) exclude each other: the init folder holds every layer")
    if cfg.schedule.min_lr > cfg.optim.lr:
        raise ValueError(f"config key schedule.min_lr: got {cfg.schedule.min_lr}, expected at most optim.lr "
                         f"({cfg.optim.lr}): it is the floor of the poly decay, above the LR the run would keep one "
                         "constant LR")
    if cfg.train.resume and cfg.train.overwrite:
        raise ValueError(f"config keys train.resume ({cfg.train.resume!r}) and train.overwrite (true) exclude each "
                          "other: resume continues the run in the work dir, overwrite replaces it")


def config_from_dict(data: Dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested plain data; every key is type- and range-checked
    (:class:`ConfigError`, a ``ValueError``, names the key, the value and what is expected)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k != "_base_"}
    try:
        return Config.model_validate(shorten_config(data))  # SEGATTN_DOCS_SHORT=1: smoke runs
    except ValidationError as exc:
        raise ConfigError(error_text(exc.errors()[0], data, _SECTIONS, Config)) from None


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

