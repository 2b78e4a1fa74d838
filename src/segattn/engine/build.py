"""Turn config sections into objects: datasets, model, loss, optimiser, LR schedule, AMP settings."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.engine.config import Config, DataConfig, LossConfig, ModelConfig, OptimConfig, ScheduleConfig

Criterion = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------------------- data
def _size(v: Optional[List[int]]) -> Optional[Tuple[int, int]]:
    if v is None:
        return None
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[-1]))


def check_batchable(data: DataConfig) -> None:
    """``SegattnError`` naming ``data.crop_size`` when random scaling without a crop would give training
    images of different sizes in one batch (torch's collation would fail with "stack expects ...")."""
    if data.transforms and data.crop_size is None and data.scale_range and data.batch_size > 1:
        from segattn.errors import SegattnError

        raise SegattnError(
            f"data.crop_size is not set: with random scaling (data.scale_range={list(data.scale_range)}) the "
            f"training images differ in size and data.batch_size={data.batch_size} of them cannot be stacked; set "
            "data.crop_size (e.g. --set data.crop_size=64 for the 64x64 synthetic images), or data.scale_range=null, "
            "or data.batch_size=1")


def build_dataset_split(data: DataConfig, split: str, train: bool) -> Any:
    """One split of ``data.dataset`` with the training or test transforms of ``data``.

    ``dataset_kwargs`` go to both splits, ``train_kwargs``/``val_kwargs`` to one. With
    ``transforms: false`` no transform is applied: the dataset returns [0, 1] images, which is what
    the synthetic dataset is made for.
    """
    from segattn.data import build_dataset

    if train:
        check_batchable(data)
    kwargs = {**data.dataset_kwargs, **(data.train_kwargs if train else data.val_kwargs)}
    resize = _size(data.resize if train else data.val_resize)
    crop = _size(data.crop_size)
    if not data.transforms:
        return build_dataset(data.dataset, root=data.root, split=split, transform=None, **kwargs)
    from segattn.data.transforms import build_transforms

    probe = build_dataset(data.dataset, root=data.root, split=split, transform=None, **kwargs)
    scale = tuple(data.scale_range) if data.scale_range else None
    tf = build_transforms(train=train, crop_size=crop, scale_range=scale, mean=tuple(data.mean), std=tuple(data.std),
                          ignore_index=probe.ignore_index, resize=resize, cat_max_ratio=data.cat_max_ratio,
                          flip_prob=data.flip_prob, photometric=data.photometric)
    return build_dataset(data.dataset, root=data.root, split=split, transform=tf, **kwargs)


def build_datasets(cfg: Config) -> Tuple[Any, Any]:
    """(train set, val set); the val set is ``None`` when ``data.val_split`` is empty."""
    train = build_dataset_split(cfg.data, cfg.data.train_split, True)
    val = build_dataset_split(cfg.data, cfg.data.val_split, False) if cfg.data.val_split else None
    return train, val


# ---------------------------------------------------------------------------------------- model
def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """``segattn.create_model`` with the config's arguments."""
    from segattn.models import create_model

    stride = {"output_stride": cfg.output_stride}
    if cfg.backbone.startswith("hrnet") and cfg.output_stride == 8:  # the default: HRNet keeps its resolutions
        stride = {}
    return create_model(cfg.name, num_classes, backbone=cfg.backbone, pretrained=cfg.pretrained, aux=cfg.aux,
                        **stride, **cfg.kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# ----------------------------------------------------------------------------------------- loss
def class_frequencies(dataset: Any, num_classes: int, ignore_index: int, max_items: Optional[int] = None) -> Tensor:
    """Pixel count per class over ``dataset`` masks (float64)."""
    from segattn.progress import progress

    counts = torch.zeros(num_classes, dtype=torch.float64)
    n = len(dataset) if max_items is None else min(max_items, len(dataset))
    for i in progress(range(n), desc="class frequencies (dataset scan)", unit="mask"):
        mask = torch.as_tensor(dataset[i][1]).reshape(-1).long()
        mask = mask[(mask != ignore_index) & (mask >= 0) & (mask < num_classes)]
        counts += torch.bincount(mask, minlength=num_classes).double()
    return counts


def balanced_weights(counts: Tensor, mode: str = "median") -> List[float]:
    """Median-frequency balancing ``median(f) / f_c`` (``mode='median'``) or its square root (``'sqrt'``)."""
    freq = counts / counts.sum().clamp_min(1)
    present = freq > 0
    if not bool(present.any()):
        return [1.0] * len(counts)
    med = freq[present].median()
    w = torch.where(present, med / freq.clamp_min(1e-12), torch.ones_like(freq))
    if mode == "sqrt":
        w = w.sqrt()
    elif mode != "median":
        raise ValueError(f"unknown class-weight mode {mode!r}; expected 'median' or 'sqrt'")
    return [round(float(x), 4) for x in w]


def resolve_class_weight(loss: LossConfig, dataset: Any, num_classes: int, ignore_index: int) -> Optional[List[float]]:
    """``loss.class_weight`` as a list: given, or ``"auto"``/``"median"``/``"sqrt"`` from ``dataset``'s masks.

    Pass a dataset without random transforms for the frequencies to be exact.
    """
    cw = loss.class_weight
    if cw is None or isinstance(cw, (list, tuple)):
        if cw is not None and len(cw) != num_classes:
            raise ValueError(f"loss.class_weight has {len(cw)} values for {num_classes} classes")
        return None if cw is None else [float(x) for x in cw]
    counts = class_frequencies(dataset, num_classes, ignore_index)
    return balanced_weights(counts, "median" if cw in ("auto", "median") else str(cw))


def build_criterion(loss: LossConfig, ignore_index: int, class_weight: Optional[List[float]]) -> Criterion:
    """``segattn.models.losses.build_loss`` (plain cross-entropy if the models package lacks it)."""
    try:
        from segattn.models.losses import build_loss
    except ImportError:
        build_loss = None
    if build_loss is not None:
        return build_loss(loss.name, ignore_index=ignore_index, class_weight=class_weight, **loss.kwargs)
    if loss.name != "ce":
        raise ValueError(f"loss {loss.name!r} needs segattn.models.losses")
    weight = None if class_weight is None else torch.tensor(class_weight)

    def ce(logits: Tensor, target: Tensor) -> Tensor:
        w = None if weight is None else weight.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, target, weight=w, ignore_index=ignore_index)

    return ce


# ------------------------------------------------------------------------------------ optimiser
def _is_no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith(".bias")


def param_groups(model: nn.Module, optim: OptimConfig) -> List[Dict[str, Any]]:
    """Backbone params at ``lr``; the rest at ``lr * head_lr_mult``; optionally no decay for norms/biases."""
    groups: Dict[Tuple[bool, bool], Dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = not name.startswith("backbone.")
        no_decay = optim.no_decay_norm_bias and _is_no_decay(name, p)
        key = (head, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": optim.lr * (optim.head_lr_mult if head else 1.0),
                "weight_decay": 0.0 if no_decay else optim.weight_decay,
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, optim)
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov,
                               weight_decay=optim.weight_decay)
    if optim.name == "adamw":
        return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)
    raise ValueError(f"unknown optimizer {optim.name!r}; expected 'sgd' or 'adamw'")


def lr_factor(it: int, sched: ScheduleConfig, base_lr: float) -> float:
    """Multiplier of the base LR after ``it`` steps: poly decay to ``min_lr`` times a linear warmup."""
    t = min(it, sched.iters) / max(1, sched.iters)
    floor = min(1.0, sched.min_lr / base_lr) if base_lr > 0 else 0.0
    factor = (1.0 - floor) * math.pow(1.0 - t, sched.power) + floor
    if sched.warmup_iters > 0 and it < sched.warmup_iters:
        factor *= sched.warmup_ratio + (1.0 - sched.warmup_ratio) * it / sched.warmup_iters
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, sched: ScheduleConfig, base_lr: float
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule (call ``step()`` after every optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, sched, base_lr))


def amp_dtype(enabled: bool, name: str, device: torch.device, training: bool = True) -> Optional[torch.dtype]:
    """Autocast dtype: ``None`` when off; fp16 or bf16 on CUDA; bf16 elsewhere. fp16 off CUDA is an
    error for training (its GradScaler is CUDA-only) and bf16 with a warning for evaluation."""
    if not enabled:
        return None
    if name not in ("bf16", "fp16"):
        raise ValueError(f"amp_dtype must be 'bf16' or 'fp16', got {name!r}")
    if device.type != "cuda":
        if name == "fp16" and training:
            from segattn.errors import SegattnError

            raise SegattnError(f"train.amp_dtype=fp16 needs a CUDA device (its GradScaler is CUDA-only); this run "
                               f"is on {device.type}: use train.amp_dtype=bf16 or train.amp=false")
        if name == "fp16":
            warnings.warn(f"train.amp_dtype=fp16 is CUDA-only; evaluating on {device.type} with bf16 autocast",
                          stacklevel=2)
        return torch.bfloat16
    return torch.float16 if name == "fp16" else torch.bfloat16
