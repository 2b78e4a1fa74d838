"""Run configuration: plain dataclasses, read from YAML or JSON, overridden with ``a.b=c`` strings.

A config file is a mapping with the sections below (every key optional; unknown keys are an error
that names the accepted ones). One optional ``_base_: other.yaml`` key (a path relative to the file,
or the name of a file shipped under ``segattn/configs``) deep-merges the file on top of its base; a
base may itself have a base. That is the only inheritance there is.

Example (YAML)::

    _base_: ../_base_/camvid_cpu.yaml
    model: {name: ccnet, backbone: resnet18, output_stride: 8}
    schedule: {iters: 4000}

``--set schedule.iters=100 --set optim.lr=0.02`` applies overrides; values are parsed as YAML
(so ``[1, 2]``, ``true``, ``null`` and numbers work) or, without PyYAML, as JSON, else kept as text.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class ModelConfig:
    """Arguments of ``segattn.create_model``; ``kwargs`` go through unchanged."""

    name: str = "fcn"
    backbone: str = "resnet50"
    output_stride: int = 8
    pretrained: Optional[str] = None
    aux: bool = True
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Dataset, augmentation and loader settings (see ``segattn.data.transforms.build_transforms``).

    ``transforms: false`` passes no transform: the dataset returns [0, 1] images (synthetic data).
    ``resize`` is the (h, w) box training images are fitted into (keep ratio) before random scaling;
    ``val_resize`` (default: none) fits validation images *and masks*; to score full-resolution masks
    while running the model smaller, leave it unset and use ``eval.scales: [0.5]`` instead.
    """

    dataset: str = "synthetic"
    root: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    dataset_kwargs: Dict[str, Any] = field(default_factory=dict)
    train_kwargs: Dict[str, Any] = field(default_factory=dict)
    val_kwargs: Dict[str, Any] = field(default_factory=dict)
    transforms: bool = True
    crop_size: Optional[List[int]] = None
    scale_range: Optional[List[float]] = field(default_factory=lambda: [0.5, 2.0])
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    resize: Optional[List[int]] = None
    val_resize: Optional[List[int]] = None
    mean: List[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    std: List[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])
    batch_size: int = 8
    val_batch_size: int = 1
    num_workers: int = 0


@dataclass
class OptimConfig:
    """``sgd`` (momentum, optional nesterov) or ``adamw``; ``head_lr_mult`` scales non-backbone params."""

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    head_lr_mult: float = 1.0
    no_decay_norm_bias: bool = False


@dataclass
class ScheduleConfig:
    """Per-iteration poly LR, ``lr * (1 - t/T)^power`` down to ``min_lr``, after a linear warmup."""

    iters: int = 80000
    power: float = 0.9
    min_lr: float = 1e-4
    warmup_iters: int = 0
    warmup_ratio: float = 0.1


@dataclass
class LossConfig:
    """``segattn.models.losses.build_loss`` arguments; ``class_weight`` may be a list or ``"auto"``."""

    name: str = "ce"
    class_weight: Optional[Any] = None
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Loop settings. ``amp_dtype``: ``bf16`` or ``fp16`` (fp16 on CUDA only, with a GradScaler)."""

    work_dir: str = "runs/default"
    seed: int = 0
    deterministic: bool = False
    amp: bool = False
    amp_dtype: str = "bf16"
    grad_clip: Optional[float] = None
    sync_bn: bool = True
    eval_interval: int = 0
    ckpt_interval: int = 1000
    log_interval: int = 50
    resume: Optional[str] = None
    progress: bool = True
    tensorboard: bool = True
    device: str = "auto"
    threads: Optional[int] = None
    channels_last: bool = False
    find_unused_parameters: bool = False


@dataclass
class EvalConfig:
    """``mode``: ``whole`` or ``slide`` (``crop_size``/``stride``); ``scales`` + ``flip`` for TTA."""

    mode: str = "whole"
    transforms: bool = True
    crop_size: Optional[List[int]] = None
    stride: Optional[List[int]] = None
    scales: List[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    max_samples: Optional[int] = None


@dataclass
class Config:
    """A whole run."""

    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: Dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"config section {where or '<root>'!r} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise KeyError(f"unknown config key(s) {unknown} in {where or '<root>'!r}; accepted: {sorted(fields)}")
    kwargs = {}
    for key, value in data.items():
        target = _SECTIONS.get(key) if cls is Config else None
        kwargs[key] = _build(target, value, key) if target is not None else copy.deepcopy(value)
    return cls(**kwargs)


_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


def config_from_dict(data: Dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested plain data, rejecting unknown keys by name."""
    data = {k: v for k, v in data.items() if k != "_base_"}
    return _build(Config, data, "")


def deep_merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    """``top`` over ``base``; mappings merge recursively, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_file(path: Path) -> Dict[str, Any]:
    """The mapping in a YAML/JSON file; a syntax error is a ``ValueError`` naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"config {path} is not a UTF-8 text file") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    else:
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - exercised only without PyYAML
            raise ImportError(f"reading {path} needs PyYAML (pip install 'segattn[yaml]'); or use JSON") from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"{path}: YAML syntax error{where}: {problem}") from None
    if not isinstance(data, dict):
        raise TypeError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
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
    """An override value: YAML scalar/list/mapping if PyYAML is there, else JSON, else the raw text."""
    try:
        import yaml

        return yaml.safe_load(text)
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
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = parse_value(raw)
    return out


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> Config:
    """Read ``path`` (YAML/JSON, with its bases), apply ``overrides``, and check every key."""
    data = load_config_dict(path) if path else {}
    return config_from_dict(apply_overrides(data, overrides))


def save_config(cfg: Config, path: str) -> None:
    """Write ``cfg`` as JSON (always readable back with :func:`load_config`)."""
    from segattn.io import atomic_write_json

    atomic_write_json(path, cfg.to_dict())


def list_configs(pattern: str = "*") -> List[str]:
    """Shipped config names (relative to ``segattn/configs``, without ``_base_`` files)."""
    import fnmatch

    names = []
    for p in sorted(CONFIG_DIR.rglob("*")):
        if p.suffix in (".yaml", ".yml", ".json") and "_base_" not in p.parts:
            rel = str(p.relative_to(CONFIG_DIR))
            if fnmatch.fnmatch(rel, pattern):
                names.append(rel)
    return names
