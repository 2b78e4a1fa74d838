"""CCNet: recurrent criss-cross attention (Huang et al., ICCV 2019 / TPAMI 2020), spec section 3.5."""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from segattn.checks import checked
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import full_precision, upcast
from segattn.registry import MODULES


def criss_cross_logits(q: Tensor, k: Tensor) -> Tensor:
    """Criss-cross energies (B, H, W, H + W) in at least float32 from q, k of shape (B, C', H, W).

    Entry ``[b, y, x, i]`` for ``i < H`` is ``q[b, :, y, x] . k[b, :, i, x]`` (the column of the pixel)
    with ``-inf`` at ``i = y``; entry ``[b, y, x, H + j]`` is ``q[b, :, y, x] . k[b, :, y, j]`` (its row,
    self included). Both are batched matrix products over columns / rows: memory O(N (H + W)).
    """
    q, k = upcast(q), upcast(k)
    height = q.shape[2]
    e_col = torch.einsum("bcyx,bcix->byxi", q, k)
    e_row = torch.einsum("bcyx,bcyj->byxj", q, k)
    self_entry = torch.eye(height, dtype=torch.bool, device=q.device).view(1, height, 1, height)
    e_col = e_col.masked_fill(self_entry, float("-inf"))
    return torch.cat([e_col, e_row], dim=-1)


def criss_cross_aggregate(attn: Tensor, v: Tensor) -> Tensor:
    """``out[b, :, y, x] = sum_i attn[b, y, x, i] v[b, :, i, x] + sum_j attn[b, y, x, H + j] v[b, :, y, j]``."""
    height = v.shape[2]
    v = upcast(v).to(attn.dtype)
    a_col, a_row = attn[..., :height], attn[..., height:]
    out = torch.einsum("byxi,bcix->bcyx", a_col, v)
    return out + torch.einsum("byxj,bcyj->bcyx", a_row, v)



def criss_cross_transpose(u: Tensor, attn: Tensor) -> Tensor:
    """``u^T A`` for one criss-cross attention ``attn`` (H, W, H + W) and a pixel vector ``u`` (H, W):
    the adjoint of ``criss_cross_aggregate``, so rows compose without an N x N matrix."""
    height = u.shape[0]
    col = torch.einsum("yx,yxi->ix", u, attn[..., :height])
    row = torch.einsum("yx,yxj->yj", u, attn[..., height:])
    return col + row

@MODULES.register("ccnet", paper="Huang et al., ICCV 2019", family="sparse", order="O(R N (H+W) (C'+C))")
class CrissCrossAttention(ContextModule):
    """Recurrent criss-cross attention (RCCA) of CCNet, one CCA module applied ``recurrence`` times.

    One CCA on ``x`` (B, C, H, W), with ``q = W_q x``, ``k = W_k x`` (1x1 convs C -> C' = C / reduction,
    with bias) and ``v = W_v x`` (1x1 conv C -> C, with bias)::

        e[u, i] = q_u . k_(i, x_u)   for i in the column of u, -inf at i = y_u    (B, H, W, H)
        e[u, j] = q_u . k_(y_u, j)   for j in the row of u (self kept here)       (B, H, W, W)
        A_u     = softmax over the H + W concatenated entries (float32; H + W - 1 effective)
        out_u   = gamma * (sum_i A[u, i] v_(i, x_u) + sum_j A[u, H + j] v_(y_u, j)) + x_u

    No 1/sqrt(C') scaling; ``gamma`` is a learnable scalar initialised to 0 (the module is the identity at
    init). RCCA applies the *same* CCA (shared weights) R times; with R = 2 every pixel reaches every
    other one (spec 1.6). Output (B, C, H, W).

    Paper: Huang, Wang, Huang, Huang, Wei, Liu, "CCNet: Criss-Cross Attention for Semantic Segmentation",
    ICCV 2019 / TPAMI 2020. Defaults: ``recurrence=2``, ``reduction=8`` (C' = C / 8, 64 for C = 512).

    Deviations from the official code: none in the arithmetic (this is the pure-PyTorch formulation of
    mmcv / CCNet master, device-agnostic -inf diagonal). The head's conva / convb / concat / classifier
    belong to the head, not to this module. Energies and the softmax are computed in float32 even for
    float16 / bfloat16 input and under ``torch.autocast``.

    Cost per recurrence (MACs, batch 1): projections ``N C (2 C' + C)``, energies ``N (H + W) C'``,
    aggregation ``N (H + W) C`` (the duplicated self entry is computed, then masked). Order
    O(R N (H + W) (C' + C)), about O(R N^1.5 C) for H = W. Attention memory O(N (H + W)); no N x N tensor
    is ever formed (see benchmarks/sparse_memory.py).
    """

    @checked()
    def __init__(self, in_channels: int, *, recurrence: int = 2, reduction: int = 8) -> None:
        super().__init__(in_channels)
        if recurrence < 1:
            raise ValueError(f"recurrence must be >= 1, got {recurrence}")
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.recurrence = recurrence
        self.key_channels = max(1, in_channels // reduction)
        self.query = nn.Conv2d(in_channels, self.key_channels, 1)
        self.key = nn.Conv2d(in_channels, self.key_channels, 1)
        self.value = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def cca(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """One criss-cross pass: returns (output (B, C, H, W), attention (B, H, W, H + W) float32)."""
        q, k, v = self.query(x), self.key(x), self.value(x)
        context, attn = self._aggregate(q, k, v)
        return self.gamma.to(x.dtype) * context.to(x.dtype) + x, attn

    # where the queries are in _aggregate's output, for the analysis' taps: a (B, C, H, W) map
    aggregate_query_dims = (2, 3)

    def _aggregate(self, q: Tensor, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
        """The criss-cross context ``sum_j A_ij v_j`` over each pixel's row and column (B, C, H, W) and the
        (B, H, W, H + W) weights, in float32: one method so that the analysis' taps reach every pass."""
        with full_precision(q.device):
            attn = torch.softmax(criss_cross_logits(q, k), dim=-1)
            return criss_cross_aggregate(attn, v), attn

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        maps: Dict[str, Tensor] = {}
        for r in range(self.recurrence):
            x, attn = self.cca(x)
            if return_attention:  # otherwise each pass's (B, H, W, H + W) weights are freed at once
                maps[f"attention_{r}"] = attn
            del attn
        if not return_attention:
            return x
        factors: Attention = dict(maps)
        factors["attention"] = maps[f"attention_{self.recurrence - 1}"]
        return x, factors

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """The query's criss-cross row after one recurrence (``R=1``) and the rows of the composed
        operators ``A_R ... A_1`` (R = 2 reaches every pixel); convex."""
        maps: Dict[str, Tensor] = {}
        first = factors["attention_0"][0]
        u = torch.zeros(size, dtype=first.dtype, device=first.device)
        u[query] = 1.0
        maps["R=1"] = criss_cross_transpose(u, first)
        for r in range(1, self.recurrence):
            u = torch.zeros_like(u)
            u[query] = 1.0
            for t in range(r, -1, -1):
                u = criss_cross_transpose(u, factors[f"attention_{t}"][0])
            maps[f"R={r + 1}"] = u
        return maps, True

    def flops(self, height: int, width: int) -> int:
        n, c, ck = height * width, self.in_channels, self.key_channels
        per_loop = n * c * (2 * ck + c) + n * (height + width) * (ck + c)
        return self.recurrence * per_loop

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, key_channels={self.key_channels}, recurrence={self.recurrence}"
