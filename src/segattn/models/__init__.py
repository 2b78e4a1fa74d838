"""Segmentation models: dilated ResNet backbones, each paper's head, one ``create_model``.

    >>> import segattn, torch
    >>> model = segattn.create_model("ccnet", num_classes=19, backbone="resnet50c", pretrained=None)
    >>> logits = model.eval()(torch.randn(1, 3, 512, 512))        # (1, 19, 512, 512)
"""

from __future__ import annotations

from typing import List

from segattn.checkpoints.resnet import LoadReport, load_backbone_weights
from segattn.lowrank.hooks import call_step_hooks
from segattn.models.backbones import create_backbone, list_backbones
from segattn.models.factory import build_segmentor, create_model, list_models
from segattn.models.losses import build_loss
from segattn.models.pretrained import from_pretrained
from segattn.models.segmentor import SegmentationModel

__all__: List[str] = [
    "create_model", "list_models", "from_pretrained", "build_segmentor", "SegmentationModel",
    "create_backbone", "list_backbones", "build_loss", "load_backbone_weights", "LoadReport", "call_step_hooks",
]
