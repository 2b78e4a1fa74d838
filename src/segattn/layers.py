"""Small building blocks shared by modules, heads and backbones."""

from __future__ import annotations

import math
from typing import Optional, Union

import torch.nn.functional as F
from torch import Tensor, nn


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that does not crash on one value per channel in training.

    A globally pooled branch (ASPP image pooling, PPM bin 1) sees a (1, C, 1, 1) tensor with batch 1;
    plain BN raises there. This layer normalises such a batch with the running statistics (as in eval)
    and leaves them unchanged. Everything else is plain BatchNorm2d (SyncBN conversion works).
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.dim() == 4 and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def make_act(act: Optional[str]) -> nn.Module:
    """``'relu'``, ``'leaky_relu'`` (slope 0.01, as InPlaceABN), ``'gelu'`` or ``None`` (identity)."""
    if act is None:
        return nn.Identity()
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    if act == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {act!r}; expected 'relu', 'leaky_relu', 'gelu' or None")


def init_conv_bn_(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) for every ``Conv2d`` in ``module``, BatchNorm weight 1 and bias 0:
    the initialisation of torchvision's and mmcv's ResNets and of HRNet."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """``GroupNorm(32)`` as mmcv's ``dict(type='GN', num_groups=32)``; a width that 32 does not divide
    (test-size heads) gets ``gcd(32, channels)`` groups instead of an error."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ConvNormAct(nn.Sequential):
    """k x k conv ('same' padding, no bias when normalised) -> norm -> activation.

    ``norm``: ``True`` / ``"bn"`` (BatchNorm2d), ``"gn"`` (:func:`group_norm`, GroupNorm(32)) or
    ``False`` (none; the conv then has a bias).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm: Union[bool, str] = True,
        act: Optional[str] = "relu",
        bias: Optional[bool] = None,
    ) -> None:
        if norm not in (True, False, None, "bn", "gn"):
            raise ValueError(f"norm must be True/'bn' (BatchNorm), 'gn' (GroupNorm(32)) or False, got {norm!r}")
        padding = dilation * (kernel_size - 1) // 2
        use_bias = (not norm) if bias is None else bias
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=use_bias)]
        if norm == "gn":
            layers.append(group_norm(out_channels))
        elif norm:
            layers.append(BatchNorm2d(out_channels))
        layers.append(make_act(act))
        super().__init__(*layers)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size

    def macs(self, height: int, width: int) -> int:
        """MACs of the convolution at ``height x width`` outputs (stride 1)."""
        conv = self[0]
        k = conv.kernel_size[0]
        return (conv.in_channels // conv.groups) * conv.out_channels * k * k * height * width
