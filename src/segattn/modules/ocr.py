"""OCR object-contextual representations (Yuan, Chen, Wang, ECCV 2020): ``ocr``.

One module holds the official ``SpatialGather_Module`` (soft object regions -> region
representations) and ``SpatialOCR_Module`` (pixel-region attention + fusion). The soft-region
logits come from the module's own 1x1 classifier on its input (``region_head=True``, so the module
fits the one-input contract) or from the caller: ``module(x, regions)`` with the logits of an
auxiliary head (the paper's FCN on res4, as segattn's ``ocrnet`` does).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from segattn.checks import DROPOUT, POSITIVE, checked
from segattn.layers import ConvNormAct
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.modules.nonlocal_ import from_tokens, to_tokens
from segattn.ops.attention import attend, full_precision, upcast
from segattn.registry import MODULES

PAPER = "Yuan, Chen, Wang, ECCV 2020"
Pair = Tuple[int, int]


def soft_regions(logits: Tensor, scale: float = 1.0) -> Tensor:
    """Soft object regions ``M = softmax_N(scale * L)`` (B, K, N) of logits L (B, K, H, W), float32 or more."""
    with full_precision(logits.device):
        return torch.softmax(upcast(logits).flatten(2) * scale, dim=-1)


def gather_regions(x: Tensor, regions: Tensor) -> Tensor:
    """Region representations ``F = M X^T`` as a (B, C, K, 1) map in x's dtype (K regions, C channels)."""
    with full_precision(x.device):
        feats = torch.matmul(regions, upcast(x).flatten(2).transpose(1, 2))  # (B, K, C)
    return feats.transpose(1, 2).unsqueeze(-1).to(x.dtype)


@MODULES.register("ocr", paper=PAPER, family="pairwise", order="O(N K C')")
class ObjectContext(ContextModule):
    """OCR: each pixel attends to K soft object-region representations instead of all N pixels.

    Equation (X (B, C, H, W), N = H*W, region logits L (B, K, H, W), C_k = ``key_channels``)::

        M   = softmax_N(s L)                                   (K, N)    soft object regions
        F   = M X^T                                            (K, C)    region representations
        W   = softmax_K(phi(X)^T psi(F) / sqrt(C_k))           (N, K)    pixel-region relation
        Y   = rho(W delta(F))                                  (C, N)    object context
        out = Dropout2d(CBR_1x1([Y; X]))                       (C_out, H, W)

    phi (``query``) and psi (``key``): two 1x1 Conv-BN-ReLU to C_k; delta (``value``): one 1x1 CBR
    to C_k; rho (``out``): one 1x1 CBR back to C; ``bottleneck``: 1x1 CBR 2C -> C_out. The logits L
    are ``regions`` when given (e.g. the auxiliary FCN's logits at the same size, or scaled one-hot
    ground truth for the paper's "ideal OCR"), else ``region(X)``, a 1x1 conv C -> K with bias
    (``region_head=True``; with ``region_head=False`` the logits must be passed). The gathering runs
    in at least float32; the pixel-region attention through the shared kernel (N x K, never N x N).

    Defaults (official ``SpatialOCRNet``: ``SpatialOCR_Module(512, 256, 512, dropout=0.05)``):
    ``key_channels`` C/2, ``out_channels`` C, ``gather_scale`` s = 1, ``dropout`` 0.05, K =
    ``num_regions`` 19 (the number of classes: Cityscapes). mmseg's OCRHead is the same block without
    the dropout (0 there) and with ``ocr_channels`` = C_k.

    Activation ``act`` (every CBR above): ``"relu"`` by default, mmseg's OCRHead (``ConvModule``
    with ReLU), which the ``ocrnet`` model, the converted mmseg checkpoints and the mmseg-protocol
    recipes use. ``act="leaky_relu"`` is the official network as configured: all openseg configs set
    ``bn_type: inplace_abn``, whose ``BNReLU`` is InPlaceABN with LeakyReLU(0.01) (a listed deviation
    of the default from openseg, not from mmseg). Deviations from the official code
    (openseg-group/openseg.pytorch ``lib/models/modules/spatial_ocr_block.py``): the convs before a
    BN have no bias (as mmseg; an official bias folds into the BN's running mean); the pixel-query
    down-sampling ``scale`` of ``ObjectAttentionBlock2D`` and the ``use_gt`` / ``use_bg`` switches
    are not built (pass one-hot regions for ``use_gt``'s gathering); the internal ``region`` conv is
    segattn's, for the one-input contract (the paper's regions come from an FCN head on res4).

    Cost (MACs, batch 1): ``C K N`` (region conv, if used) + ``K N C`` (gathering) + ``(C + C_k) C_k N``
    (query) + ``(2 C + C_k) C_k K`` (key, value) + ``2 N K C_k`` (attention) + ``C_k C N`` (out) +
    ``2 C C_out N`` (bottleneck), order O(N K C'). ``return_attention`` gives ``regions`` (B, K, N) =
    M and ``attention`` (B, N, K) = W.
    """

    @checked(dropout=DROPOUT, gather_scale=POSITIVE)
    def __init__(
        self,
        in_channels: int,
        *,
        num_regions: int = 19,
        key_channels: Optional[int] = None,
        out_channels: Optional[int] = None,
        region_head: bool = True,
        gather_scale: float = 1.0,
        dropout: float = 0.05,
        act: str = "relu",
    ) -> None:
        super().__init__(in_channels, out_channels)
        if num_regions < 1:
            raise ValueError(f"num_regions must be >= 1, got {num_regions}")
        if act not in ("relu", "leaky_relu"):
            raise ValueError(f"ocr act must be 'relu' (mmseg) or 'leaky_relu' (openseg's InPlaceABN), got {act!r}")
        self.num_regions, self.gather_scale, self.act = num_regions, float(gather_scale), act
        self.key_channels = key_channels or max(1, in_channels // 2)
        ck = self.key_channels
        self.region = nn.Conv2d(in_channels, num_regions, 1) if region_head else None
        self.query = nn.Sequential(ConvNormAct(in_channels, ck, 1, act=act), ConvNormAct(ck, ck, 1, act=act))
        self.key = nn.Sequential(ConvNormAct(in_channels, ck, 1, act=act), ConvNormAct(ck, ck, 1, act=act))
        self.value = ConvNormAct(in_channels, ck, 1, act=act)
        self.out = ConvNormAct(ck, in_channels, 1, act=act)
        self.bottleneck = ConvNormAct(2 * in_channels, self.out_channels, 1, act=act)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def region_logits(self, x: Tensor, regions: Optional[Tensor]) -> Tensor:
        """``regions`` checked against x (B, K, H, W), or the module's own ``region(x)``."""
        if regions is None:
            if self.region is None:
                raise ValueError("ocr with region_head=False needs the region logits: module(x, regions) with "
                                 "regions of shape (B, K, H, W)")
            return self.region(x)
        if not isinstance(regions, Tensor) or regions.dim() != 4 or not regions.is_floating_point():
            raise ValueError(f"ocr expects floating region logits of shape (B, K, H, W), got "
                             f"{getattr(regions, 'shape', type(regions).__name__)}")
        if regions.shape[0] != x.shape[0] or regions.shape[2:] != x.shape[2:]:
            raise ValueError(f"ocr region logits {tuple(regions.shape)} must match the input's batch and size "
                             f"{tuple(x.shape)} (resize them to the feature map first)")
        return regions

    def _aggregate(self, q: Tensor, k: Tensor, v: Tensor, return_attention: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """The object context as tokens (B, 1, N, C_k), each pixel's softmax-weighted sum of the K region
        features, and, when asked, the (B, 1, N, K) weights: one method so that the analysis' taps reach it."""
        return attend(q, k, v, self.key_channels**-0.5, return_attention)

    def forward(self, x: Tensor, regions: Optional[Tensor] = None, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        _, _, h, w = x.shape
        m = soft_regions(self.region_logits(x, regions), self.gather_scale)
        feats = gather_regions(x, m)
        q, k, v = to_tokens(self.query(x)), to_tokens(self.key(feats)), to_tokens(self.value(feats))
        y, weights = self._aggregate(q, k, v, return_attention)
        del q  # the pixel queries are not needed past the attention (eval peak: one map less at the cat)
        context = self.out(from_tokens(y, h, w))
        del y
        out = self.dropout(self.bottleneck(torch.cat([context, x], dim=1)))
        if not return_attention:
            return out
        return out, {"regions": m, "attention": weights.squeeze(1)}

    def weight_maps(self, factors: Attention, size: Pair, query: Pair) -> Tuple[Dict[str, Tensor], bool]:
        """Pixel ``query``'s weights over the pixels: ``sum_k W_ik M_k``, the regions it attends to
        mixed by their soft masks (the value path with delta and rho taken as identity); convex."""
        row = factors["attention"][0, query[0] * size[1] + query[1]]
        return {"object context": (row @ factors["regions"][0]).reshape(size)}, True

    def flops(self, height: int, width: int) -> int:
        """MACs of one forward at (1, C, height, width) with K = ``num_regions`` regions."""
        n, c, ck, k, co = height * width, self.in_channels, self.key_channels, self.num_regions, self.out_channels
        macs = k * n * c + (c + ck) * ck * n + (2 * c + ck) * ck * k + 2 * n * k * ck + ck * c * n + 2 * c * co * n
        return macs + (c * k * n if self.region is not None else 0)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_regions={self.num_regions}, key_channels={self.key_channels}, "
                f"region_head={self.region is not None}, gather_scale={self.gather_scale}, act={self.act!r}")
