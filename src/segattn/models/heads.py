"""Decode heads: reduction conv -> context module(s) -> the paper's fusion -> dropout + 1x1 classifier.

A head maps the backbone feature list ``feats`` (layer1..layer4 by default) to a dict of logits at
feature resolution: ``"out"`` plus extra supervised outputs (DANet's ``"pam"`` / ``"cam"``, produced
only in training). Context modules are built by name through :func:`segattn.create_module` and
their ``out_channels`` attribute, so any registered module can be placed in :class:`ContextHead`.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from segattn.api import create_module
from segattn.layers import ConvNormAct


def classifier(channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    """``Dropout2d(p) -> conv1x1(channels -> num_classes)`` (mmseg ``cls_seg``)."""
    return nn.Sequential(nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
                         nn.Conv2d(channels, num_classes, 1))


def _module_out(module: nn.Module, in_channels: int) -> int:
    return int(getattr(module, "out_channels", in_channels))


def _call(module: nn.Module, *args: Tensor) -> Tensor:
    """Call a context module and keep only its output (modules may return ``(y, factors)``)."""
    out = module(*args)
    return out[0] if isinstance(out, tuple) else out


class ContextHead(nn.Module):
    """mmseg's FCN-with-context layout (NLHead, CCHead, GCHead, FCNHead)::

        x   = feats[in_index]                                   (B, C_in, h, w)
        r   = ConvBNReLU_k(C_in -> channels)(x)                 reduction conv ("reduce")
        c   = context module(s) on r                            (skipped for FCN)
        c   = ConvBNReLU_k(c -> channels)(c)                    ("post_conv")
        y   = ConvBNReLU_k(cat[x, c] -> channels)               ("concat_input")
        out = conv1x1(Dropout2d(y))

    Every stage can be switched off (``reduce=False`` puts the module on the backbone feature itself,
    e.g. PPM / ASPP / APCNet / PSANet, whose modules carry their own fusion).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        *,
        context: Optional[str] = None,
        context_kw: Optional[Mapping[str, Any]] = None,
        reduce: bool = True,
        post_conv: bool = True,
        concat_input: bool = True,
        kernel_size: int = 3,
        dropout: float = 0.1,
        act: str = "relu",
        in_index: int = -1,
    ) -> None:
        super().__init__()
        self.in_index, self.concat_input = in_index, concat_input
        self.reduce = ConvNormAct(in_channels, channels, kernel_size, act=act) if reduce else nn.Identity()
        width = channels if reduce else in_channels
        self.context = create_module(context, width, **dict(context_kw or {})) if context else nn.Identity()
        width = _module_out(self.context, width) if context else width
        self.post_conv = ConvNormAct(width, channels, kernel_size, act=act) if post_conv else nn.Identity()
        width = channels if post_conv else width
        self.fuse = ConvNormAct(in_channels + width, channels, kernel_size, act=act) if concat_input else None
        width = channels if concat_input else width
        self.cls = classifier(width, num_classes, dropout)

    def features(self, feats: Sequence[Tensor]) -> Tensor:
        x = feats[self.in_index]
        y = self.post_conv(_call(self.context, self.reduce(x)))
        if self.fuse is not None:
            y = self.fuse(torch.cat([x, y], dim=1))
        return y

    def forward(self, feats: Sequence[Tensor]) -> Dict[str, Tensor]:
        return {"out": self.cls(self.features(feats))}


def fcn_head(in_channels: int, channels: int, num_classes: int, num_convs: int = 2, concat_input: bool = True,
             dropout: float = 0.1) -> ContextHead:
    """mmseg FCNHead: ``num_convs`` (1 or 2) 3x3 ConvBNReLU, optional concat with the input."""
    if num_convs not in (1, 2):
        raise ValueError(f"num_convs must be 1 or 2, got {num_convs}")
    return ContextHead(in_channels, channels, num_classes, post_conv=num_convs == 2,
                       concat_input=concat_input, dropout=dropout)


def aux_head(in_channels: int, channels: int, num_classes: int, dropout: float = 0.1) -> ContextHead:
    """The auxiliary FCN on stage 4 (res4): 3x3 ConvBNReLU -> Dropout2d(0.1) -> 1x1 classifier."""
    return fcn_head(in_channels, channels, num_classes, num_convs=1, concat_input=False, dropout=dropout)


__all__ = ["ContextHead", "classifier", "fcn_head", "aux_head"]
