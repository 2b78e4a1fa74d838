"""Local Relation layer (LR-Net): appearance composability + geometry prior within a k x k window."""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from segattn.checks import POSITIVE, checked
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import full_precision, upcast
from segattn.ops.flops import conv2d_macs
from segattn.ops.sampling import unfold_window, window_aggregate
from segattn.ops.weightmaps import window_map
from segattn.registry import MODULES


@MODULES.register("local_relation", paper="Hu et al., ICCV 2019", family="sparse", order="O(N k^2 C)")
class LocalRelation2d(ContextModule):
    """Local Relation layer (Hu, Zhang, Xie, Lin — "Local Relation Networks for Image Recognition", ICCV 2019).

    Input X (B, C, H, W); window Omega(p) = the k x k pixels around p; G = C / m aggregation groups
    (``m = channel_sharing`` channels share one kernel)::

        q = W_q X,  kk = W_k X                       (B, G, H, W)   1x1 convs C -> G, no bias
        G_geo(dp) = conv1x1(ReLU(conv1x1(dp)))       (G, k^2)        MLP 2 -> hidden -> G on the relative
                                                                    position dp / r (r = (k-1)/2), input independent
        w[g, p, p'] = softmax_{p' in Omega(p)}( q[g, p] kk[g, p'] + G_geo[g, p' - p] )    (float32)
        y[c, p] = sum_{p'} w[g(c), p, p'] X[c, p'],   out = W_out y   (1x1 conv C -> C, bias)

    Channel sharing is contiguous: channel c uses kernel ``g(c) = c // m`` (the spec allows interleaved
    or contiguous; gan3sh500 interleaves). Positions outside the map are zero-padded keys/values that
    stay in the softmax (as the ``F.unfold`` re-implementations), so with ``W_q = W_k = 0`` the layer is
    exactly a depthwise convolution with kernel ``softmax(G_geo)`` shared by the m channels of a group.
    Appearance composability Phi is the product q k (the re-implementations' choice; the paper also
    studies differences). No official code exists; the relative positions are explicit coordinates
    (not gan3sh500's random embedding).

    Defaults: k = 7, m = 8, geometry-prior hidden width ``max(1, round(geo_hidden_ratio * G))`` with
    ratio 0.5. The aggregation never materialises the unfolded C x k^2 map (``window_aggregate``
    accumulates shifted slices); only the G-channel keys are unfolded: memory O(N k^2 C / m).

    Cost (MACs, batch 1): ``2 C G N`` (key, query) + ``2 h k^2 + h G k^2`` (geometry MLP) + ``C k^2 N``
    (aggregation, an einsum under ``reference_attention()``) + ``C^2 N`` (output conv); the q k
    product has contraction length 1 and is element-wise, so not counted. Order O(N k^2 C).
    ``return_attention`` adds ``{"weights": (B, G, k^2, H, W), "geometry": (G, k^2)}``.
    """

    @checked(geo_hidden_ratio=POSITIVE)
    def __init__(
        self,
        in_channels: int,
        *,
        kernel_size: int = 7,
        channel_sharing: int = 8,
        geo_hidden_ratio: float = 0.5,
    ) -> None:
        super().__init__(in_channels)
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
        if not isinstance(channel_sharing, int) or channel_sharing < 1 or in_channels % channel_sharing:
            raise ValueError(
                f"channel_sharing must be a positive int dividing in_channels ({in_channels}), got {channel_sharing!r}"
            )
        if geo_hidden_ratio <= 0:
            raise ValueError(f"geo_hidden_ratio must be positive, got {geo_hidden_ratio!r}")
        self.kernel_size, self.channel_sharing = kernel_size, channel_sharing
        self.groups = in_channels // channel_sharing
        self.geo_hidden = max(1, round(geo_hidden_ratio * self.groups))
        self.query = nn.Conv2d(in_channels, self.groups, 1, bias=False)
        self.key = nn.Conv2d(in_channels, self.groups, 1, bias=False)
        self.geometry = nn.Sequential(
            nn.Conv2d(2, self.geo_hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(self.geo_hidden, self.groups, 1),
        )
        self.proj = nn.Conv2d(in_channels, in_channels, 1)
        self.register_buffer("rel_pos", _relative_positions(kernel_size), persistent=False)

    def geometry_prior(self) -> Tensor:
        """Logits ``G_geo`` of the learned geometry prior, (G, k^2)."""
        r = (self.kernel_size - 1) // 2
        # integer offsets divided here, in the weights' dtype (a stored float32 1/3 is inexact in float64)
        rel = self.rel_pos.to(self.geometry[0].weight.dtype) / max(r, 1)
        return self.geometry(rel).reshape(self.groups, self.kernel_size**2)

    def relation_weights(self, x: Tensor) -> Tensor:
        """Softmax-normalised window weights (B, G, k^2, H, W), float32 (float64 for float64 input)."""
        q, k, geo = self.query(x), self.key(x), self.geometry_prior()
        with full_precision(x.device):
            keys = unfold_window(upcast(k), self.kernel_size)
            return torch.softmax(upcast(q).unsqueeze(2) * keys + upcast(geo)[None, :, :, None, None], dim=2)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        weights = self.relation_weights(x)
        with full_precision(x.device):
            y = window_aggregate(x, weights, self.kernel_size).to(x.dtype)
        y = self.proj(y)
        if not return_attention:
            return y
        return y, {"weights": weights, "geometry": upcast(self.geometry_prior()).detach()}

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """The query's k x k softmax window, averaged over the channel groups (convex up to the window's
        taps that fall outside the map)."""
        w = factors["weights"][0, :, :, query[0], query[1]].mean(0)
        k = self.kernel_size
        return {f"{k}x{k} window": window_map(w, query, size, k)}, True

    def flops(self, height: int, width: int) -> int:
        c, g, h, kk = self.in_channels, self.groups, self.geo_hidden, self.kernel_size**2
        n = height * width
        qk = 2 * conv2d_macs(c, g, 1, height, width)
        geo = 2 * h * kk + h * g * kk
        return qk + geo + c * kk * n + conv2d_macs(c, c, 1, height, width)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, kernel_size={self.kernel_size}, channel_sharing={self.channel_sharing}"


def _relative_positions(kernel_size: int) -> Tensor:
    """(1, 2, k, k) integer relative (dy, dx) of the window samples (``geometry_prior`` divides by r)."""
    r = (kernel_size - 1) // 2
    steps = torch.arange(kernel_size, dtype=torch.float32) - r
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack((dy, dx)).unsqueeze(0)
