"""Hamburger (Geng, Guo, Chen, Li, Wei, Lin, ICLR 2021): a matrix decomposition between two 1x1 "breads"."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import NON_NEGATIVE, POSITIVE, checked
from segattn.layers import ConvNormAct
from segattn.lowrank import LowRankBlock, MatrixDecompositionMapper, TransposeReverse
from segattn.modules.base import ContextModule, ModuleOutput
from segattn.registry import MODULES


def _kaiming_fan_out_(conv: nn.Conv2d) -> None:
    """Official Hamburger / mmcv ConvModule init: N(0, sqrt(2 / (k * k * out_channels))), bias 0."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


@MODULES.register("hamburger", paper="Geng et al., ICLR 2021 (Hamburger)", family="lowrank", order="O(T N D R)")
class Hamburger(ContextModule):
    """Hamburger V1, the "light" layout of mmseg's ``Hamburger`` (Geng et al., ICLR 2021).

    With ``x`` (B, C, H, W) and D = ``channels`` (default C)::

        Z   = ReLU(W_l x + b_l)                       (D, N)   lower bread (no ReLU for VQ / CD)
        B,C = decompose(Z),  Z ~ B C^T                B (D, R), C (N, R)   the "ham"
        Zr  = B C^T                                   (D, N)
        y   = ReLU(x + BN(W_u Zr))                    (C, H, W) upper bread + shortcut

    The ham is ``LowRankBlock(MatrixDecompositionMapper(D, R, method), None, TransposeReverse())``
    from ``segattn.lowrank`` (map = C^T, nodes = the bases B, reverse map = C); see
    :class:`segattn.lowrank.MatrixDecompositionMapper` for the NMF / VQ / CD iterations.

    Defaults (official ``settings.py`` / mmseg ``Matrix_Decomposition_2D_Base``): ``method="nmf"``,
    R = ``num_bases`` 64, ``train_steps`` 6, ``eval_steps`` 7 (the VOC settings use 6 / 6),
    ``inv_t`` 1 for VQ / CD as ``settings.py`` (``INV_T = 1``; 100 is only the classes' fallback when
    no setting is given; NMF always uses 1), ``beta`` 0.1 (CD), random bases per training forward
    (``RAND_INIT=True``), convs N(0, sqrt(2/(k^2 out))), BN gamma 1. ``norm``: the upper bread's norm,
    ``"bn"`` (the official ``HamburgerV1``'s BatchNorm) or ``"gn"`` (GroupNorm(32): mmseg's and the
    authors' light-head configs, ``ham_norm_cfg``; ``LightHamHead`` passes it).

    Switches: ``grad="one_step"`` (the paper: iterations without autograd in training, one final
    coefficient update with it) or ``"bptt"`` (back-propagation through every iteration: mmseg's
    ``LightHamHead``, SegNeXt and the authors' light head, whose ``@torch.no_grad()`` is commented
    out). ``init="random"`` (training draws fresh bases from the global RNG; eval uses the stored
    ``bases`` buffer, so inference is deterministic) or ``"stored"`` (the buffer always);
    ``random_eval=True`` redraws in eval as the official code does.

    Deviations from the official code: eval uses one stored draw of the bases instead of a fresh
    draw per forward (``random_eval=True`` restores it); one group only (``MD_S`` = 1, the official
    and SegNeXt default) and spatial factorisation only (``SPATIAL=True``); no online update of
    stored bases (``ETA``); CD solves the ridge system instead of inverting it (same numbers: largest
    relative difference 8.5e-16 in float64, D 64, R 16, 20 seeds; tests/modules/test_hamburger.py). VQ's final coefficients
    divide by the pixel norm, which the official code computes under ``no_grad`` in every mode; here
    it is a constant only under the one-step cut (training), so the forward is the same everywhere
    but eval and ``"bptt"`` gradients are the exact derivative (gradcheck holds): a deviation in
    gradients only, outside the official training path. V2's "cheese" (a 3x3 ConvBNReLU between ham
    and upper bread) is not included.

    Cost: ``2 N C D`` (breads) + the decomposition's MACs + ``N D R`` (reconstruction), O(T N D R).
    ``return_attention`` gives the block's factors: ``map`` = C^T (B, R, N), ``nodes`` = B (B, D, R),
    ``reverse`` = C (B, N, R), ``assignment`` = C^T.
    """

    @checked(train_steps=NON_NEGATIVE, eval_steps=NON_NEGATIVE, inv_t=POSITIVE)
    def __init__(
        self,
        in_channels: int,
        *,
        channels: Optional[int] = None,
        method: str = "nmf",
        num_bases: int = 64,
        train_steps: int = 6,
        eval_steps: int = 7,
        grad: str = "one_step",
        init: str = "random",
        random_eval: bool = False,
        inv_t: float = 1.0,
        beta: float = 0.1,
        norm: str = "bn",
    ) -> None:
        super().__init__(in_channels)
        d = channels or in_channels
        self.channels = d
        self.ham_in = nn.Conv2d(in_channels, d, 1, bias=True)
        self.in_act = method == "nmf"
        mapper = MatrixDecompositionMapper(
            d, num_bases, method=method, train_steps=train_steps, eval_steps=eval_steps, grad=grad, init=init,
            random_eval=random_eval, inv_t=inv_t, beta=beta,
        )
        self.block = LowRankBlock(mapper, None, TransposeReverse())
        if norm not in ("bn", "gn"):
            raise ValueError(f"hamburger norm must be 'bn' (official V1) or 'gn' (GroupNorm(32), light head), got {norm!r}")
        self.ham_out = ConvNormAct(d, in_channels, 1, norm=norm, act=None)
        _kaiming_fan_out_(self.ham_in)
        _kaiming_fan_out_(self.ham_out[0])

    @property
    def ham(self) -> MatrixDecompositionMapper:
        """The decomposition (``block.mapper``)."""
        return self.block.mapper

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        z = self.ham_in(x)
        if self.in_act:  # in place, as mmseg: the conv output is not needed by its backward
            z = F.relu_(z)
        if return_attention:
            rec, factors = self.block(z, return_factors=True)
        else:
            rec, factors = self.block(z), {}
        y = F.relu_(x + self.ham_out(rec))  # in place on the fresh sum
        return (y, factors) if return_attention else y

    def flops(self, height: int, width: int) -> int:
        n = height * width
        return 2 * n * self.in_channels * self.channels + self.block.macs(height, width, self.channels)
