"""Backbones: dilated ResNets, HRNetV2 (``hrnet_w18_small`` / ``hrnet_w18`` / ``hrnet_w48``) and LocalNet
(exact receptive field) written here (registered in ``segattn.registry.BACKBONES``) and an optional timm
adapter (``"timm:<name>"``)."""

from __future__ import annotations

from typing import Any, List

from torch import nn

from segattn.models.backbones.hrnet import HRNet, ResizeConcat
from segattn.models.backbones.localnet import LocalNet
from segattn.models.backbones.resnet import BasicBlock, Bottleneck, FeatureInfo, ResNet
from segattn.models.backbones.timm_adapter import TimmBackbone, timm_available
from segattn.registry import BACKBONES


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build backbone ``name`` (``resnet50``, ``resnet50c`` (V1c), ``resnet50d``, ..., ``hrnet_w18``,
    ``hrnet_w48``, ``hrnet_w18_small``, ``localnet`` or ``timm:<name>``).

    Keywords follow timm: ``output_stride``, ``out_indices``, ``features_only``, ``in_chans``,
    ``multi_grid``, ``pretrained`` (a path or URL; never fetched implicitly).
    """
    if name.startswith("timm:"):
        kwargs.pop("multi_grid", None)
        kwargs.pop("features_only", None)
        return TimmBackbone(name[len("timm:"):], **kwargs)
    return BACKBONES.create(name, **kwargs)


def list_backbones(pattern: str = "*") -> List[str]:
    return BACKBONES.list(pattern)


__all__ = ["ResNet", "HRNet", "ResizeConcat", "LocalNet", "BasicBlock", "Bottleneck", "FeatureInfo", "TimmBackbone",
           "timm_available",
           "create_backbone", "list_backbones"]
