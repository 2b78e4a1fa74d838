"""LatentGNN (Zhang, Yan, He, ICML 2019), spec section 3.12, built from ``segattn.lowrank`` parts."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import checked
from segattn.layers import BatchNorm2d, ConvNormAct
from segattn.lowrank import (
    IdentityReasoner,
    LowRankBlock,
    NodeAttentionReasoner,
    ProjectionMapper,
    ProjectionReverse,
    TransposeReverse,
)
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import full_precision, upcast
from segattn.ops.weightmaps import operator_row
from segattn.registry import MODULES

MODES = ("asymmetric", "symmetric")


def channel_l2norm(x: Tensor) -> Tensor:
    """``F.normalize(x, dim=1)`` computed in float32 (autocast off), returned in ``x``'s dtype.

    In float16 the norm's eps (1e-12) underflows to 0, so an all-zero column would give 0 / 0 = NaN.
    """
    with full_precision(x.device):
        return F.normalize(upcast(x), p=2.0, dim=1).to(x.dtype)


class ChannelL2Norm(nn.Module):
    """``F.normalize(x, dim=1)``: unit L2 norm over the channel axis of (B, C, ...) (the reference's
    norm_func), in float32 (:func:`channel_l2norm`)."""

    def forward(self, x: Tensor) -> Tensor:
        return channel_l2norm(x)


def _psi(channels: int, latents: int, normalize_latents: bool) -> nn.Module:
    """``ReLU(BN(conv1x1_{C' -> d}))`` (the reference's psi), optionally L2-normalised over the d latents."""
    conv = ConvNormAct(channels, latents)
    return nn.Sequential(conv, ChannelL2Norm()) if normalize_latents else conv


def latent_kernel(channels: int, latents: int, mode: str, reasoning: bool = True) -> LowRankBlock:
    """One LatentGNN kernel as a ``LowRankBlock`` on the visible features F (C', N).

    asymmetric: ``M_map = l2norm_N(Psi_v2l)``, ``f`` = softmax attention among the d latents,
    ``M_rev = l2norm_d(Psi_l2v)^T``; symmetric: one ``Psi`` L2-normalised over the latents used for
    both maps, so the pixel operator without ``f`` is ``Psi^T Psi`` (symmetric PSD, spec 1.2).
    """
    reasoner = NodeAttentionReasoner(scale=1.0, normalize=True) if reasoning else IdentityReasoner()
    if mode == "symmetric":
        mapper = ProjectionMapper(channels, latents, "none", proj=_psi(channels, latents, True))
        return LowRankBlock(mapper, reasoner, TransposeReverse("none"))
    mapper = ProjectionMapper(channels, latents, "l2", proj=_psi(channels, latents, False))
    reverse = ProjectionReverse(channels, latents, "l2", proj=_psi(channels, latents, False))
    return LowRankBlock(mapper, reasoner, reverse)


@MODULES.register("latentgnn", paper="Zhang, Yan, He, ICML 2019", family="lowrank", order="O(N d C' + d^2 C')")
class LatentGNN(ContextModule):
    """LatentGNN: visible -> latent -> latent -> visible message passing through d latent nodes.

    With ``X`` (C, N) and C' = C / ``channel_stride`` (spec 3.12, latentgnn/LatentGNN-V1-PyTorch)::

        F_v2l = l2norm_C'(BN(W_v2l X)),  F_l2v = l2norm_C'(BN(W_l2v X))     (C', N) (one shared map if symmetric)
        Psi_v2l = l2norm_N(ReLU(BN(conv F_v2l))),  Psi_l2v = l2norm_d(ReLU(BN(conv F_l2v)))   (d, N)
        Z = Psi_v2l F_v2l^T                                  (d, C')  visible -> latent
        Z <- softmax_rows(Zhat Zhat^T) Z, Zhat = l2norm rows (d, C')  latent -> latent
        Y = Z^T Psi_l2v                                      (C', N)  latent -> visible
        out = X + gamma * BN(W_up [Y_1; ...; Y_k])           (C, H, W), gamma a scalar, init 0

    Each kernel is ``LowRankBlock(ProjectionMapper(.., "l2"), NodeAttentionReasoner(), ProjectionReverse(.., "l2"))``
    from ``segattn.lowrank`` (``mode="symmetric"``: one psi normalised over the latents and
    ``TransposeReverse``). Defaults: ``channel_stride=4``, ``latent_dims=(100,)`` (one kernel; the
    paper's "about 100 latent nodes" is recalled, not verified), ``mode="asymmetric"``,
    ``graph_conv=False`` (True adds a 1x1 conv + BN + ReLU, N(0, 0.01) init, on each kernel's Y).
    gamma = 0 makes the module the identity at init. Size dependence (official behaviour): the L2
    map over the N pixels makes each latent node ~ sqrt(N) times a pixel average, so the context
    scales with sqrt(N) (x2.0 from 64x128 to 128x256 features); evaluate at the training size (the
    shipped mmseg-protocol configs slide windows of the training crop). ``return_attention`` gives each kernel's
    ``map_i`` (B, d, N), ``reverse_i`` (B, N, d), ``nodes_i`` (B, C', d).

    Cost (MACs, batch 1): ``2 N C C'`` (``N C C'`` symmetric) + per kernel ``2 N C' d`` (psi convs;
    one if symmetric) + ``2 N d C'`` (map and reverse products) + ``2 d^2 C'`` + ``k N C' C`` (up conv);
    order O(N d C' + d^2 C'): linear in N.
    """

    @checked(mode=MODES)
    def __init__(
        self,
        in_channels: int,
        *,
        channel_stride: int = 4,
        latent_dims: Sequence[int] = (100,),
        mode: str = "asymmetric",
        graph_conv: bool = False,
    ) -> None:
        super().__init__(in_channels)
        if mode not in MODES:
            raise ValueError(f"LatentGNN mode must be one of {MODES}, got {mode!r}")
        if not latent_dims or any(int(d) < 1 for d in latent_dims):
            raise ValueError(f"LatentGNN latent_dims must be a non-empty sequence of ints >= 1, got {latent_dims!r}")
        c = max(in_channels // channel_stride, 1)
        self.channels, self.mode, self.latent_dims = c, mode, tuple(int(d) for d in latent_dims)
        self.v2l = ConvNormAct(in_channels, c, act=None)
        self.l2v = ConvNormAct(in_channels, c, act=None) if mode == "asymmetric" else None
        self.kernels = nn.ModuleList(latent_kernel(c, d, mode) for d in self.latent_dims)
        self.graph_convs = nn.ModuleList(ConvNormAct(c, c) for _ in self.latent_dims) if graph_conv else None
        if self.graph_convs is not None:
            for gc in self.graph_convs:
                nn.init.normal_(gc[0].weight, std=0.01)
        k = len(self.latent_dims)
        self.up = nn.Conv2d(k * c, in_channels, 1, bias=False)
        self.norm = BatchNorm2d(in_channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def visible(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``(F_v2l, F_l2v)`` (B, C', H, W), unit L2 norm over channels (the same tensor if symmetric)."""
        f_v2l = channel_l2norm(self.v2l(x))
        f_l2v = f_v2l if self.l2v is None else channel_l2norm(self.l2v(x))
        return f_v2l, f_l2v

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        f_v2l, f_l2v = self.visible(x)
        outs, factors = [], {}
        for i, kernel in enumerate(self.kernels):
            # value in float32: the latent-to-latent normalisation and softmax stay in float32
            y, f = kernel(f_v2l, value=upcast(f_v2l), query=f_l2v, return_factors=True)
            y = y.to(x.dtype)
            if self.graph_convs is not None:
                y = self.graph_convs[i](y)
            outs.append(y)
            factors.update(_rename(f, i))
        out = x + self.gamma * self.norm(self.up(torch.cat(outs, dim=1)))
        return (out, factors) if return_attention else out

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """One operator row ``M_rev M_map`` per latent kernel (l2-normalised maps): not convex."""
        maps = {f"kernel {i} ({d} latents)": operator_row(factors[f"reverse_{i}"], factors[f"map_{i}"], size, query)
                for i, d in enumerate(self.latent_dims)}
        return maps, False

    def flops(self, height: int, width: int) -> int:
        n, c = height * width, self.channels
        visible = n * self.in_channels * c * (2 if self.l2v is not None else 1)
        kernels = sum(kernel.macs(height, width, c) for kernel in self.kernels)
        graph = len(self.latent_dims) * n * c * c if self.graph_convs is not None else 0
        return visible + kernels + graph + n * len(self.latent_dims) * c * self.in_channels


def _rename(factors: Dict[str, Tensor], index: int) -> Dict[str, Tensor]:
    return {f"{key}_{index}": factors[key] for key in ("map", "reverse", "nodes")}
