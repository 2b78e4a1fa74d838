"""Run configuration: typed dataclasses, read from YAML or JSON, overridden with ``a.b=c`` strings.

A config file is a mapping with the sections below (every key optional). Every key has a type and a
range (the ``check`` in its field's metadata); they are checked when the config is loaded, before
any data or model is built, and a bad one is a :class:`ConfigError` naming the key, the value given
and what is expected. Unknown keys are an error too, with the closest accepted key as a suggestion.
Numbers may be written in scientific notation (``1e-3``) in files and in ``--set``; booleans are
``true``/``false`` (``yes``/``no``/``on``/``off`` too), never "any non-empty text".

One optional ``_base_: other.yaml`` key (a path relative to the file, or the name of a file shipped
under ``segattn/configs``) deep-merges the file on top of its base; a base may itself have a base.
That is the only inheritance there is.

Example (YAML)::

    _base_: ../_base_/camvid_cpu.yaml
    model: {name: ccnet, backbone: resnet18, output_stride: 8}
    schedule: {iters: 4000}

``--set schedule.iters=100 --set optim.lr=1e-3`` applies overrides; values are parsed as YAML
(so ``[1, 2]``, ``true``, ``null`` and numbers work) or, without PyYAML, as JSON, else kept as text.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from segattn.engine.short import shorten_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config key or value that cannot work; the message names the key, the value and what is expected."""


# ------------------------------------------------------------------------------------------ checks
class Check:
    """One key's type and range: ``check(value, key)`` returns the value normalised or raises ConfigError."""

    expected = "a value"

    def __call__(self, value: Any, key: str) -> Any:
        raise NotImplementedError

    def fail(self, value: Any, key: str, expected: Optional[str] = None) -> ConfigError:
        return ConfigError(f"config key {key}: got {value!r}, expected {expected or self.expected}")


def _number(value: Any) -> Optional[float]:
    """``value`` as a finite float (numbers and numeric text such as ``"1e-3"``), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _range_text(lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


class Float(Check):
    def __init__(self, lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
                 hi_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.expected = f"a number {_range_text(lo, hi, lo_open, hi_open)}".strip()

    def __call__(self, value: Any, key: str) -> float:
        x = _number(value)
        if x is None:
            raise self.fail(value, key)
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            raise self.fail(value, key)
        if self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)):
            raise self.fail(value, key)
        return x


class Int(Float):
    def __init__(self, lo: Optional[int] = None, hi: Optional[int] = None, choices: Sequence[int] = ()) -> None:
        super().__init__(lo, hi)
        self.choices = tuple(choices)
        self.expected = (f"one of {', '.join(map(str, choices))}" if choices
                         else f"an integer {_range_text(lo, hi, False, False)}".strip())

    def __call__(self, value: Any, key: str) -> int:
        x = super().__call__(value, key)
        if x != int(x) or (self.choices and int(x) not in self.choices):
            raise self.fail(value, key)
        return int(x)


class Bool(Check):
    expected = "true or false"
    WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}

    def __call__(self, value: Any, key: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in self.WORDS:
            return self.WORDS[value.strip().lower()]
        raise self.fail(value, key)


class Str(Check):
    def __init__(self, choices: Sequence[str] = (), pattern: Optional[str] = None, what: str = "") -> None:
        self.choices, self.pattern = tuple(choices), pattern
        self.expected = what or (f"one of {', '.join(repr(c) for c in choices)}" if choices else "a non-empty string")

    def __call__(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(value, key)
        if self.choices and value not in self.choices:
            hint = difflib.get_close_matches(str(value), self.choices, n=1)
            raise self.fail(value, key, self.expected + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise self.fail(value, key)
        return value


class Size(Check):
    """A positive int ``n`` (-> ``[n, n]``) or ``[h, w]`` / ``[n]`` of positive ints; stored as ``[h, w]``."""

    expected = "a positive integer or [h, w] of positive integers"
    _int = Int(1)

    def __call__(self, value: Any, key: str) -> List[int]:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(items) not in (1, 2):
            raise self.fail(value, key)
        try:
            sizes = [self._int(v, key) for v in items]
        except ConfigError:
            raise self.fail(value, key) from None
        return [sizes[0], sizes[-1]]


class Numbers(Check):
    """A list of numbers, each checked by ``item``; ``length`` fixes the count."""

    def __init__(self, item: Float, length: Optional[int] = None) -> None:
        self.item, self.length = item, length
        count = f"{length} numbers" if length else "a non-empty list of numbers"
        self.expected = f"{count}, each {item.expected.replace('a number ', '')}"

    def __call__(self, value: Any, key: str) -> List[float]:
        if not isinstance(value, (list, tuple)) or not value or (self.length and len(value) != self.length):
            raise self.fail(value, key)
        try:
            return [self.item(v, key) for v in value]
        except ConfigError:
            raise self.fail(value, key) from None


class Mapping_(Check):
    expected = "a mapping (key: value, ...)"

    def __call__(self, value: Any, key: str) -> Dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(value, key)
        return copy.deepcopy(value)


class Opt(Check):
    """``None`` or what ``check`` accepts (empty, ``"null"`` or ``"none"`` text counts as ``None``)."""

    def __init__(self, check: Check) -> None:
        self.check = check
        self.expected = f"{check.expected}, or null"

    def __call__(self, value: Any, key: str) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none", "~")):
            return None
        try:
            return self.check(value, key)
        except ConfigError:
            raise self.fail(value, key) from None


class ClassWeight(Check):
    expected = "null, 'auto', 'median', 'sqrt' or a list of numbers >= 0 (one per class, not all 0)"
    MODES = ("auto", "median", "sqrt")
    _item = Float(0.0)

    def __call__(self, value: Any, key: str) -> Any:
        if value is None or value in self.MODES:
            return value
        if isinstance(value, (list, tuple)) and value:
            try:
                weights = [self._item(v, key) for v in value]
            except ConfigError:
                raise self.fail(value, key) from None
            if any(w > 0 for w in weights):
                return weights
        raise self.fail(value, key)


def _f(default: Any, check: Check) -> Any:
    """A dataclass field with its check; mutable defaults are copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"check": check})
    return field(default=default, metadata={"check": check})


def _loss_names() -> Tuple[str, ...]:
    try:
        from segattn.models.losses import LOSSES
    except ImportError:  # pragma: no cover - engine without the models package
        return ("ce",)
    return tuple(sorted(LOSSES))


class _LossName(Str):
    def __call__(self, value: Any, key: str) -> str:
        self.choices = _loss_names()
        self.expected = f"one of {', '.join(repr(c) for c in self.choices)}"
        return super().__call__(value, key)


_POS_INT, _NONNEG_INT = Int(1), Int(0)
_DEVICE = Str(pattern=r"auto|cpu|mps|cuda(:\d+)?", what="'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'")


# ----------------------------------------------------------------------------------------- schema
@dataclass
class ModelConfig:
    """Arguments of ``segattn.create_model``; ``kwargs`` go through unchanged.

    ``pretrained``: backbone weights (a torchvision / timm / mmseg / segattn ResNet file) or a segattn
    training checkpoint (``last.pt`` / ``best.pt``) to fine-tune from.
    """

    name: str = _f("fcn", Str())
    backbone: str = _f("resnet50", Str())
    output_stride: int = _f(8, Int(choices=(8, 16, 32)))
    pretrained: Optional[str] = _f(None, Opt(Str()))
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
    return _build(Config, shorten_config(data), "").validate()  # SEGATTN_DOCS_SHORT=1: smoke runs


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


def deep_merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    """``top`` over ``base``; mappings merge recursively, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# YAML 1.1 (PyYAML) reads 1e-3 as text; YAML 1.2 and JSON read it as a number, and so do we
_FLOAT_RE = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


def _yaml_loader() -> Any:
    """PyYAML's safe loader that also reads scientific notation without a dot (``1e-3``) as a float."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))
    return Loader


def _read_file(path: Path) -> Dict[str, Any]:
    """The mapping in a YAML/JSON file; a syntax error is a ``ConfigError`` naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not a UTF-8 text file") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    else:
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - exercised only without PyYAML
            raise ImportError(f"reading {path} needs PyYAML (pip install 'segattn[yaml]'); or use JSON") from exc
        try:
            data = yaml.load(text, Loader=_yaml_loader()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections, got {type(data).__name__}")
    return data


def resolve_config_path(path: str) -> Path:
    """A path as given, else relative to the shipped ``segattn/configs`` folder (with or without .yaml)."""
    candidates = [Path(path), CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"config {path!r} not found (also looked under {CONFIG_DIR}); see `segattn configs`")


def load_config_dict(path: str, _seen: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """The merged plain data of ``path`` and its ``_base_`` chain."""
    file = resolve_config_path(path)
    key = str(file.resolve())
    if key in _seen:
        raise ValueError(f"config base cycle: {' -> '.join(_seen + (key,))}")
    data = _read_file(file)
    base = data.pop("_base_", None)
    if base is None:
        return data
    base_path = file.parent / base
    base_data = load_config_dict(str(base_path) if base_path.is_file() else base, _seen + (key,))
    return deep_merge(base_data, data)


def parse_value(text: str) -> Any:
    """An override value: YAML scalar/list/mapping (``1e-3`` is a number) if PyYAML is there, else JSON,
    else the raw text."""
    try:
        import yaml

        return yaml.load(text, Loader=_yaml_loader())
    except ImportError:  # pragma: no cover
        pass
    except Exception:
        return text
    try:  # pragma: no cover
        return json.loads(text)
    except ValueError:  # pragma: no cover
        return text


def apply_overrides(data: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """Apply ``a.b.c=value`` strings to nested plain data (a copy); keys inside ``kwargs`` may be new."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = parse_value(raw)
    return out


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> Config:
    """Read ``path`` (YAML/JSON, with its bases), apply ``overrides``, and check every key."""
    data = load_config_dict(path) if path else {}
    try:
        return config_from_dict(apply_overrides(data, overrides))
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"{path}: {exc}") from None


def save_config(cfg: Config, path: str) -> None:
    """Write ``cfg`` as JSON (always readable back with :func:`load_config`)."""
    from segattn.io import atomic_write_json

    atomic_write_json(path, cfg.to_dict())


def list_configs(pattern: str = "*") -> List[str]:
    """Shipped config names (relative to ``segattn/configs``, without ``_base_`` files and ``plans``)."""
    import fnmatch

    names = []
    for p in sorted(CONFIG_DIR.rglob("*")):
        if p.suffix in (".yaml", ".yml", ".json") and not {"_base_", "plans"} & set(p.parts):
            rel = str(p.relative_to(CONFIG_DIR))
            if fnmatch.fnmatch(rel, pattern):
                names.append(rel)
    return names
