"""CARAFE: content-aware reassembly of features (an upsampler, registered in ``UPSAMPLERS``)."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import checked
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import full_precision, upcast
from segattn.ops.flops import conv2d_macs
from segattn.ops.sampling import window_aggregate
from segattn.ops.weightmaps import window_map
from segattn.registry import UPSAMPLERS


@UPSAMPLERS.register("carafe", paper="Wang et al., ICCV 2019", family="sparse", order="O(s^2 N k_up^2 C)")
class CARAFE(ContextModule):
    """Content-aware reassembly upsampling (Wang, Chen, Xu, Liu, Loy, Lin — ICCV 2019), pure PyTorch.

    **Contract difference.** Unlike a context module the output size changes: input (B, C, H, W) ->
    output (B, C, sH, sW) with ``s = scale_factor``; ``out_channels == in_channels``; ``flops(H, W)``
    takes the *input* size. Everything else (dtypes, channels_last, ``return_attention``) is as in the
    module contract. Build it with ``segattn.create_upsampler("carafe", C, scale_factor=2)``.

    Forward (as mmcv ``CARAFEPack``), ``k = up_kernel``, ``r = (k-1)/2``, ``G = up_group``::

        Z = conv_{k_enc x k_enc}(conv1x1_{C -> C_m}(X))               (B, s^2 k^2 G, H, W)
        W = softmax_k( view(pixel_shuffle_s(Z), (B, G, k^2, sH, sW)) )    (float32)
        Y[c, p] = sum_{dy,dx in [-r, r]} W[g(c), (dy+r) k + (dx+r), p] X[c, floor(p/s) + (dy, dx)]

    with zero padding (out-of-map sources contribute nothing but keep their softmax weight, as the
    mmcv kernel) and contiguous channel groups ``g(c) = c // (C / G)``. Implementation: the kernels are
    kept at source resolution as (B, G, k^2, s^2, H, W) (channel ``(g k^2 + t) s^2 + phase`` of Z, the
    pixel_shuffle order); ``window_aggregate`` accumulates the k^2 shifted source maps into the s^2
    sub-pixel phases (B, C, s^2, H, W), and ``pixel_shuffle`` interleaves them. No k^2-times copy of the
    upsampled (or source) map is built; memory O(s^2 N k^2 G) for the kernels plus the output.

    Defaults (mmcv): ``scale_factor=2``, ``up_kernel=5``, ``up_group=1``, ``encoder_kernel=3``,
    ``encoder_dilation=1``, compressed channels 64 — here ``C // compression`` with ``compression=4``
    (= 64 for the 256-channel FPN use) unless ``compressed_channels`` is given. Init: Xavier-uniform
    compressor, N(0, 0.001) encoder, zero biases (as mmcv).

    Cost (MACs, batch 1): ``C C_m N + C_m s^2 k^2 G k_enc^2 N + s^2 N k^2 C``; order O(s^2 N k^2 C).
    ``return_attention`` adds ``{"kernels": (B, G, k^2, sH, sW)}`` (float32, sums to 1 over k^2).
    """

    @checked()
    def __init__(
        self,
        in_channels: int,
        *,
        scale_factor: int = 2,
        up_kernel: int = 5,
        up_group: int = 1,
        encoder_kernel: int = 3,
        encoder_dilation: int = 1,
        compression: int = 4,
        compressed_channels: Optional[int] = None,
    ) -> None:
        super().__init__(in_channels)
        _check_args(
            in_channels, scale_factor, up_kernel, up_group, encoder_kernel, encoder_dilation, compression
        )
        mid = compressed_channels if compressed_channels is not None else max(1, in_channels // compression)
        if not isinstance(mid, int) or mid < 1:
            raise ValueError(f"compressed_channels must be a positive int, got {mid!r}")
        self.scale_factor, self.up_kernel, self.up_group = scale_factor, up_kernel, up_group
        self.encoder_kernel, self.encoder_dilation, self.compressed_channels = (
            encoder_kernel,
            encoder_dilation,
            mid,
        )
        self.compressor = nn.Conv2d(in_channels, mid, 1)
        enc_out = scale_factor * scale_factor * up_kernel * up_kernel * up_group
        pad = (encoder_kernel - 1) * encoder_dilation // 2
        self.encoder = nn.Conv2d(mid, enc_out, encoder_kernel, padding=pad, dilation=encoder_dilation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.compressor.weight)
        nn.init.zeros_(self.compressor.bias)
        nn.init.normal_(self.encoder.weight, std=0.001)
        nn.init.zeros_(self.encoder.bias)

    def kernels(self, x: Tensor) -> Tensor:
        """Normalised reassembly kernels at source resolution, (B, G, k^2, s^2, H, W), float32+."""
        b, _, h, w = x.shape
        z = self.encoder(self.compressor(x))
        kk, ss = self.up_kernel * self.up_kernel, self.scale_factor * self.scale_factor
        with full_precision(x.device):
            return torch.softmax(upcast(z).reshape(b, self.up_group, kk, ss, h, w), dim=2)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        b, c, h, w = x.shape
        weights = self.kernels(x)
        with full_precision(x.device):
            phases = window_aggregate(x, weights, self.up_kernel)  # (B, C, s^2, H, W)
        s = self.scale_factor
        y = F.pixel_shuffle(phases.reshape(b, c * s * s, h, w), s).to(x.dtype)
        if not return_attention:
            return y
        shuffled = weights.reshape(b, self.up_group * self.up_kernel**2 * s * s, h, w)
        maps = F.pixel_shuffle(shuffled, s).reshape(b, self.up_group, self.up_kernel**2, s * h, s * w)
        return y, {"kernels": maps}

    def weight_query_size(self, size: Tuple[int, int]) -> Tuple[int, int]:
        """The grid ``weight_maps``' query lives on: the upsampled output."""
        return size[0] * self.scale_factor, size[1] * self.scale_factor

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """The reassembly kernel of output pixel ``query`` (upsampled grid) on the source grid (k x k
        around ``query // s``), averaged over groups; convex."""
        kernels = factors["kernels"][0, :, :, query[0], query[1]].mean(0)
        s = self.scale_factor
        centre = (query[0] // s, query[1] // s)
        return {"reassembly kernel": window_map(kernels, centre, size, self.up_kernel)}, True

    def flops(self, height: int, width: int) -> int:
        n = height * width
        s2, kk = self.scale_factor**2, self.up_kernel**2
        comp = conv2d_macs(self.in_channels, self.compressed_channels, 1, height, width)
        enc = self.compressed_channels * s2 * kk * self.up_group * self.encoder_kernel**2 * n
        return comp + enc + s2 * n * kk * self.in_channels

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, scale_factor={self.scale_factor}, up_kernel={self.up_kernel}, "
            f"up_group={self.up_group}, compressed_channels={self.compressed_channels}"
        )


def _check_args(
    channels: int,
    scale: int,
    up_kernel: int,
    groups: int,
    enc_kernel: int,
    enc_dilation: int,
    compression: int,
) -> None:
    for name, value in (("scale_factor", scale), ("up_group", groups), ("encoder_dilation", enc_dilation)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(compression, int) or compression < 1:
        raise ValueError(f"compression must be a positive int, got {compression!r}")
    for name, value in (("up_kernel", up_kernel), ("encoder_kernel", enc_kernel)):
        if not isinstance(value, int) or value < 1 or value % 2 == 0:
            raise ValueError(f"{name} must be a positive odd int, got {value!r}")
    if channels % groups:
        raise ValueError(f"in_channels ({channels}) must be divisible by up_group ({groups})")
