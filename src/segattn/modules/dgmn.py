"""DGMN: dynamic graph message passing over sampled, dilated neighbourhoods."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import checked
from segattn.layers import ConvNormAct
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import full_precision, upcast
from segattn.ops.flops import conv2d_macs
from segattn.ops.sampling import aggregate_columns, deform_unfold, unfold_window, window_offsets
from segattn.ops.weightmaps import splat
from segattn.registry import MODULES


@MODULES.register("dgmn", paper="Zhang et al., CVPR 2020", family="sparse", order="O(N D k^2 C)")
class DGMN2d(ContextModule):
    """Dynamic graph message passing (Zhang, Xu, Arnab, Torr — CVPR 2020): two blocks of lzrobots/dgmn
    with ``deform='deformatt'``, in pure PyTorch (``grid_sample`` replaces the CUDA deformable unfold
    and deformable convolution). ``block="cat11"`` (default): ``DynamicWeightsCat11``, the block the
    code builds for ``INSERT_POS: "afterAdd"`` (reduction, grouped-softmax filters times sigmoid
    affinities, two fusion convs). ``block="after3x3"``: ``ReDynamicWeightsCat33``, the block every
    released config builds (``INSERT_POS: "after3x3"``, ``DEFORM: "deformatt"``, ``GROUP: 4``); see
    the end of this docstring. The default is the cat11 block (segattn's head-level DGMN since its
    first release; a listed deviation from the released configs, which put the after3x3 block after
    the 3x3 conv of res5's bottlenecks in a Mask R-CNN backbone).

    Input X (B, C, H, W); C_r = C / reduction, G channel groups of R = C_r / G channels (contiguous),
    k x k samples (K = k^2) per dilation d in D dilations::

        Xd = ReLU(BN(conv1x1_{C -> C_r}(X)))                                   (B, C_r, H, W)
        per d:  F_d = conv3x3_dil d(Xd) -> G K filter logits,  A_d -> K affinity logits,
                O_d = conv3x3_dil d(Xd) -> 2K offsets (dy, dx per sample)
                w_d[g, s, p] = softmax_s(F_d[g, s, p]) * sigmoid(A_d[s, p])       (B, G, K, H, W) float32
                m_d[c, p] = sum_s w_d[g(c), s, p] * Xd[c, p + d delta_s + O_d[s, p]]  (bilinear, zeros outside)
        out = X + ReLU(BN(conv1x1_{C_r -> C}(ReLU(BN(conv1x1_{5 C_r -> C_r}([Xd; m_1..m_D]))))))

    Sampling: ``deform_unfold`` (grid_sample, bilinear) for the (B, C_r, K, H, W) neighbourhoods; with
    zero offsets it equals ``nn.Unfold(k, dilation=d, padding=d (k-1)/2)``, which ``deformable=False``
    uses (the reference's ``deform='none'`` sampling). The affinity multiplies the unfolded features in
    the reference; here it is folded into the per-sample weights (same product, fewer multiplies).

    Defaults (the released configs' group, kernel, dilations and deform mode): G = 4 groups, k = 3,
    dilations (1, 4, 8, 12), reduction 4 (cat11; the reference fixes it), ``deformable=True``,
    ``affinity=True`` (deformatt). Deviations from the official code: BatchNorm2d
    instead of GroupNorm(32) (segmentation heads use (Sync)BN, and GN(32) needs C_r >= 32); the offsets
    come from their own zero-initialised 3x3 convolution (the reference slices them from the filter
    conv, default init) so a fresh module samples the fixed neighbourhoods; the training-time random
    group ``shuffle`` is not implemented. The paper's segmentation head is not released. Where the
    reference cannot run and this module can: its ``deform='deform'`` mode (offsets, no affinity)
    takes only the first 9 filter logits whatever the group count, so G > 1 fails in its ``bmm``
    (here ``deformable=True, affinity=False`` takes G k^2 filters); its layers hard-code k = 3 (9, 18
    and 27 channels, 3x3 unfolds) and exactly four dilations (``cata``..``catd``, ``5 C_r`` fusion
    input), here any odd k and any number of dilations; its ``DeformUnfold`` is CUDA-only
    (``NotImplementedError`` on CPU). Reduction is fixed at 4 there (``reduction`` here).

    Checked against a CPU port of the reference (``DynamicWeightsCat11`` and the ``deformable_im2col``
    kernel's sampling rule: sample s = 3i + j at ``p - d + (i, j) d + (off[2s], off[2s+1])``, zero
    unless -1 < y < H and -1 < x < W, out-of-map bilinear corners zero; filters / offsets / affinity
    = the predictor's channels ``[:9G]``, ``[9G:9G+18]``, ``[-9:]``), float64, weights copied and
    BatchNorm in both: largest output difference 6.7e-16 over deformatt G 1, 2, 4 (offsets up to 24 px),
    deform G 1 and none G 1, 4; sampling alone 4.9e-15, also at integer and boundary offsets.

    Cost (MACs, batch 1): ``C C_r N`` + per dilation ``9 C_r (G K + K + 2K) N`` (predictors)
    + ``C_r K N`` (aggregation; einsum under ``reference_attention()``) + ``(D+1) C_r^2 N + C_r C N``;
    order O(N D k^2 C). Memory O(N K C_r) per dilation for the sampled neighbourhoods.
    ``return_attention`` adds ``weights_d{d}`` (B, G, K, H, W) and ``offsets_d{d}`` (B, 2K, H, W).

    ``block="after3x3"`` (``ReDynamicWeightsCat33``; no reduction: ``reduction`` must stay unset)::

        per d:  O_d = conv3x3_dil d(X) -> 2K offsets                      (zero-initialised, as above)
                S_d[c, s, p] = X[c, p + d delta_s + O_d[s, p]]             deformable neighbourhoods (C, K)
                [F_d; A_d] = DeformConv3x3_dil d(X; O_d) = W_d . S_d       G K filter + K affinity logits
                w_d[g, s, p] = F_d[g, s, p] * softmax_s(A_d[s, p])          raw filters, softmax affinity
                m_d[c, p] = sum_s w_d[g(c), s, p] S_d[c, s, p]
        out = X + sum_d gamma_d m_d                                         gamma_d init 1, no fusion convs

    The deformable convolution samples where the unfold samples (same offsets, same bilinear rule),
    so its logits are W_d applied to S_d (one 1x1 product over C K). ``affinity=False`` is the
    reference's ``deform='deform'`` (softmax filters, no affinity); ``deformable=False`` its
    ``'none'`` (fixed neighbourhoods, plain 3x3 conv logits, softmax filters). Deviations: the offset
    convs are zero-initialised (default init there); the reference's fourth dilation reads its
    affinity logits from the filter channels (``att4 = dynamic_filter4[:, -9:]``, a slip that leaves
    its own affinity channels without gradient), here every dilation uses its affinity channels.
    Checked against a float64 CPU port of the reference forward (``DeformUnfold`` and ``DeformConv``
    written as the ``deformable_im2col`` sampling rule, weights copied, G 4 and 2, offsets of a few
    pixels): largest output difference 4.4e-16 with the ``att4`` line fixed (1.2e-2 as released).
    Cost per dilation: ``9 C 2K N`` (offsets) +
    ``C K (G K + K) N`` (logits) + ``C K N`` (aggregation).
    """

    @checked()
    def __init__(
        self,
        in_channels: int,
        *,
        reduction: Optional[int] = None,
        groups: int = 4,
        kernel_size: int = 3,
        dilations: Sequence[int] = (1, 4, 8, 12),
        deformable: bool = True,
        affinity: bool = True,
        block: str = "cat11",
    ) -> None:
        super().__init__(in_channels)
        if block not in ("cat11", "after3x3"):
            raise ValueError(f"dgmn block must be 'cat11' (DynamicWeightsCat11) or 'after3x3' (ReDynamicWeightsCat33), "
                             f"got {block!r}")
        if block == "after3x3" and reduction not in (None, 1):
            raise ValueError(f"dgmn block='after3x3' has no reduction (ReDynamicWeightsCat33 works on all C channels); "
                             f"leave reduction unset, got {reduction!r}")
        reduction = (4 if block == "cat11" else 1) if reduction is None else reduction
        self.dilations: Tuple[int, ...] = _check_args(reduction, groups, kernel_size, dilations)
        mid = max(1, in_channels // reduction)
        if mid % groups:
            raise ValueError(
                f"reduced channels ({mid} = {in_channels} // {reduction}) must be divisible by groups ({groups})"
            )
        self.block, self.mid_channels, self.groups, self.kernel_size = block, mid, groups, kernel_size
        self.deformable, self.affinity = deformable, affinity
        kk = kernel_size * kernel_size
        k33 = kernel_size if block == "after3x3" else 3  # the cat11 predictors are 3x3 whatever k (as the reference)
        self.reduce = ConvNormAct(in_channels, mid, 1) if block == "cat11" else nn.Identity()
        self.predictors = nn.ModuleList(
            nn.Conv2d(mid, groups * kk + (kk if affinity else 0), k33, padding=d * (k33 - 1) // 2, dilation=d, bias=False)
            for d in self.dilations
        )
        if deformable:
            self.offset_convs = nn.ModuleList(
                nn.Conv2d(mid, 2 * kk, 3, padding=d, dilation=d, bias=False) for d in self.dilations
            )
            for conv in self.offset_convs:
                nn.init.zeros_(conv.weight)
        self.fuse: Optional[nn.Module] = None
        self.gammas: Optional[nn.Parameter] = None
        if block == "cat11":
            self.fuse = nn.Sequential(
                ConvNormAct(mid * (len(self.dilations) + 1), mid, 1), ConvNormAct(mid, in_channels, 1)
            )
        else:
            self.gammas = nn.Parameter(torch.ones(len(self.dilations)))

    def dynamic_weights(self, xd: Tensor, index: int) -> Tensor:
        """Per-pixel sample weights (B, G, K, H, W), float32: softmax filters times sigmoid affinities."""
        b, _, h, w = xd.shape
        kk = self.kernel_size * self.kernel_size
        raw = self.predictors[index](xd)
        with full_precision(xd.device):
            logits = upcast(raw)
            filters = torch.softmax(logits[:, : self.groups * kk].reshape(b, self.groups, kk, h, w), dim=2)
            if not self.affinity:
                return filters
            return filters * torch.sigmoid(logits[:, self.groups * kk :]).unsqueeze(1)

    def deformable_weights(self, cols: Tensor, index: int) -> Tensor:
        """after3x3: per-pixel sample weights (B, G, K, H, W), float32, from the predictor applied to the
        sampled neighbourhoods ``cols`` (B, C, K, H, W) (the deformable convolution): raw filters times
        the softmax affinity, or softmax filters without affinity."""
        b, c, kk, h, w = cols.shape
        weight = self.predictors[index].weight
        with full_precision(cols.device):
            logits = F.conv2d(upcast(cols).reshape(b, c * kk, h, w), upcast(weight).reshape(weight.shape[0], c * kk, 1, 1))
            filters = logits[:, : self.groups * kk].reshape(b, self.groups, kk, h, w)
            if not self.affinity:
                return torch.softmax(filters, dim=2)
            return filters * torch.softmax(logits[:, self.groups * kk :], dim=1).unsqueeze(1)

    def neighbourhoods(self, xd: Tensor, index: int) -> Tuple[Tensor, Tensor]:
        """Sampled neighbourhoods (B, C_r, K, H, W) at dilation ``dilations[index]`` and the offsets used."""
        d, k = self.dilations[index], self.kernel_size
        if not self.deformable:
            b, _, h, w = xd.shape
            return unfold_window(xd, k, d), xd.new_zeros(b, 2 * k * k, h, w, dtype=upcast(xd).dtype)
        offsets = upcast(self.offset_convs[index](xd))
        return deform_unfold(xd, offsets, k, d), offsets

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        xd = self.reduce(x)
        messages = [xd]
        factors: Dict[str, Tensor] = {}
        for i, d in enumerate(self.dilations):
            cols, offsets = self.neighbourhoods(xd, i)
            weights = self.dynamic_weights(xd, i) if self.fuse is not None else self.deformable_weights(cols, i)
            with full_precision(x.device):
                messages.append(aggregate_columns(cols, weights).to(x.dtype))
            factors[f"weights_d{d}"], factors[f"offsets_d{d}"] = weights, offsets
        if self.fuse is not None:
            y = x + self.fuse(torch.cat(messages, dim=1))
        else:  # after3x3: gamma-weighted sum of the messages on the input
            y = x
            for gamma, message in zip(self.gammas.to(x.dtype), messages[1:]):
                y = y + gamma * message
        return (y, factors) if return_attention else y

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Per dilation, the k^2 sampled neighbours (deformable offsets, bilinear) with their weights
        (softmax filter times sigmoid affinity, averaged over groups): not a convex combination."""
        maps: Dict[str, Tensor] = {}
        qy, qx = query
        for d in self.dilations:
            w = factors[f"weights_d{d}"][0, :, :, qy, qx].mean(0)
            off = factors[f"offsets_d{d}"][0, :, qy, qx]
            out = torch.zeros(size, dtype=w.dtype, device=w.device)
            for s, (dy, dx) in enumerate(window_offsets(self.kernel_size, d)):
                splat(out, qy + dy + float(off[2 * s]), qx + dx + float(off[2 * s + 1]), w[s])
            maps[f"dilation {d}"] = out
        return maps, False

    def flops(self, height: int, width: int) -> int:
        c, mid, g, n = self.in_channels, self.mid_channels, self.groups, height * width
        kk = self.kernel_size * self.kernel_size
        if self.fuse is None:  # after3x3: offsets, logits over the sampled neighbourhoods, aggregation
            logits = g * kk + (kk if self.affinity else 0)
            offsets = conv2d_macs(c, 2 * kk, 3, height, width) if self.deformable else 0
            return len(self.dilations) * (offsets + c * kk * logits * n + c * kk * n)
        pred_out = g * kk + (kk if self.affinity else 0) + (2 * kk if self.deformable else 0)
        per_dilation = conv2d_macs(mid, pred_out, 3, height, width) + mid * kk * n
        fuse = conv2d_macs(mid * (len(self.dilations) + 1), mid, 1, height, width) + conv2d_macs(
            mid, c, 1, height, width
        )
        return conv2d_macs(c, mid, 1, height, width) + len(self.dilations) * per_dilation + fuse

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, mid_channels={self.mid_channels}, groups={self.groups}, "
            f"kernel_size={self.kernel_size}, dilations={self.dilations}, deformable={self.deformable}, "
            f"affinity={self.affinity}, block={self.block!r}"
        )


def _check_args(reduction: int, groups: int, kernel_size: int, dilations: Sequence[int]) -> Tuple[int, ...]:
    if not isinstance(reduction, int) or reduction < 1:
        raise ValueError(f"reduction must be a positive int, got {reduction!r}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
    rates = tuple(dilations)
    if not rates or any(not isinstance(d, int) or d < 1 for d in rates):
        raise ValueError(f"dilations must be a non-empty sequence of positive ints, got {dilations!r}")
    if len(set(rates)) != len(rates):
        raise ValueError(f"dilations must be distinct, got {rates}")
    return rates
