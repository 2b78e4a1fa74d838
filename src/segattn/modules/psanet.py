"""PSANet: point-wise spatial attention (Zhao et al., ECCV 2018), spec sections 1.10 and 3.2."""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import NON_NEGATIVE, POSITIVE, checked
from segattn.layers import ConvNormAct
from segattn.lowrank.functional import upsampling_matrix
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import full_precision, upcast
from segattn.ops.weightmaps import flat_index, onehot
from segattn.registry import MODULES

Pair = Tuple[int, int]
PSA_TYPES = ("collect", "distribute", "bi-direction")
MASK_FILLS = ("zero", "-inf")
SHRINK_RULES = ("odd", "mmseg")


_INDEX_CACHE: OrderedDict[Tuple[int, int, int, int, str], Tensor] = OrderedDict()
_INDEX_CACHE_SIZE = 4


def _build_psa_index(h: int, w: int, mh: int, mw: int, device: torch.device) -> Tensor:
    """(N, N) int64 index [source j, target i] -> ``(j_h - i_h + hm) m_w + (j_w - i_w + wm)``, or the
    fill slot ``m_h m_w`` where that offset is outside the (m_h, m_w) window. Built from (h, h) and
    (w, w) tables with one N x N allocation (codes of out-of-window offsets exceed the fill slot and
    are clamped to it)."""
    fill = mh * mw
    ar_h, ar_w = torch.arange(h, device=device), torch.arange(w, device=device)
    dh = ar_h[:, None] - ar_h[None, :] + (mh - 1) // 2  # [j_h, i_h]
    dw = ar_w[:, None] - ar_w[None, :] + (mw - 1) // 2  # [j_w, i_w]
    dh_code = torch.where((dh >= 0) & (dh < mh), dh * mw, torch.full_like(dh, fill))
    dw_code = torch.where((dw >= 0) & (dw < mw), dw, torch.full_like(dw, fill))
    index = dh_code[:, None, :, None] + dw_code[None, :, None, :]  # (j_h, j_w, i_h, i_w)
    return index.reshape(h * w, h * w).clamp_(max=fill)


def _fake_mode_active() -> bool:
    """Whether a ``FakeTensorMode`` is active (cost counting on fake tensors: ``segattn.convert.zoo_cost``)."""
    from torch._guards import detect_fake_mode

    return detect_fake_mode() is not None


def psa_index(h: int, w: int, mh: int, mw: int, device: torch.device) -> Tensor:
    """The gather index of :func:`psa_mask`, cached per (size, mask size, device) (last 4 kept)."""
    if torch.compiler.is_compiling() or _fake_mode_active():  # a traced / fake tensor must not enter the cache
        return _build_psa_index(h, w, mh, mw, device)
    key = (h, w, mh, mw, str(device))
    index = _INDEX_CACHE.get(key)
    if index is None:
        index = _INDEX_CACHE[key] = _build_psa_index(h, w, mh, mw, device)
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    else:
        _INDEX_CACHE.move_to_end(key)
    return index


def psa_mask(mask: Tensor, psa_type: str, fill: float = 0.0) -> Tensor:
    """The PSA mask op in pure PyTorch: relative-position masks -> (B, N, N) attention buffer.

    ``mask`` is (B, m_h, m_w, h, w): at every position ``i`` of the (h, w) map an (m_h, m_w) map of
    weights indexed by relative position, centred at ``(hm, wm) = ((m_h - 1) // 2, (m_w - 1) // 2)``.

    collect:    ``buf[b, j, i] = mask[b, j_h - i_h + hm, j_w - i_w + wm, i]`` (mask predicted at the
                target i; channel index = source j, last index = target i);
    distribute: ``buf[b, i, j]`` = the same value, i.e. the transpose (mask predicted at the source).
    Sources outside the window get ``fill`` (0 in the reference). One gather from the mask with a
    ``fill`` slot appended, through an (N, N) index cached per size (:func:`psa_index`); no loop over
    pixels, and the (B, N, N) buffer is the only N x N allocation (inherent to PSANet).
    """
    if mask.dim() != 5:
        raise ValueError(f"psa_mask expects a (B, m_h, m_w, h, w) mask, got shape {tuple(mask.shape)}")
    if psa_type not in ("collect", "distribute"):
        raise ValueError(f"psa_type must be 'collect' or 'distribute', got {psa_type!r}")
    b, mh, mw, h, w = mask.shape
    n = h * w
    index = psa_index(h, w, mh, mw, mask.device)
    ext = torch.cat([mask.reshape(b, mh * mw, n), mask.new_full((b, 1, n), fill)], dim=1)
    buf = ext.gather(1, index.unsqueeze(0).expand(b, n, n))
    return buf if psa_type == "collect" else buf.transpose(1, 2)


def shrunk_size(size: Pair, shrink_factor: int) -> Pair:
    """The reference's ``((H - 1) // s + 1, (W - 1) // s + 1)``."""
    return (size[0] - 1) // shrink_factor + 1, (size[1] - 1) // shrink_factor + 1


class PSABranch(nn.Module):
    """reduce (1x1 conv-BN-ReLU C -> C_m) and attention (1x1 conv-BN-ReLU, 1x1 conv C_m -> m_h m_w)."""

    def __init__(self, in_channels: int, mid_channels: int, mask_channels: int) -> None:
        super().__init__()
        self.reduce = ConvNormAct(in_channels, mid_channels)
        self.attention = nn.Sequential(
            ConvNormAct(mid_channels, mid_channels), nn.Conv2d(mid_channels, mask_channels, 1, bias=False)
        )


@MODULES.register("psanet", paper="Zhao et al., ECCV 2018", family="pairwise", order="O(N'^2 C + N' (2h'-1)(2w'-1) C')")
class PointwiseSpatialAttention(ContextModule):
    """Point-wise spatial attention (PSA) of PSANet with collect / distribute branches.

    Per branch on x (B, C, H, W): ``z = reduce(x)`` (1x1 conv-BN-ReLU C -> C_m = C / mid_reduction),
    bilinearly shrunk (align_corners=True) to (h', w') = ((H-1)//s + 1, (W-1)//s + 1), N' = h'w'. A
    1x1 conv-BN-ReLU + 1x1 conv predicts at each position a relative-position mask of m_h x m_w
    weights; the PSA mask op (``psa_mask``) places it, centred on the position, into a buffer
    ``A`` (B, N', N') (row = source j, column = target i)::

        collect:     A[j, i] = mask_i[j - i + centre]     (target i says how much it reads from j)
        distribute:  A[j, i] = mask_j[i - j + centre]     (source j says how much it sends to i)
        A <- softmax over the sources j (dim 1, float32); out_i = sum_j z_j A[j, i] / normalization_factor

    ``bi-direction`` concatenates both (2 C_m channels); ``proj`` (1x1 conv-BN-ReLU -> C) maps back
    and the result is resized (bilinear, align_corners=True) to (H, W). Output (B, C, H, W).

    Paper: Zhao, Zhang, Liu, Shi, Loy, Lin, Jia, "PSANet: Point-wise Spatial Attention Network for
    Scene Parsing", ECCV 2018. Defaults (hszhao/semseg): ``psa_type='bi-direction'``, C_m = C / 4
    (512 for 2048), ``shrink_factor=2``, ``mask_size=(59, 59)`` (the over-complete (2h'-1, 2w'-1) mask
    of 465 crops at output stride 8, i.e. feature maps up to 59 x 59; larger masks than needed are
    cropped to the window), ``psa_softmax=True``, ``normalization_factor=1.0`` (``None`` divides by
    ``m_h m_w``, as ``None`` does in semseg's PSA module and mmseg's PSAHead).
    ``compact=True`` predicts an N'-channel map in absolute coordinates instead (no mask op; needs
    ``mask_size == (h', w')``): collect uses it as is, distribute transposes it.

    ``mask_fill`` (spec 3.2): sources outside the window of a smaller-than-over-complete mask get
    logit 0 in the reference (``'zero'``, default: spurious softmax mass) or are excluded
    (``'-inf'``; weight exactly 0). Without ``psa_softmax`` both mean 0. Deviations: the head's
    concatenation with the input and the 3x3 fuse conv belong to the head; the output is resized to
    exactly (H, W) (the reference resizes to ((h'-1)s+1, (w'-1)s+1), equal for its 8k+1 inputs).

    mmseg's ``PSAHead`` (for its checkpoints, :mod:`segattn.convert.mmseg`) differs in two ways, both off
    by default: ``proj_padding=1`` (its 1x1 ``proj`` conv pads by 1, so the projected map is
    (h'+2, w'+2) before the resize, which shifts it) and ``shrink_rule='mmseg'`` (the odd-size rule
    above only when *both* H and W are not multiples of s; otherwise (H // s, W // s) with
    ``align_corners=False`` for the shrink and the final resize). The default ``shrink_rule='odd'``
    always uses the reference's rule.

    Cost (MACs, batch 1, N = HW, M = m_h m_w, per branch): ``N C C_m + N' C_m (C_m + M) + N'^2 C_m``,
    plus ``proj`` ``N' branches C_m C``. The (B, N', N') buffers (one per branch) and the N' x M mask
    prediction are inherent to PSANet: attention memory O(N'^2), order O(N'^2 C).
    """

    @checked(proj_padding=NON_NEGATIVE, normalization_factor=POSITIVE)
    def __init__(
        self,
        in_channels: int,
        *,
        psa_type: str = "bi-direction",
        mid_reduction: int = 4,
        shrink_factor: int = 2,
        mask_size: Pair = (59, 59),
        compact: bool = False,
        mask_fill: str = "zero",
        psa_softmax: bool = True,
        normalization_factor: Optional[float] = 1.0,
        proj_padding: int = 0,
        shrink_rule: str = "odd",
    ) -> None:
        super().__init__(in_channels)
        if shrink_rule not in SHRINK_RULES:
            raise ValueError(f"shrink_rule must be one of {SHRINK_RULES}, got {shrink_rule!r}")
        if not isinstance(proj_padding, int) or isinstance(proj_padding, bool) or proj_padding < 0:
            raise ValueError(f"proj_padding must be a non-negative int, got {proj_padding!r}")
        self.shrink_rule, self.proj_padding = shrink_rule, proj_padding
        if psa_type not in PSA_TYPES:
            raise ValueError(f"psa_type must be one of {PSA_TYPES}, got {psa_type!r}")
        if mask_fill not in MASK_FILLS:
            raise ValueError(f"mask_fill must be one of {MASK_FILLS}, got {mask_fill!r}")
        if shrink_factor < 1 or mid_reduction < 1 or min(mask_size) < 1:
            raise ValueError(
                f"shrink_factor, mid_reduction and mask_size must be positive, got {shrink_factor}, "
                f"{mid_reduction}, {mask_size}"
            )
        self.psa_type, self.compact, self.mask_fill = psa_type, compact, mask_fill
        self.shrink_factor, self.psa_softmax = shrink_factor, psa_softmax
        self.mask_size: Pair = (int(mask_size[0]), int(mask_size[1]))
        if normalization_factor is None:
            normalization_factor = self.mask_size[0] * self.mask_size[1]
        if not normalization_factor > 0:
            raise ValueError(f"normalization_factor must be positive or None (m_h * m_w), got {normalization_factor}")
        self.normalization_factor = float(normalization_factor)
        self.mid_channels = max(1, in_channels // mid_reduction)
        kinds = ["collect", "distribute"] if psa_type == "bi-direction" else [psa_type]
        self.kinds: List[str] = kinds
        masks = self.mask_size[0] * self.mask_size[1]
        self.branches = nn.ModuleDict({k: PSABranch(in_channels, self.mid_channels, masks) for k in kinds})
        self.proj = ConvNormAct(len(kinds) * self.mid_channels, in_channels)
        self.proj[0].padding = (proj_padding, proj_padding)

    def buffer(self, y: Tensor, kind: str) -> Tensor:
        """(B, m_h m_w, h', w') prediction -> (B, N', N') float32 attention logits (source, target)."""
        b, _, h, w = y.shape
        y = upcast(y)
        if self.compact:
            if self.mask_size != (h, w):
                raise ValueError(f"compact PSA needs mask_size == shrunk feature size {(h, w)}, got {self.mask_size}")
            buf = y.reshape(b, h * w, h * w)
            return buf if kind == "collect" else buf.transpose(1, 2)
        fill = float("-inf") if self.mask_fill == "-inf" and self.psa_softmax else 0.0
        return psa_mask(y.reshape(b, self.mask_size[0], self.mask_size[1], h, w), kind, fill)

    def shrink(self, size: Pair) -> Tuple[Pair, bool]:
        """The shrunk (h', w') of an (H, W) map and the ``align_corners`` of both resizes."""
        s = self.shrink_factor
        if self.shrink_rule == "mmseg" and not (size[0] % s and size[1] % s):
            return (size[0] // s, size[1] // s), False
        return shrunk_size(size, s), True

    def _branch(self, kind: str, x: Tensor, size: Pair, align: bool) -> Tuple[Tensor, Tensor]:
        branch = self.branches[kind]
        z = branch.reduce(x)
        if self.shrink_factor != 1:
            z = F.interpolate(z, size=size, mode="bilinear", align_corners=align)
        logits = branch.attention(z)
        with full_precision(x.device):  # mask, softmax and aggregation in float32, also under autocast
            attn = self.buffer(logits, kind)
            if self.psa_softmax:
                attn = torch.softmax(attn, dim=1)
            out, _ = self._aggregate(upcast(z).flatten(2).to(attn.dtype), attn)
        return out.reshape(z.shape).to(x.dtype), attn

    # where the queries (target pixels) are in _aggregate's output, for the analysis' taps: (B, C, N')
    aggregate_query_dims = (-1,)

    def _aggregate(self, z: Tensor, attn: Tensor) -> Tuple[Tensor, Tensor]:
        """``out_i = sum_j z_j attn_ji / normalization_factor`` (B, C, N') for the (B, N', N') weights
        (source, target) of one branch: one method so that the analysis' taps reach both branches."""
        out = torch.bmm(z, attn)
        if self.normalization_factor != 1.0:
            out = out / self.normalization_factor
        return out, attn

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        height, width = x.shape[2], x.shape[3]
        size, align = self.shrink((height, width))
        outs, maps = [], {}
        for kind in self.kinds:
            out, maps[kind] = self._branch(kind, x, size, align)
            outs.append(out)
        y = self.proj(torch.cat(outs, dim=1))
        if tuple(y.shape[2:]) != (height, width):
            y = F.interpolate(y, size=(height, width), mode="bilinear", align_corners=align)
        if not return_attention:
            return y
        factors: Attention = maps
        return y, factors

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Collect / distribute: column ``query`` of the (source, target) attention on the shrunk grid,
        with the bilinear resize of the output (target side) and of the reduced input (source side)."""
        grid = shrunk_size(size, self.shrink_factor)
        q = flat_index(query, size[1])
        maps: Dict[str, Tensor] = {}
        for kind in self.kinds:
            attn = factors[kind][0]
            if self.shrink_factor == 1:
                row = attn @ onehot(q, grid[0] * grid[1], attn)
            else:
                coeff = upsampling_matrix(size, grid, True, attn.device, attn.dtype)[q]
                shrink = upsampling_matrix(grid, size, True, attn.device, attn.dtype)  # (N', N)
                row = (attn @ coeff) @ shrink
            maps[kind] = row.reshape(size) / self.normalization_factor
        return maps, self.psa_softmax and self.normalization_factor == 1.0

    def flops(self, height: int, width: int) -> int:
        (h, w), _ = self.shrink((height, width))
        n, n_s, c, cm = height * width, h * w, self.in_channels, self.mid_channels
        masks = self.mask_size[0] * self.mask_size[1]
        per_branch = n * c * cm + n_s * cm * (cm + masks) + n_s * n_s * cm
        pad = 2 * self.proj_padding
        return len(self.kinds) * per_branch + self.proj.macs(h + pad, w + pad)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, psa_type={self.psa_type!r}, compact={self.compact}, "
            f"shrink_factor={self.shrink_factor}, mask_size={self.mask_size}, mask_fill={self.mask_fill!r}"
            + (f", proj_padding={self.proj_padding}, shrink_rule={self.shrink_rule!r}"
               if (self.proj_padding, self.shrink_rule) != (0, "odd") else "")
        )
