"""EMANet's expectation-maximisation attention unit (EMAU), built from ``segattn.lowrank`` parts."""

from __future__ import annotations

import math
from typing import Dict, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import NON_NEGATIVE, POSITIVE, UNIT, checked
from segattn.layers import ConvNormAct
from segattn.lowrank import EMMapper, LowRankBlock, TransposeReverse
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.weightmaps import operator_row
from segattn.registry import MODULES


def _kaiming_fan_out_(conv: nn.Conv2d) -> None:
    """Official EMANet conv init: N(0, sqrt(2 / (k * k * out_channels)))."""
    k = conv.kernel_size[0] * conv.kernel_size[1]
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (k * conv.out_channels)))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


@MODULES.register("ema", paper="Li et al., ICCV 2019 (EMANet)", family="lowrank", order="O(T N K C)")
class EMAttention(ContextModule):
    """Expectation-maximisation attention unit (Li, Zhong, Wu, Yang, Lin, Liu, ICCV 2019), spec 3.14.

    With ``X = conv_in(x)`` (1x1 conv C -> C with bias, the official ``conv1``) viewed as (C, N) and the
    bases buffer ``mu`` (C, K), T stages of (``segattn.lowrank.EMMapper``)::

        Z  = softmax_K(lambda X^T mu)                       (N, K)   E-step
        mu = X Z / (eps + sum_N Z),  mu <- mu / ||mu||_C     (C, K)   M-step
        Xr = mu Z^T                                          (C, N)   reconstruction (last Z, last mu)
        out = ReLU(BN(W_out ReLU(Xr)) + x)                   (C, H, W)

    i.e. ``LowRankBlock(EMMapper, identity, TransposeReverse())`` with ``M_map = (Z D^-1)^T`` and
    ``M_rev = Z`` (spec 1.2). Defaults (official): ``num_bases`` K = 64, ``num_stages`` T = 3,
    ``kernel_scale`` lambda = 1, ``momentum`` 0.9 on the old bases, bases ~ N(0, sqrt(2/K))
    l2-normalised (a buffer), convs N(0, sqrt(2/(k^2 out))), BN gamma 1; channel width = in_channels.

    Gradients: ``backprop_through_em=False`` (official) runs the iterations without autograd in
    training, so no gradient reaches ``conv_in`` through ``Z``/``mu``; ``conv_in`` is therefore
    frozen (``requires_grad=False``, as mmseg; the official code trains it to no effect). In eval mode
    the forward is differentiated exactly (the cut is a training device). ``backprop_through_em=True``
    differentiates through all T iterations and trains ``conv_in``.

    Bases: each training forward accumulates the batch's final ``mu``; ``after_optimizer_step()``
    (of ``block.mapper``; ``segattn.lowrank.call_step_hooks(model)`` calls it once per optimiser step) applies ``mu <- 0.9 mu + 0.1 mean``
    over the samples of all forwards since the last step, ``all_reduce``-averaged across processes
    under ``torch.distributed``; eval forwards never change them. In a training loop that never calls
    the hook the bases still move: until the first hook call, each training forward applies the
    average of the forwards before it (and warns once). Non-finite samples are left out of the
    average, with a warning, so a NaN batch cannot make the bases NaN for good. ``renormalize_bases=True``
    l2-normalises after the average (mmseg); the official code does not (default False).
    Deviation from the official code: the average runs in the module's step hook instead of train.py.

    Cost: ``2 N C^2`` (two 1x1 convs) + ``2 T N K C`` (EM) + ``N K C`` (reconstruction) MACs, O(T N K C);
    attention memory O(N K). ``return_attention`` gives the block's factors: ``map`` (B, K, N),
    ``nodes`` = final bases (B, C, K), ``reverse`` = Z (B, N, K), ``assignment`` = Z^T.
    """

    @checked(momentum=UNIT, kernel_scale=POSITIVE, eps=NON_NEGATIVE)
    def __init__(
        self,
        in_channels: int,
        *,
        num_bases: int = 64,
        num_stages: int = 3,
        momentum: float = 0.9,
        backprop_through_em: bool = False,
        renormalize_bases: bool = False,
        kernel_scale: float = 1.0,
        l2norm: bool = True,
        eps: float = 1e-6,
    ) -> None:
        super().__init__(in_channels)
        c = in_channels
        self.conv_in = nn.Conv2d(c, c, 1, bias=True)
        _kaiming_fan_out_(self.conv_in)
        self.conv_in.requires_grad_(backprop_through_em)
        mapper = EMMapper(
            c,
            num_bases,
            num_stages,
            kernel_scale=kernel_scale,
            l2norm=l2norm,
            backprop=backprop_through_em,
            eps=eps,
            momentum=momentum,
            renormalize=renormalize_bases,
        )
        self.block = LowRankBlock(mapper, None, TransposeReverse())
        self.conv_out = ConvNormAct(c, c, 1, act=None)
        _kaiming_fan_out_(self.conv_out[0])

    @property
    def bases(self) -> Tensor:
        """The (C, K) bases buffer (``block.mapper.bases``)."""
        return self.block.mapper.bases

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        h = self.conv_in(x)
        if return_attention:
            rec, factors = self.block(h, return_factors=True)
        else:
            rec, factors = self.block(h), {}
        # in place: neither the reconstruction (a product's output) nor the sum is kept for the backward,
        # so inference holds one map less at its peak (as the official code's ReLU(inplace=True))
        y = F.relu(self.conv_out(F.relu(rec, inplace=True)) + x, inplace=True)
        return (y, factors) if return_attention else y

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Row ``query`` of ``Z (Z D^-1)^T`` (the last E-step's responsibilities): convex."""
        return {"M_rev M_map": operator_row(factors["reverse"], factors["map"], size, query)}, True

    def flops(self, height: int, width: int) -> int:
        n, c = height * width, self.in_channels
        return 2 * n * c * c + self.block.macs(height, width, c)
