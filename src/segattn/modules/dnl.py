"""Disentangled non-local block (Yin, Yao, Cao, Li, Zhang, Lin, Hu, ECCV 2020): ``dnl``."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from segattn.checks import NON_NEGATIVE, POSITIVE, checked
from segattn.modules.base import Attention, ModuleOutput
from segattn.modules.nonlocal_ import NonLocalBase, from_tokens, to_tokens
from segattn.ops.attention import attend, full_precision, upcast
from segattn.registry import MODULES

PAPER = "Yin, Yao, Cao, Li, Zhang, Lin, Hu, ECCV 2020"


def whiten(t: Tensor) -> Tensor:
    """Tokens (..., N, d) minus their mean over the N positions, in at least float32."""
    t = upcast(t)
    return t - t.mean(dim=-2, keepdim=True)


@MODULES.register("dnl", paper=PAPER, family="pairwise", order="O(N^2 C')")
class DisentangledNonLocal2d(NonLocalBase):
    """Disentangled non-local block: a whitened pairwise term plus a unary term, one value path.

    Equation (X (B, C, H, W), N = H*W; theta, phi, g: 1x1 convs C -> C' = C / reduction, bias)::

        q_i = theta(x_i) - mean_i theta(x_i),  k_j = phi(x_j) - mean_j phi(x_j)     whitened (C', N)
        P_ij = softmax_j(q_i . k_j / (sqrt(C') tau))                                pairwise (N, N)
        u_j  = softmax_j(m^T x_j + b_m)                                             unary    (N,)
        y_i  = sum_j (P_ij + u_j) g(x_j)                                            (C', N)
        Z    = X + BN(W_z y)                                                        (B, C, H, W)

    The pairwise term runs through the shared fused attention kernel (never N x N unless weights
    are requested); the whitening, the unary softmax and its aggregation run in at least float32.
    The embedded-Gaussian logit ``theta_i . phi_j`` equals the whitened term plus ``mu_q . k_j``
    plus terms constant in j (the paper's decomposition; the unary term ``m^T x_j`` learns the
    j-only part separately). Once the queries are whitened, whitening the keys changes nothing (their
    mean adds ``(q_i - mu_q) . mu_k``, constant in j); it is kept as in the paper and the official code.
    ``whiten=False, unary=False, temperature=1`` is exactly ``nonlocal``.

    Defaults (mmseg DNLHead, whose converted checkpoints and recipes segattn follows): reduction 2,
    ``use_scale`` True, ``temperature`` tau = 0.05, unary on, W_z and its BN (``use_out=True``,
    ``norm=True``); init as mmcv's NonLocal2d (theta/phi/g/W_z normal(std 0.01), biases 0, BN gamma
    = beta = 0 so a fresh block is the identity; ``mask`` m: PyTorch's default init as mmseg's
    ``conv_mask``).

    The official form: the Cityscapes config ``NLin_fcn`` of yinmh17/DNL-Semantic-Segmentation
    (``NonLocal2d_bn`` with ``whiten_type=['channel']``, ``temp`` 0.05, ``with_gc`` True,
    ``downsample`` False, ``use_out`` False, ``out_bn`` False) is ``use_out=False, norm=False``::

        Z = X + gamma * sum_j P_ij g(x_j) + sum_j u_j g(x_j)      g: 1x1 conv C -> C, no bias; gamma init 0

    (no W_z, no BN; gamma scales the pairwise term only; g is C -> C so ``value`` is (B, N, C)).
    ``use_out=False, norm=True`` is its ``out_bn=True`` (a zero-initialised BN(C) on the sum). The
    default differs from that config (a listed deviation): W_z (C' -> C, with a bias, zero in
    converted mmseg weights where the BN follows) and BN instead of gamma, as mmseg. Other
    deviations from the official code (``model/seg/ops/nonlocal_block.py``): the unary mask reads
    the block input x (the official ``conv_mask`` reads the same tensor when ``downsample`` is off,
    as in the config); the official ``with_unary`` variant, off in its configs, is not built; no
    sub-sampling (mmseg's DNL cannot either).

    Cost (MACs, batch 1, V = C' or C without W_z): ``2 C C' N`` (theta, phi) + ``C V N`` (g) + ``V C N``
    (W_z, if built) + ``N^2 (C' + V)`` (pairwise) + ``C N`` (mask) + ``N V`` (unary aggregation), order
    O(N^2 C'). ``return_attention`` gives ``attention`` (B, N, N) = P, ``unary`` (B, N) = u, the
    whitened ``query`` / ``key`` tokens (B, N, C') and ``value`` (B, N, V).
    """

    @checked(temperature=POSITIVE, init_std=NON_NEGATIVE)
    def __init__(
        self,
        in_channels: int,
        *,
        reduction: int = 2,
        use_scale: bool = True,
        temperature: float = 0.05,
        whiten: bool = True,
        unary: bool = True,
        norm: bool = True,
        zero_init: bool = True,
        init_std: float = 0.01,
        use_out: bool = True,
    ) -> None:
        super().__init__(in_channels, "embedded_gaussian", reduction, None, use_scale, False, False, norm, zero_init,
                         init_std)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature, self.whiten, self.unary, self.use_out = float(temperature), whiten, unary, use_out
        self.mask = nn.Conv2d(in_channels, 1, 1) if unary else None
        self.gamma: Optional[nn.Parameter] = None
        if not use_out:  # the official use_out=False block: C -> C values, no W_z, gamma on the pairwise term
            self.value_channels, self.conv_out = in_channels, None
            self.g = nn.Conv2d(in_channels, in_channels, 1, bias=False)
            nn.init.normal_(self.g.weight, 0.0, init_std)
            self.gamma = nn.Parameter(torch.zeros(1))

    @property
    def scale(self) -> float:
        return (self.inter_channels**-0.5 if self.use_scale else 1.0) / self.temperature

    def _aggregate(self, q: Tensor, k: Tensor, v: Tensor, return_attention: bool,
                   unary: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """The aggregated context tokens (B, 1, N, C'): ``gamma * P v`` (gamma only without W_z) plus the
        unary term ``u^T g`` when given, and ``P`` (B, 1, N, N) when asked. Everything the block adds to
        its input before W_z passes here, so the analysis' taps see DNL's whole context path."""
        y, weights = attend(q, k, v, self.scale, return_attention)
        if self.gamma is not None:
            y = self.gamma.to(y.dtype) * y
        return (y if unary is None else y + unary), weights

    def unary_term(self, x: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
        """``u^T g`` (B, 1, 1, C') in v's dtype and the unary weights ``u`` (B, N), float32 or more."""
        logits = self.mask(x)
        with full_precision(x.device):
            u = torch.softmax(upcast(logits).flatten(1), dim=-1)
            term = torch.matmul(u.unsqueeze(1).unsqueeze(1), upcast(v))
        return term.to(v.dtype), u

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        _, _, h, w = x.shape
        q, k, v = to_tokens(self.theta(x)), to_tokens(self.phi(x)), to_tokens(self.g(x))
        if self.whiten:
            with full_precision(x.device):
                q, k = whiten(q), whiten(k)
        term, u = self.unary_term(x, v) if self.mask is not None else (None, None)
        y, weights = self._aggregate(q, k, v, return_attention, unary=term)
        context = from_tokens(y, h, w)
        if self.conv_out is not None:
            context = self.conv_out(context)
        if self.norm is not None:
            context = self.norm(context)
        z = x + context
        if not return_attention:
            return z
        factors: Attention = {"attention": weights.squeeze(1), "query": upcast(q.squeeze(1)),
                              "key": upcast(k.squeeze(1)), "value": upcast(v.squeeze(1))}
        if u is not None:
            factors["unary"] = u
        return z, factors

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Pixel ``query``'s two weight maps over the pixels (each a softmax, convex; the block sums them):
        the whitened pairwise row ``P_i`` and the query-independent unary ``u``."""
        maps = {"whitened pairwise": factors["attention"][0, query[0] * size[1] + query[1]].reshape(size)}
        if "unary" in factors:
            maps["unary"] = factors["unary"][0].reshape(size)
        return maps, True

    def flops(self, height: int, width: int) -> int:
        """MACs of one forward at (1, C, height, width): the non-local block's plus the unary term."""
        n, c, d, v = height * width, self.in_channels, self.inter_channels, self.value_channels
        macs = 2 * c * d * n + c * v * n + n * n * (d + v) + (v * c * n if self.conv_out is not None else 0)
        if self.mask is not None:
            macs += c * n + n * v
        return macs

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, inter_channels={self.inter_channels}, use_scale={self.use_scale}, "
                f"temperature={self.temperature}, whiten={self.whiten}, unary={self.unary}, use_out={self.use_out}")
