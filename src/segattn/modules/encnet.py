"""EncNet's context encoding module (Zhang, Dana, Shi, Zhang, Wang, Tyagi, Agrawal, CVPR 2018)."""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import checked
from segattn.layers import ConvNormAct
from segattn.lowrank.functional import flatten
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import full_precision, upcast
from segattn.registry import MODULES


class Encoding(nn.Module):
    """Encoding layer (Deep TEN): soft-assigned residuals to K learned codewords.

    ``x`` (B, C, H, W) as N pixels ``x_i``; codewords ``d_k`` (K, C), smoothing factors ``s_k`` (K,)::

        a_ik = softmax_k(s_k ||x_i - d_k||^2)          (B, N, K)   (s_k < 0 at init: the sign is in s)
        e_k  = sum_i a_ik (x_i - d_k)                  (B, K, C)

    computed with two products (``||x||^2 - 2 x d^T + ||d||^2`` and ``a^T x - (sum_i a_ik) d_k``)
    instead of the (B, N, K, C) difference tensor of mmseg's pure-PyTorch ``Encoding``. Init as the
    official code: ``d ~ U(-1/sqrt(K C), 1/sqrt(K C))``, ``s ~ U(-1, 0)``. Math in float32 for half
    inputs. MACs ``2 N K C``. ``forward`` returns ``(e, a)``.
    """

    def __init__(self, channels: int, num_codes: int) -> None:
        super().__init__()
        if channels < 1 or num_codes < 1:
            raise ValueError(f"channels and num_codes must be >= 1, got {channels}, {num_codes}")
        self.channels, self.num_codes = channels, num_codes
        bound = 1.0 / math.sqrt(num_codes * channels)
        self.codewords = nn.Parameter(torch.empty(num_codes, channels).uniform_(-bound, bound))
        self.scale = nn.Parameter(torch.empty(num_codes).uniform_(-1.0, 0.0))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        with full_precision(x.device):
            xt = upcast(flatten(x)).transpose(1, 2)  # (B, N, C)
            codes = upcast(self.codewords).to(xt.dtype)
            dist2 = (xt * xt).sum(2, keepdim=True) - 2.0 * torch.matmul(xt, codes.t()) + (codes * codes).sum(1)
            assign = torch.softmax(upcast(self.scale).to(xt.dtype) * dist2, dim=2)
            encoded = torch.matmul(assign.transpose(1, 2), xt) - assign.sum(1).unsqueeze(2) * codes
        return encoded, assign

    def macs(self, height: int, width: int) -> int:
        return 2 * height * width * self.num_codes * self.channels

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_codes={self.num_codes}"


@MODULES.register("encnet", paper="Zhang et al., CVPR 2018 (EncNet)", family="pooling", order="O(N C^2 + N K C)")
class ContextEncoding(ContextModule):
    """Context Encoding Module (EncNet), spec successors A.5: a global, query-independent channel gate.

    With ``x`` (B, C, H, W)::

        x' = CBR_1x1(x)                                  (C, H, W)    encoding projection
        E  = Encoding_K(x')                              (K, C)       codewords, see :class:`Encoding`
        e  = mean_k ReLU(BN1d_K(E))                      (C,)         the encoded context
        g  = sigmoid(W e + b)                            (C,)
        y  = ReLU(x + x * g)                             (C, H, W)

    ``encode(x)`` returns ``(y, e)``: the head's SE-loss layer (a linear classifier of class
    presence) reads ``e``. Defaults (official ``EncModule`` and mmseg): K = ``num_codes`` 32, BN1d over
    the K codes, the fc with bias. Permuting the pixels of ``x`` permutes ``y`` the same way, and
    ``g`` is constant over space (the gate is global). Deviations: none in the function; the
    Encoding is computed with products instead of the official compiled ``scaled_l2`` /
    ``aggregate`` ops and mmseg's (B, N, K, C) broadcast (same values). The fc and sigmoid run in
    float32 for half inputs. ``return_attention`` gives ``assignment`` (B, N, K), ``codes`` E
    (B, K, C), ``encoding`` e (B, C) and ``gamma`` g (B, C).

    Cost (MACs, batch 1): ``N C^2`` (projection) + ``2 N K C`` (encoding) + ``C^2`` (fc).
    """

    @checked()
    def __init__(self, in_channels: int, *, num_codes: int = 32) -> None:
        super().__init__(in_channels)
        c = in_channels
        self.num_codes = num_codes
        self.project = ConvNormAct(c, c, 1)
        self.encoding = Encoding(c, num_codes)
        self.norm = nn.BatchNorm1d(num_codes)
        self.fc = nn.Linear(c, c)

    def encode(self, x: Tensor, return_attention: bool = False) -> Tuple[Tensor, Tensor, Attention]:
        """``(y (B, C, H, W), e (B, C) in float32, factors)``."""
        self.check_input(x)
        codes, assign = self.encoding(self.project(x))
        normed = self.norm(codes.to(self.norm.weight.dtype))  # BN1d over the K codes, in the module's dtype
        with full_precision(x.device):
            e = F.relu(upcast(normed)).mean(dim=1)
            gamma = torch.sigmoid(F.linear(e, upcast(self.fc.weight), upcast(self.fc.bias)))
        y = F.relu(x + x * gamma.to(x.dtype)[:, :, None, None])
        factors = {"assignment": assign, "codes": codes, "encoding": e, "gamma": gamma} if return_attention else {}
        return y, e, factors

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        y, _, factors = self.encode(x, return_attention)
        return (y, factors) if return_attention else y

    def flops(self, height: int, width: int) -> int:
        c = self.in_channels
        return c * c * height * width + self.encoding.macs(height, width) + c * c
