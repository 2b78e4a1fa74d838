"""Tiny stand-ins for the engine tests: a 2-layer conv model with the models interface and a toy dataset."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from segattn.engine.config import Config, config_from_dict


class TinySeg(nn.Module):
    """conv3x3 -> ReLU -> (classifier, aux classifier); train mode returns the train dict.

    ``norm``: "none" (no batch coupling, so DDP == single process exactly) or "bn".
    A buffer counts ``after_optimizer_step`` calls (stands in for EMA bases).
    """

    def __init__(self, num_classes: int = 3, width: int = 8, norm: str = "none", dropout: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width) if norm == "bn" else nn.Identity()
        self.drop = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(width, num_classes, 1)
        self.aux_cls = nn.Conv2d(width, num_classes, 1)
        self.register_buffer("hook_calls", torch.zeros((), dtype=torch.long))
        self.loss_weights = {"out": 1.0, "aux": 0.4}
        self.config = {"name": "tiny", "num_classes": num_classes, "width": width}

    def forward(self, x: Tensor):  # noqa: ANN201
        f = self.drop(torch.relu(self.norm(self.stem(x))))
        out = self.cls(f)
        if self.training:
            return {"out": out, "aux": self.aux_cls(f)}
        return out

    def after_optimizer_step(self) -> None:
        self.hook_calls += 1


class PixelSeg(nn.Module):
    """A per-pixel (1x1 conv) model: translation- and flip-equivariant, so slide == whole exactly."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls = nn.Conv2d(3, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.cls(x)


class ToyDataset(torch.utils.data.Dataset):
    """Class = argmax colour channel (ignore where the image is dark); random flip + noise from global RNGs."""

    def __init__(self, n: int = 16, size: Tuple[int, int] = (12, 12), num_classes: int = 3, seed: int = 0,
                 augment: bool = True, with_ignore: bool = True) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, *size, generator=g)
        self.num_classes = num_classes
        self.ignore_index = 255
        self.classes = [f"c{i}" for i in range(num_classes)]
        self.palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255)][:num_classes]
        self.files = None
        self.augment = augment
        self.with_ignore = with_ignore

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tuple[Tensor, Tensor]:
        img = self.images[i].clone()
        if self.augment:
            if np.random.rand() < 0.5:
                img = img.flip(-1)
            img = img + 0.05 * torch.randn(img.shape)
        mask = img.argmax(0)
        if self.with_ignore:
            mask[img.max(0).values < 0.15] = self.ignore_index
        return img, mask


def tiny_config(work_dir: str, **sections: Dict) -> Config:
    """A fast CPU config (deterministic, no progress bar / TensorBoard) with section overrides."""
    base = {
        "model": {"name": "tiny"},
        "data": {"batch_size": 4, "val_batch_size": 4, "num_workers": 0},
        "optim": {"lr": 0.1, "weight_decay": 1e-4},
        "schedule": {"iters": 6, "warmup_iters": 2, "min_lr": 1e-4},
        "train": {"work_dir": work_dir, "deterministic": True, "progress": False, "tensorboard": False,
                  "log_interval": 1, "ckpt_interval": 0, "eval_interval": 0},
    }
    for key, value in sections.items():
        base.setdefault(key, {}).update(value)
    return config_from_dict(base)
