"""OCNet object context (Yuan & Wang, arXiv 2018 / IJCV 2021): ``ocnet_base``, ``ocnet_pyramid``, ``ocnet_asp``.

:class:`SelfAttentionUnit` is the OCNet self-attention unit (shared key/query projection, value
projection, zero-initialised output conv); ANN's APNB/AFNB reuse it with pyramid-pooled keys.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import DROPOUT, checked
from segattn.layers import ConvNormAct
from segattn.lowrank.functional import pooling_matrix, upsampling_matrix
from segattn.modules.base import Attention, ContextModule, ModuleOutput, zero_init_
from segattn.modules.nonlocal_ import from_tokens, to_tokens
from segattn.modules.pooling import pyramid_pool
from segattn.ops.attention import attend
from segattn.ops.weightmaps import flat_index, index_map, onehot
from segattn.registry import MODULES

PAPER = "Yuan, Wang, arXiv 2018 (IJCV 2021)"


def pooled_size(height: int, width: int, scale: int, ceil_mode: bool = True) -> Tuple[int, int]:
    """Size after ``scale x scale`` max-pooling: ceil mode, or floor mode (official OCNet) where a side
    shorter than ``scale`` becomes 1 (floor would give 0 there; the official code raises)."""
    if ceil_mode:
        return -(-height // scale), -(-width // scale)
    return max(1, height // scale), max(1, width // scale)


def max_pool(t: Tensor, scale: int, ceil_mode: bool) -> Tensor:
    """``scale x scale`` max-pooling (stride ``scale``) to :func:`pooled_size`; a side shorter than
    ``scale`` is pooled whole (one window) in both modes, so 1x1 maps work."""
    if ceil_mode:
        return F.max_pool2d(t, scale, scale, ceil_mode=True)
    kernel = (min(scale, t.shape[2]), min(scale, t.shape[3]))
    return F.max_pool2d(t, kernel, kernel)


class SelfAttentionUnit(nn.Module):
    """OCNet/ANN self-attention unit: ``ctx = W softmax(C_k^{-1/2} q k^T) v`` (zero-initialised W).

    Query: 1x1 conv (bias) -> BN -> act of ``x`` (C -> C_k); key: the same module (``share_key_query``)
    or its own conv -> BN -> act of ``source`` (C_s -> C_k); value: 1x1 conv (bias) of ``source``
    (C_s -> C_v); W: 1x1 conv C_v -> C_out, weight and bias 0. ``key_pool_sizes`` (ANN) pools keys and
    values to sum s^2 anchors with :func:`pyramid_pool` after projection. ``pool_scale`` > 1 (OCNet)
    max-pools the inputs first (floor mode as the official code, ``ceil_mode=True`` for ceil; see
    :func:`pooled_size`) and upsamples the context bilinearly (align_corners=True).
    """

    def __init__(
        self,
        in_channels: int,
        key_channels: int,
        value_channels: int,
        out_channels: int,
        *,
        source_channels: Optional[int] = None,
        share_key_query: bool = True,
        act: Optional[str] = "leaky_relu",
        key_pool_sizes: Optional[Sequence[int]] = None,
        pool_scale: int = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.ceil_mode = ceil_mode
        source_channels = source_channels or in_channels
        if share_key_query and source_channels != in_channels:
            raise ValueError("a shared key/query projection needs source_channels == in_channels")
        if min(key_channels, value_channels, out_channels, pool_scale) < 1:
            raise ValueError("channel counts and pool_scale must be >= 1")
        self.source_channels, self.share_key_query, self.pool_scale = source_channels, share_key_query, pool_scale
        self.key_channels, self.value_channels, self.out_channels = key_channels, value_channels, out_channels
        self.key_pool_sizes = tuple(key_pool_sizes) if key_pool_sizes else None
        self.query = ConvNormAct(in_channels, key_channels, 1, act=act, bias=True)
        self.key = None if share_key_query else ConvNormAct(source_channels, key_channels, 1, act=act, bias=True)
        self.value = nn.Conv2d(source_channels, value_channels, 1)
        self.out = zero_init_(nn.Conv2d(value_channels, out_channels, 1))

    def project(self, x: Tensor, source: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Query (B, C_k, H, W), key (B, C_k, H_s, W_s) and value (B, C_v, H_s, W_s) maps."""
        query = self.query(x)
        src = x if source is None else source
        if self.key is not None:
            key = self.key(src)
        else:
            key = query if source is None else self.query(src)
        return query, key, self.value(src)

    def _kv_tokens(self, key: Tensor, value: Tensor) -> Tuple[Tensor, Tensor]:
        if self.key_pool_sizes is None:
            return to_tokens(key), to_tokens(value)
        pool = self.key_pool_sizes
        k, v = (pyramid_pool(t, pool).transpose(1, 2).contiguous().unsqueeze(1) for t in (key, value))
        return k, v

    def _pool(self, t: Optional[Tensor]) -> Optional[Tensor]:
        if t is None or self.pool_scale == 1:
            return t
        return max_pool(t, self.pool_scale, self.ceil_mode)

    def forward(
        self, x: Tensor, source: Optional[Tensor] = None, return_attention: bool = False
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Context (B, C_out, H, W) and, on request, the (B, N', M) attention (N' after pooling)."""
        h, w = x.shape[-2:]
        xp, sp = self._pool(x), self._pool(source)
        q, k, v = self.project(xp, sp)
        kt, vt = self._kv_tokens(k, v)
        y, weights = self._aggregate(to_tokens(q), kt, vt, return_attention)
        weights = None if weights is None else weights.squeeze(1)
        ctx = self.out(from_tokens(y, q.shape[2], q.shape[3]))
        if self.pool_scale > 1:
            ctx = F.interpolate(ctx, (h, w), mode="bilinear", align_corners=True)
        return ctx, weights

    def _aggregate(self, q: Tensor, k: Tensor, v: Tensor, return_attention: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """``v A^T`` as tokens (B, 1, N', C_v) and, when asked, ``A`` (B, 1, N', M): the aggregation, one
        method so that the analysis' taps (:func:`segattn.analyze.measure.survey.tap_context`) reach it."""
        return attend(q, k, v, self.key_channels**-0.5, return_attention)

    def macs(self, height: int, width: int, source_size: Optional[Tuple[int, int]] = None) -> int:
        """MACs of one forward for batch 1 (query map ``height x width``, source map ``source_size``)."""
        hq, wq = pooled_size(height, width, self.pool_scale, self.ceil_mode)
        hs, ws = pooled_size(*(source_size or (height, width)), self.pool_scale, self.ceil_mode)
        n, m = hq * wq, hs * ws
        anchors = sum(s * s for s in self.key_pool_sizes) if self.key_pool_sizes else m
        ck, cv, cs = self.key_channels, self.value_channels, self.source_channels
        macs = self.query.macs(hq, wq) + cs * cv * m + n * anchors * (ck + cv) + cv * self.out_channels * n
        if self.key is not None or source_size is not None:
            macs += cs * ck * m
        return macs


def unit_maps(unit: SelfAttentionUnit, attention: Tensor, size: Tuple[int, int], source_size: Tuple[int, int],
              query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
    """The ``weight_maps`` of a module built on one :class:`SelfAttentionUnit` (OCNet base / ASP, ANN
    APNB / AFNB): weights of pixel ``query`` over the unit's value positions, on the (pooled) source grid.

    Queries on the ``pool_scale``-pooled grid are bilinearly upsampled (align_corners=True), so the
    pixel's row is the bilinear mix of the pooled rows; pyramid-pooled anchors (``key_pool_sizes``)
    are averages of value pixels, so their weights are spread back through the pooling matrices. Convex.
    """
    s = unit.pool_scale
    qgrid, sgrid = pooled_size(*size, s), pooled_size(*source_size, s)
    attn = attention[0]
    q = flat_index(query, size[1])
    if s == 1:
        coeff = onehot(q, qgrid[0] * qgrid[1], attn)
    else:
        coeff = upsampling_matrix(size, qgrid, True, attn.device, attn.dtype)[q]
    row = coeff @ attn
    if unit.key_pool_sizes is not None:
        pools = [pooling_matrix(sgrid, (b, b), attn.device, attn.dtype) for b in unit.key_pool_sizes]
        row = row @ torch.cat(pools, dim=0)
    label = "pooled anchors" if unit.key_pool_sizes is not None else "object context"
    return {label: row.reshape(sgrid)}, True


def _default(value: Optional[int], fallback: int) -> int:
    return max(1, fallback) if value is None else value


@MODULES.register("ocnet_base", paper=PAPER, family="pairwise", order="O(N^2 C)")
class BaseOC(ContextModule):
    """OCNet base object context: ``out = Dropout(ConvBNAct_{2C -> C_out}([ctx ; X]))``.

    Shapes: X (B, C, H, W), N = H*W. Self-attention unit (:class:`SelfAttentionUnit`): shared
    key/query = 1x1 conv C -> C_k (bias) -> BN -> LeakyReLU(0.01) (the InPlaceABN default), value 1x1
    conv C -> C_v, ``A = softmax_j(C_k^{-1/2} q_i . k_j)`` (N x N, shared fused kernel), context
    ``W (v A^T)`` with W: 1x1 conv C_v -> C zero-initialised (weight and bias, so the context is 0 at
    init). ``pool_scale`` s > 1 runs the unit on the s x s max-pooled map and upsamples the context
    (bilinear, align_corners=True). Then concat [ctx, X] (2C) -> 1x1 conv -> BN -> LeakyReLU ->
    Dropout2d(0.05). Defaults (openseg-group/OCNet.pytorch base-OC on 512 channels): C_k = C_v = C/2,
    out_channels C, pool_scale 1, dropout 0.05, act 'leaky_relu'. Max-pooling floors as the official
    code (``ceil_mode=False``, default; a side shorter than s is pooled whole, where the official code
    raises); ``ceil_mode=True`` keeps the partial last window. ``key_pool_sizes`` pools the keys and
    values to pyramid anchors instead (ANN's APNB is this block with (1, 3, 6, 8)). Equals the non-local block with
    shared key/query and concatenation instead of residual (spec 1.5.5). Cost (MACs, batch 1):
    N C (C_k + C_v) + N^2 (C_k + C_v) + N C_v C + 2 N C C_out (N -> N/s^2 in the unit); order O(N^2 C).
    """

    @checked(dropout=DROPOUT)
    def __init__(
        self,
        in_channels: int,
        *,
        key_channels: Optional[int] = None,
        value_channels: Optional[int] = None,
        out_channels: Optional[int] = None,
        pool_scale: int = 1,
        dropout: float = 0.05,
        act: Optional[str] = "leaky_relu",
        key_pool_sizes: Optional[Sequence[int]] = None,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__(in_channels, _default(out_channels, in_channels))
        kc, vc = _default(key_channels, in_channels // 2), _default(value_channels, in_channels // 2)
        self.attention = SelfAttentionUnit(
            in_channels, kc, vc, in_channels, act=act, pool_scale=pool_scale, key_pool_sizes=key_pool_sizes,
            ceil_mode=ceil_mode,
        )
        self.bottleneck = ConvNormAct(2 * in_channels, self.out_channels, 1, act=act)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        ctx, weights = self.attention(x, return_attention=return_attention)
        y = self.dropout(self.bottleneck(torch.cat([ctx, x], dim=1)))
        return (y, {"attention": weights, "context": ctx}) if return_attention else y

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Weights over the value pixels through the attention unit (``SelfAttentionUnit.weight_row``)."""
        return unit_maps(self.attention, factors["attention"], size, size, query)

    def flops(self, height: int, width: int) -> int:
        """MACs of the unit and the fusion conv (batch 1)."""
        return self.attention.macs(height, width) + self.bottleneck.macs(height, width)


def _splits(length: int, regions: int) -> List[Tuple[int, int]]:
    """OCNet's partition of ``length`` into ``regions`` parts as (part size, count) runs; the last part
    absorbs the remainder. When ``length < regions`` the whole length is one part (official: empty parts)."""
    step = length // regions
    if regions == 1 or step == 0:
        return [(length, 1)]
    return [(step, regions - 1), (length - (regions - 1) * step, 1)]


def _to_blocks(t: Tensor, rs: int, rc: int, cs: int, cc: int) -> Tensor:
    """(B, C, rc*rs, cc*cs) -> (B, rc*cc, rs*cs, C): one token sequence per rs x cs region."""
    b, c = t.shape[:2]
    t = t.reshape(b, c, rc, rs, cc, cs).permute(0, 2, 4, 3, 5, 1)
    return t.reshape(b, rc * cc, rs * cs, c).contiguous()  # unit stride along C for the fused kernel


def _from_blocks(t: Tensor, rs: int, rc: int, cs: int, cc: int) -> Tensor:
    """Inverse of :func:`_to_blocks`."""
    b, c = t.shape[0], t.shape[-1]
    t = t.reshape(b, rc, cc, rs, cs, c).permute(0, 5, 1, 3, 2, 4)
    return t.reshape(b, c, rc * rs, cc * cs)


def region_attention(
    q: Tensor, k: Tensor, v: Tensor, regions: int, scale: float, weights: Optional[Dict[str, Tensor]] = None,
    aggregate: Optional[Callable[[Tensor, Tensor, Tensor, bool], Tuple[Tensor, Optional[Tensor]]]] = None,
) -> Tensor:
    """Softmax self-attention inside each of ``regions x regions`` sub-regions of the map (B, C, H, W).

    Regions of equal size are batched into one kernel call (at most four calls). With ``weights`` a
    dict, the per-call (B, regions, n, n) attention weights are stored in it. ``aggregate(q, k, v,
    return_weights)`` replaces the softmax kernel on the (B, regions, n, d) blocks (a unit's
    ``_aggregate``, with its own scale, so that the analysis' taps reach it).
    """

    def softmax_kernel(qb: Tensor, kb: Tensor, vb: Tensor, ret: bool) -> Tuple[Tensor, Optional[Tensor]]:
        return attend(qb, kb, vb, scale, ret)

    kernel = aggregate or softmax_kernel
    rows, r0 = [], 0
    for rs, rc in _splits(q.shape[2], regions):
        cols, c0 = [], 0
        for cs, cc in _splits(q.shape[3], regions):
            blocks = [_to_blocks(t[:, :, r0 : r0 + rs * rc, c0 : c0 + cs * cc], rs, rc, cs, cc) for t in (q, k, v)]
            y, w = kernel(*blocks, weights is not None)
            if weights is not None:
                weights[f"r{r0}_c{c0}"] = w
            cols.append(_from_blocks(y, rs, rc, cs, cc))
            c0 += cs * cc
        rows.append(torch.cat(cols, dim=3))
        r0 += rs * rc
    return torch.cat(rows, dim=2)


def region_attention_macs(height: int, width: int, regions: int, channels: int) -> int:
    """MACs of :func:`region_attention` with ``channels`` = key + value channels (batch 1)."""
    total = 0
    for rs, rc in _splits(height, regions):
        for cs, cc in _splits(width, regions):
            total += rc * cc * (rs * cs) ** 2 * channels
    return total


@MODULES.register("ocnet_pyramid", paper=PAPER, family="pairwise", order="O(N^2 C)")
class PyramidOC(ContextModule):
    """OCNet pyramid object context: self-attention inside s x s sub-regions for s in ``sizes``.

    Shapes: X (B, C, H, W). For each s in ``sizes`` (default (1, 2, 3, 6)) a
    :class:`SelfAttentionUnit` (shared key/query C -> C_k = C/2 with BN + LeakyReLU, value C -> C_v = C,
    zero-initialised W: C_v -> C) whose softmax attention (scale C_k^{-1/2}) runs separately inside each
    of the s x s contiguous sub-regions (the last row/column of regions absorbs the remainder; on a
    map smaller than s the whole map is one region — the official code would produce empty regions).
    The input is lifted by ``up_dr`` = 1x1 conv C -> len(sizes) C -> BN -> LeakyReLU; then
    concat [up_dr(X), ctx_1, ..., ctx_6] (2 len(sizes) C) -> 1x1 conv -> BN -> LeakyReLU to
    ``out_channels`` (default C) -> Dropout2d(0.05). (openseg-group/OCNet.pytorch pyramid_oc_block.)
    Cost (MACs, batch 1): N C len(s) C (lift) + per stage N C (C_k + C_v) + sum over regions n_r^2
    (C_k + C_v) + N C_v C, + 2 len(s) N C C_out; order O(N^2 C) (the s = 1 stage is dense).
    """

    @checked(dropout=DROPOUT)
    def __init__(
        self,
        in_channels: int,
        *,
        sizes: Sequence[int] = (1, 2, 3, 6),
        key_channels: Optional[int] = None,
        value_channels: Optional[int] = None,
        out_channels: Optional[int] = None,
        dropout: float = 0.05,
        act: Optional[str] = "leaky_relu",
    ) -> None:
        super().__init__(in_channels, _default(out_channels, in_channels))
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must be a non-empty sequence of positive ints, got {sizes!r}")
        self.sizes = tuple(int(s) for s in sizes)
        kc, vc = _default(key_channels, in_channels // 2), _default(value_channels, in_channels)
        c, p = in_channels, len(self.sizes)
        self.lift = ConvNormAct(c, p * c, 1, act=act)
        self.stages = nn.ModuleList(SelfAttentionUnit(c, kc, vc, c, act=act) for _ in self.sizes)
        self.bottleneck = ConvNormAct(2 * p * c, self.out_channels, 1, act=act)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        feats, factors = [self.lift(x)], {}
        for s, unit in zip(self.sizes, self.stages):
            q, k, v = unit.project(x)
            weights: Optional[Dict[str, Tensor]] = {} if return_attention else None
            ctx = region_attention(q, k, v, s, unit.key_channels**-0.5, weights, unit._aggregate)
            feats.append(unit.out(ctx))
            if weights is not None:
                factors.update({f"size{s}_{key}": value for key, value in weights.items()})
        y = self.dropout(self.bottleneck(torch.cat(feats, dim=1)))
        return (y, factors) if return_attention else y

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """One map per region size s: the softmax row of the query inside its own sub-region (convex)."""
        h, w = size
        q = flat_index(query, w)
        index = index_map(size, factors[next(iter(factors))].device)
        maps: Dict[str, Tensor] = {}
        for s in self.sizes:
            out = torch.zeros(h * w, dtype=torch.float32, device=index.device)
            r0 = 0
            for rs, rc in _splits(h, s):
                c0 = 0
                for cs, cc in _splits(w, s):
                    blocks = _to_blocks(index[:, :, r0:r0 + rs * rc, c0:c0 + cs * cc], rs, rc, cs, cc)[0, :, :, 0].long()
                    hit = (blocks == q).nonzero()
                    if hit.numel():
                        region, pos = int(hit[0, 0]), int(hit[0, 1])
                        weights = factors[f"size{s}_r{r0}_c{c0}"][0, region, pos]
                        out = out.to(weights.dtype)
                        out[blocks[region]] = weights
                    c0 += cs * cc
                r0 += rs * rc
            maps[f"regions {s}x{s}"] = out.reshape(size)
        return maps, True

    def flops(self, height: int, width: int) -> int:
        """MACs of the lift, the per-size units and the fusion conv (batch 1)."""
        n, c = height * width, self.in_channels
        macs = self.lift.macs(height, width) + self.bottleneck.macs(height, width)
        for s, unit in zip(self.sizes, self.stages):
            kc, vc = unit.key_channels, unit.value_channels
            macs += n * c * (kc + vc) + n * vc * c + region_attention_macs(height, width, s, kc + vc)
        return macs


@MODULES.register("ocnet_asp", paper=PAPER, family="pairwise", order="O(N^2 C)")
class ASPOC(ContextModule):
    """OCNet ASP-OC: ASPP whose image-pooling branch is replaced by a pooled object-context branch.

    Shapes: X (B, C, H, W); branches of C_b = C/2 channels (256 for C = 512): (1) 3x3 conv C -> C_b
    (bias) -> BN -> LeakyReLU -> :class:`SelfAttentionUnit` (shared key/query C_b -> C_b/2, value C_b,
    zero-init W C_b -> C_b) on the 2x2 max-pooled map (``pool_scale``), context upsampled (bilinear,
    align_corners=True) -> 1x1 conv -> BN -> LeakyReLU (the context only, no concatenation);
    (2) 1x1 conv; (3-5) 3x3 atrous convs with ``dilations`` (12, 24, 36), each -> BN -> LeakyReLU.
    Concat (5 C_b) -> 1x1 conv -> BN -> LeakyReLU to ``out_channels`` (default C) -> Dropout2d(0.1).
    (openseg-group/OCNet.pytorch asp_oc_block.) The 2x2 max-pooling floors as the official
    ``nn.MaxPool2d(2)`` (``ceil_mode=False``, default; a side shorter than 2 is pooled whole, where the
    official code raises); ``ceil_mode=True`` keeps the partial last window (odd sizes).
    Cost (MACs, batch 1): 9 N C C_b + unit on N/4 positions ((N/4)^2 (C_b/2 + C_b)) + N C_b^2
    + N C C_b (1 + 9 len(dilations)) + 5 N C_b C_out; order O(N^2 C) with a 1/16 constant.
    """

    @checked(dropout=DROPOUT)
    def __init__(
        self,
        in_channels: int,
        *,
        branch_channels: Optional[int] = None,
        key_channels: Optional[int] = None,
        out_channels: Optional[int] = None,
        dilations: Sequence[int] = (12, 24, 36),
        pool_scale: int = 2,
        dropout: float = 0.1,
        act: Optional[str] = "leaky_relu",
        ceil_mode: bool = False,
    ) -> None:
        super().__init__(in_channels, _default(out_channels, in_channels))
        cb = _default(branch_channels, in_channels // 2)
        kc = _default(key_channels, cb // 2)
        self.dilations = tuple(int(d) for d in dilations)
        self.context_in = ConvNormAct(in_channels, cb, 3, act=act, bias=True)
        self.attention = SelfAttentionUnit(cb, kc, cb, cb, act=act, pool_scale=pool_scale, ceil_mode=ceil_mode)
        self.context_out = ConvNormAct(cb, cb, 1, act=act)
        self.conv1x1 = ConvNormAct(in_channels, cb, 1, act=act)
        self.atrous = nn.ModuleList(ConvNormAct(in_channels, cb, 3, dilation=d, act=act) for d in self.dilations)
        self.bottleneck = ConvNormAct(cb * (2 + len(self.dilations)), self.out_channels, 1, act=act)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        ctx, weights = self.attention(self.context_in(x), return_attention=return_attention)
        feats = [self.context_out(ctx), self.conv1x1(x)] + [conv(x) for conv in self.atrous]
        y = self.dropout(self.bottleneck(torch.cat(feats, dim=1)))
        return (y, {"attention": weights, "context": ctx}) if return_attention else y

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """The object-context branch's weights over the pixels (``SelfAttentionUnit.weight_row``)."""
        return unit_maps(self.attention, factors["attention"], size, size, query)

    def flops(self, height: int, width: int) -> int:
        """MACs of all branches and the fusion conv (batch 1)."""
        macs = self.context_in.macs(height, width) + self.attention.macs(height, width)
        macs += self.context_out.macs(height, width) + self.conv1x1.macs(height, width)
        macs += sum(conv.macs(height, width) for conv in self.atrous)
        return macs + self.bottleneck.macs(height, width)

