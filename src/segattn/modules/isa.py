"""ISA: interlaced sparse self-attention (Huang et al., 2019 / IJCV 2021), spec sections 1.7 and 3.15."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import checked
from segattn.layers import ConvNormAct
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import attend
from segattn.ops.weightmaps import flat_index, index_map
from segattn.registry import MODULES

Pair = Tuple[int, int]
Grouping = Callable[[Tensor, Pair], Tensor]
Ungrouping = Callable[[Tensor, int, Pair, Pair], Tensor]
# Key offset that removes padded positions from the softmax (``mask_padding=True``): finite, so a group made
# only of padding still has a well-defined (uniform) softmax and no NaN appears; fits float16.
_PAD_LOGIT = -1.0e4


def padding_for(size: Pair, factor: Pair) -> Tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding making (H, W) multiples of ``factor``; split as pad//2 first."""
    pad_h = -size[0] % factor[0]
    pad_w = -size[1] % factor[1]
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def pad_map(x: Tensor, factor: Pair) -> Tensor:
    """Zero-pad (B, C, H, W) to (o_h d_h, o_w d_w) with the reference's symmetric split (``x`` itself,
    not a copy, when the size is already a multiple of ``factor``)."""
    pads = padding_for((x.shape[2], x.shape[3]), factor)
    return F.pad(x, pads) if any(pads) else x


def crop_map(x: Tensor, size: Pair, factor: Pair) -> Tensor:
    """Inverse of ``pad_map``: cut (B, C, Hp, Wp) back to ``size``."""
    left, _, top, _ = padding_for(size, factor)
    return x[:, :, top : top + size[0], left : left + size[1]]


def group_long(x: Tensor, factor: Pair) -> Tensor:
    """(B, C, o_h d_h, o_w d_w) -> (B, d_h d_w, o_h o_w, C): one group per offset inside a d_h x d_w cell."""
    b, c, hp, wp = x.shape
    dh, dw = factor
    x = x.reshape(b, c, hp // dh, dh, wp // dw, dw).permute(0, 3, 5, 2, 4, 1)
    return x.reshape(b, dh * dw, (hp // dh) * (wp // dw), c)


def ungroup_long(x: Tensor, batch: int, padded: Pair, factor: Pair) -> Tensor:
    """Inverse of ``group_long``: (B, d_h d_w, o_h o_w, C) -> (B, C, o_h d_h, o_w d_w)."""
    dh, dw = factor
    oh, ow = padded[0] // dh, padded[1] // dw
    x = x.reshape(batch, dh, dw, oh, ow, -1).permute(0, 5, 3, 1, 4, 2)
    return x.reshape(batch, -1, padded[0], padded[1])


def group_short(x: Tensor, factor: Pair) -> Tensor:
    """(B, C, o_h d_h, o_w d_w) -> (B, o_h o_w, d_h d_w, C): one group per contiguous d_h x d_w cell."""
    b, c, hp, wp = x.shape
    dh, dw = factor
    x = x.reshape(b, c, hp // dh, dh, wp // dw, dw).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (hp // dh) * (wp // dw), dh * dw, c)


def ungroup_short(x: Tensor, batch: int, padded: Pair, factor: Pair) -> Tensor:
    """Inverse of ``group_short``: (B, o_h o_w, d_h d_w, C) -> (B, C, o_h d_h, o_w d_w)."""
    dh, dw = factor
    oh, ow = padded[0] // dh, padded[1] // dw
    x = x.reshape(batch, oh, ow, dh, dw, -1).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(batch, -1, padded[0], padded[1])


class SelfAttentionStage(nn.Module):
    """The openseg ISA self-attention block as per-pixel projections (they commute with the grouping).

    query / key: [1x1 conv (no bias) + BN + ReLU] x 2 (C -> C_k -> C_k); value: 1x1 conv C -> C_v (no
    bias); out: 1x1 conv C_v -> C_out + BN + ReLU (not zero-initialised, as the reference).
    """

    def __init__(self, in_channels: int, key_channels: int, value_channels: int, out_channels: int) -> None:
        super().__init__()
        self.query = nn.Sequential(ConvNormAct(in_channels, key_channels), ConvNormAct(key_channels, key_channels))
        self.key = nn.Sequential(ConvNormAct(in_channels, key_channels), ConvNormAct(key_channels, key_channels))
        self.value = nn.Conv2d(in_channels, value_channels, 1, bias=False)
        self.out = ConvNormAct(value_channels, out_channels)
        self.key_channels = key_channels

    def macs_per_pixel(self) -> int:
        """MACs of the five projections at one pixel."""
        q = self.query[0].macs(1, 1) + self.query[1].macs(1, 1)
        return 2 * q + self.value.in_channels * self.value.out_channels + self.out.macs(1, 1)


@MODULES.register("isa", paper="Huang et al., arXiv 2019 / IJCV 2021", family="sparse", order="O(N (g+l) C)")
class InterlacedSparseSelfAttention(ContextModule):
    """Interlaced sparse self-attention: a long-range then a short-range grouped self-attention.

    Input x (B, C, H, W); local group size ``down_factor = (d_h, d_w)``; ``(o_h, o_w) = (ceil(H/d_h),
    ceil(W/d_w))``; the map is zero-padded to (o_h d_h, o_w d_w) (split pad//2 before, rest after).
    Each stage is ``SA(z) = W_out(softmax_j(q_i . k_j / sqrt(C_k)) v_j)`` restricted to a group::

        long  : groups = pixels with the same offset inside their d_h x d_w cell   (d_h d_w groups of g = o_h o_w)
        short : groups = one contiguous d_h x d_w cell                            (o_h o_w groups of l = d_h d_w)
        y = crop(SA_short(SA_long(pad(x))))                                          (B, C, H, W)

    Each stage's attention is one ``softmax_attention`` call on (B, groups, S, C) tensors (4-D: the
    fused CPU kernel of SDPA takes 4-D input only; 3-D input falls back to the materialising math
    kernel). ``return_attention`` gives {"long": (B, d_h d_w, g, g), "short": (B, o_h o_w, l, l)}. Composed, the two
    block-diagonal permuted operators give every output pixel support on every input pixel (spec 1.7).

    Paper: Huang, Yuan, Guo, Zhang, Chen, Wang, "Interlaced Sparse Self-Attention for Semantic
    Segmentation", arXiv 2019 / IJCV 2021 (with OCNet). Defaults (openseg ``ISA_Module``, mmseg ISAHead):
    ``down_factor=(8, 8)``, key channels C / 2 (``key_reduction=2``: 256 for C = 512), value channels C
    (``value_reduction=1``), output C. query/key = two conv-BN-ReLU, value = plain 1x1 conv, output
    projection conv-BN-ReLU (not zero-initialised, openseg issue #35).

    Padding: the reference zero-pads the *input*, so padded positions get projected keys/values
    (BN bias, ReLU) and take part in both softmaxes. ``mask_padding=False`` (default) reproduces this
    for parity. ``mask_padding=True`` (the spec names no switch; this is ours) keeps the padded zeros
    out of the computation: the long-stage q/k/v projections run on the H x W map (BN statistics see no
    padding), q/k/v are zero-padded, and every padded key gets a logit offset of -1e4 (an extra key
    channel against a constant-1 query channel; finite, so no NaN, and it fits float16). Padded
    positions stay as *relays*: their long-stage output (a mean over the valid pixels of their
    lattice) is a key/value of the short stage. Masking them there too would break the full support
    of spec 1.7 (the pixel that links u's cell to v's lattice can be a padded one), which the tests show.
    Deviations: the ``ISA_Module`` fuse (``conv_bn(cat[x, context])``) belongs to the head; the 1x1
    projections are applied to the whole (padded) map before grouping instead of per group, which is
    the same arithmetic (per-pixel convs; BN sees the same pixels).

    Cost (MACs, batch 1, N_p = o_h d_h o_w d_w): per stage projections ``N_p (2 (C C_k + C_k^2) + C C_v +
    C_v C)``; attention ``N_p g (C_k + C_v)`` long plus ``N_p l (C_k + C_v)`` short. Order O(N (g + l) C),
    attention memory O(N (g + l)), minimal at g = l = sqrt(N); never an N x N tensor (see
    benchmarks/sparse_memory.py).
    """

    @checked()
    def __init__(
        self,
        in_channels: int,
        *,
        down_factor: Pair = (8, 8),
        key_reduction: int = 2,
        value_reduction: int = 1,
        mask_padding: bool = False,
    ) -> None:
        super().__init__(in_channels)
        factor = tuple(int(f) for f in down_factor)
        if len(factor) != 2 or min(factor) < 1:
            raise ValueError(f"down_factor must be two positive ints, got {down_factor!r}")
        if key_reduction < 1 or value_reduction < 1:
            raise ValueError(f"reductions must be >= 1, got {key_reduction}, {value_reduction}")
        self.down_factor: Pair = (factor[0], factor[1])
        self.mask_padding = mask_padding
        self.key_channels = max(1, in_channels // key_reduction)
        self.value_channels = max(1, in_channels // value_reduction)
        c, ck, cv = in_channels, self.key_channels, self.value_channels
        self.long = SelfAttentionStage(c, ck, cv, c)
        self.short = SelfAttentionStage(c, ck, cv, c)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        size: Pair = (x.shape[2], x.shape[3])
        if self.mask_padding:
            z, long_w = self._stage(self.long, x, group_long, ungroup_long, return_attention, size)
        else:
            z, long_w = self._stage(self.long, pad_map(x, self.down_factor), group_long, ungroup_long, return_attention)
        z, short_w = self._stage(self.short, z, group_short, ungroup_short, return_attention)
        z = crop_map(z, size, self.down_factor)
        if not return_attention:
            return z
        assert long_w is not None and short_w is not None
        return z, {"long": long_w, "short": short_w}

    def _stage(
        self,
        sa: SelfAttentionStage,
        x: Tensor,
        group: Grouping,
        ungroup: Ungrouping,
        weights: bool,
        valid_size: Optional[Pair] = None,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """One grouped self-attention on the padded map ``x`` -> padded map.

        With ``valid_size`` (``mask_padding``), ``x`` is the unpadded map: q, k, v are projected there,
        zero-padded, and the padded keys are excluded from the softmax.
        """
        factor = self.down_factor
        q, k, v = sa.query(x), sa.key(x), sa.value(x)
        if valid_size is not None:
            q, k, v = pad_map(q, factor), pad_map(k, factor), pad_map(v, factor)
        padded: Pair = (q.shape[2], q.shape[3])
        q = group(q, factor)  # one at a time: each ungrouped map is freed before the next copy
        k = group(k, factor)
        v = group(v, factor)
        if valid_size is not None and padded != valid_size:
            q, k = self._exclude_padding(q, k, valid_size, group)
        out, attn = self._aggregate(q, k, v, weights)
        batch = x.shape[0]
        del q, k, v, x
        out = ungroup(out, batch, padded, factor)
        return sa.out(out), attn

    def _aggregate(self, q: Tensor, k: Tensor, v: Tensor, return_attention: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """One stage's grouped attention: (B, groups, S, C_v) and, when asked, the (B, groups, S, S)
        weights; one method so that the analysis' taps (:func:`segattn.analyze.measure.survey.tap_context`)
        reach both stages (their mean-row intervention averages the rows of each group)."""
        return attend(q, k, v, self.key_channels**-0.5, return_attention)

    def _exclude_padding(self, q: Tensor, k: Tensor, size: Pair, group: Grouping) -> Tuple[Tensor, Tensor]:
        """Append a key channel that is -1e4 at padded positions (0 elsewhere) and a query channel of 1."""
        valid = pad_map(torch.ones(1, 1, size[0], size[1], dtype=q.dtype, device=q.device), self.down_factor)
        offset = group((1.0 - valid) * _PAD_LOGIT, self.down_factor).expand(k.shape[0], -1, -1, -1)  # (B, G, S, 1)
        ones = torch.ones(q.shape[0], q.shape[1], q.shape[2], 1, dtype=q.dtype, device=q.device)
        return torch.cat([q, ones], dim=-1), torch.cat([k, offset], dim=-1)

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """The short-range row of the query and the composed long-then-short operator (every pixel
        reached), on the padded grid cropped back to the image (padded relays keep their mass); convex."""
        factor = self.down_factor
        left, right, top, bottom = padding_for(size, factor)
        padded = (size[0] + top + bottom, size[1] + left + right)
        short, long = factors["short"][0], factors["long"][0]
        index = index_map(padded, short.device)
        q = flat_index((query[0] + top, query[1] + left), padded[1])
        members_s = group_short(index, factor)[0, :, :, 0].long()  # (groups, l)
        hit = (members_s == q).nonzero()
        group, pos = int(hit[0, 0]), int(hit[0, 1])
        u = torch.zeros(padded[0] * padded[1], dtype=short.dtype, device=short.device)
        u[members_s[group]] = short[group, pos]
        members_l = group_long(index, factor)[0, :, :, 0].long()  # (groups, g)
        composed = torch.zeros_like(u)
        composed[members_l.reshape(-1)] = torch.einsum("gb,gbc->gc", u[members_l], long).reshape(-1)

        def crop(t: Tensor) -> Tensor:
            return t.reshape(padded)[top:top + size[0], left:left + size[1]]

        return {"short": crop(u), "long then short": crop(composed)}, True

    def flops(self, height: int, width: int) -> int:
        dh, dw = self.down_factor
        oh, ow = -(-height // dh), -(-width // dw)
        n, n_pad, g, loc = height * width, oh * dh * ow * dw, oh * ow, dh * dw
        ck, cv = self.key_channels, self.value_channels
        total = 0
        for sa, groups in ((self.long, g), (self.short, loc)):
            total += n_pad * sa.macs_per_pixel() + n_pad * groups * (ck + cv)
        if self.mask_padding:  # long-stage q/k/v projections on the H x W map, one extra key channel
            long = self.long
            total -= (n_pad - n) * (long.macs_per_pixel() - long.out.macs(1, 1))
            total += n_pad * g if n_pad != n else 0
        return total

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, down_factor={self.down_factor}, mask_padding={self.mask_padding}"
