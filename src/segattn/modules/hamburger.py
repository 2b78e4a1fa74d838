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
    ``inv_t`` 100 for VQ / CD (NMF uses 1), ``beta`` 0.1 (CD), random bases per training forward
    (``RAND_INIT=True``), convs N(0, sqrt(2/(k^2 out))), BN gamma 1.

    Switches: ``grad="one_step"`` (the paper: iterations without autograd in training, one final
    coefficient update with it) or ``"bptt"`` (back-propagation through every iteration: mmseg's
    ``LightHamHead``, SegNeXt and the authors' light head, whose ``@torch.no_grad()`` is commented
    out). ``init="random"`` (training draws fresh bases from the global RNG; eval uses the stored
    ``bases`` buffer, so inference is deterministic) or ``"stored"`` (the buffer always);
    ``random_eval=True`` redraws in eval as the official code does.

    Deviations from the official code: eval uses one stored draw of the bases instead of a fresh
    draw per forward (``random_eval=True`` restores it); one group only (``MD_S`` = 1, the official
    and SegNeXt default) and spatial factorisation only (``SPATIAL=True``); no online update of
    stored bases (``ETA``); CD solves the ridge system instead of inverting it (1e-9 relative
    difference). As the official code, VQ's final coefficients treat the pixel norm as a constant
    under the one-step cut (training), but differentiate it in eval and with ``"bptt"``. V2's "cheese"
    (a 3x3 ConvBNReLU between ham and upper bread) is not included.

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
        inv_t: float = 100.0,
        beta: float = 0.1,
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
        self.ham_out = ConvNormAct(d, in_channels, 1, act=None)
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
