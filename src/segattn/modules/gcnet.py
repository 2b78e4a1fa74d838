"""GCNet global context block (Cao, Xu, Lin, Wei, Hu, ICCVW 2019 / TPAMI 2020): ``gcnet``."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import POSITIVE, checked
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import full_precision, upcast
from segattn.registry import MODULES

PAPER = "Cao, Xu, Lin, Wei, Hu, ICCVW 2019 / TPAMI 2020"
POOLINGS = ("att", "avg")
FUSIONS = ("channel_add", "channel_mul")


class ChannelLayerNorm(nn.LayerNorm):
    """``LayerNorm([C, 1, 1])`` of a pooled (B, C, 1, 1) context, computed in at least float32."""

    def forward(self, x: Tensor) -> Tensor:
        with full_precision(x.device):
            return F.layer_norm(upcast(x), self.normalized_shape, upcast(self.weight), upcast(self.bias),
                                self.eps).to(x.dtype)


def _transform(channels: int, planes: int) -> nn.Sequential:
    """The bottleneck transform ``W_2 ReLU(LN(W_1 c))`` (C -> planes -> C, biases), last conv zero."""
    last = nn.Conv2d(planes, channels, 1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Conv2d(channels, planes, 1), ChannelLayerNorm([planes, 1, 1]), nn.ReLU(inplace=True), last)


@MODULES.register("gcnet", paper=PAPER, family="pairwise", order="O(N C)")
class GlobalContextBlock(ContextModule):
    """GCNet global context block: one query-independent attention-pooled context vector per image.

    Equation (X (B, C, H, W) viewed as (C, N), N = H*W)::

        a   = softmax_j(w_k^T x_j + b_k)                      (N,)   ``mask``: 1x1 conv C -> 1
        c   = sum_j a_j x_j                                   (C,)   attention pooling ('att')
        t   = W_2 ReLU(LN(W_1 c))                             (C,)   C -> P = int(C * ratio) -> C
        y_i = x_i * sigmoid(t_mul) + t_add                    (C, H, W)

    ``fusion`` ('channel_add', default, and/or 'channel_mul') picks the transforms; each has its own
    weights (``channel_add`` / ``channel_mul``: conv, LayerNorm([P, 1, 1]), ReLU, conv). ``pooling='avg'``
    replaces the attention by the mean (a = 1/N). The pooling, the LayerNorm and the sigmoid run in at
    least float32 (``full_precision``); the convolutions in the input dtype.

    Defaults (mmseg GCHead / mmcv ContextBlock): ``ratio`` 1/4 (the paper's backbone blocks use
    1/16), pooling 'att', fusion ('channel_add',). Init as the official code: ``mask`` Kaiming normal
    (fan_in, bias 0), the last conv of each transform zero, so a fresh 'channel_add' block is the
    identity (a fresh 'channel_mul' block halves its input: sigmoid(0) = 1/2, as the official code).
    Deviation from the official code (xvjiarui/GCNet ``mmdet/ops/gcb/context_block.py``): none in
    the computation; the layers are named ``mask`` / ``channel_add`` / ``channel_mul`` (official:
    ``conv_mask`` / ``channel_add_conv`` / ``channel_mul_conv``, same tensor shapes). P = int(C ratio)
    as the official code, at least 1.

    Cost (MACs, batch 1): ``C N`` (mask) + ``C N`` (pooling; 0 with 'avg') + ``2 C P`` per transform,
    order O(N C): about 1 % of a non-local block's at 128x256 features. ``return_attention`` gives
    ``attention`` (B, N), the pooling weights (uniform with 'avg'), and ``context`` (B, C), the
    pooled vector c.
    """

    @checked(ratio=POSITIVE, pooling=POOLINGS, fusion=FUSIONS)
    def __init__(self, in_channels: int, *, ratio: float = 1 / 4, pooling: str = "att",
                 fusion: Sequence[str] = ("channel_add",)) -> None:
        super().__init__(in_channels)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        fusion = tuple(fusion)
        if not fusion or any(f not in FUSIONS for f in fusion) or len(set(fusion)) != len(fusion):
            raise ValueError(f"fusion must be a non-empty selection of {FUSIONS}, got {fusion!r}")
        if not ratio > 0:
            raise ValueError(f"ratio must be > 0, got {ratio!r}")
        self.ratio, self.pooling, self.fusion = ratio, pooling, fusion
        self.planes = max(1, int(in_channels * ratio))
        self.mask = nn.Conv2d(in_channels, 1, 1) if pooling == "att" else None
        if self.mask is not None:
            nn.init.kaiming_normal_(self.mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.mask.bias)
        self.channel_add = _transform(in_channels, self.planes) if "channel_add" in fusion else None
        self.channel_mul = _transform(in_channels, self.planes) if "channel_mul" in fusion else None

    def pool(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """The context ``c`` (B, C, 1, 1) in x's dtype and the pooling weights ``a`` (B, N), float32 or more."""
        b, c, h, w = x.shape
        logits = self.mask(x) if self.mask is not None else None
        with full_precision(x.device):
            if logits is None:
                weights = x.new_full((b, h * w), 1.0 / (h * w), dtype=upcast(x).dtype)
                context = upcast(x).mean(dim=(2, 3))
            else:
                weights = torch.softmax(upcast(logits).flatten(1), dim=-1)
                context = torch.matmul(upcast(x).flatten(2), weights.unsqueeze(-1)).squeeze(-1)
        return context.view(b, c, 1, 1).to(x.dtype), weights

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        context, weights = self.pool(x)
        out = x
        if self.channel_mul is not None:
            t = self.channel_mul(context)
            with full_precision(x.device):
                out = out * torch.sigmoid(upcast(t)).to(x.dtype)
        if self.channel_add is not None:
            out = out + self.channel_add(context)
        if not return_attention:
            return out
        factors: Attention = {"attention": weights, "context": upcast(context.flatten(1))}
        return out, factors

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """The pooling weights ``a`` over the pixels: the same map for every query pixel; convex."""
        return {"attention pooling": factors["attention"][0].reshape(size)}, True

    def flops(self, height: int, width: int) -> int:
        """MACs: mask conv and attention pooling (C N each, 'att' only) and the transforms (2 C P each)."""
        n, c = height * width, self.in_channels
        pooling = 2 * c * n if self.mask is not None else 0
        return pooling + len(self.fusion) * 2 * c * self.planes

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ratio={self.ratio}, pooling={self.pooling}, fusion={self.fusion}"
