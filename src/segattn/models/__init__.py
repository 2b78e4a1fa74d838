"""Segmentation models: dilated ResNet backbones, each paper's head, one ``create_model``.

    >>> import segattn, torch
    >>> model = segattn.create_model("ccnet", num_classes=19, backbone="resnet50c", pretrained=None)
    >>> logits = model.eval()(torch.randn(1, 3, 512, 512))        # (1, 19, 512, 512)
"""

from __future__ import annotations

from typing import Any, List

from torch import nn

from segattn.models.backbones import create_backbone, list_backbones
from segattn.models.factory import build_segmentor, create_model, list_models
from segattn.models.losses import build_loss
from segattn.models.segmentor import SegmentationModel, from_pretrained
from segattn.models.weights import LoadReport, load_backbone_weights

try:  # written by the low-rank engineer (EMA bases update once per optimiser step)
    from segattn.lowrank.hooks import call_step_hooks
except ImportError:  # pragma: no cover - fallback until segattn.lowrank.hooks exists

    def call_step_hooks(model: nn.Module) -> int:
        """Call ``after_optimizer_step()`` on every submodule that defines it; returns how many ran."""
        count = 0
        for module in model.modules():
            hook: Any = getattr(module, "after_optimizer_step", None)
            if callable(hook):
                hook()
                count += 1
        return count


__all__: List[str] = [
    "create_model", "list_models", "from_pretrained", "build_segmentor", "SegmentationModel",
    "create_backbone", "list_backbones", "build_loss", "load_backbone_weights", "LoadReport", "call_step_hooks",
]
