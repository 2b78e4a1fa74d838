"""DANet position and channel attention (Fu et al., CVPR 2019): ``danet_pam``, ``danet_cam``, ``danet``."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from segattn.checks import checked
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.modules.nonlocal_ import from_tokens, to_tokens
from segattn.ops.attention import attend, full_precision, upcast
from segattn.ops.weightmaps import flat_index
from segattn.registry import MODULES

PAPER = "Fu, Liu, Tian, Li, Bao, Fang, Lu, CVPR 2019"
CAM_MODES = ("reference", "paper")


@MODULES.register("danet_pam", paper=PAPER, family="pairwise", order="O(N^2 C)")
class PositionAttention(ContextModule):
    """DANet position attention module (PAM): ``E = gamma * V softmax_j(Q_i . K_j)^T + X``.

    Shapes: X (B, C, H, W), N = H*W; Q, K = 1x1 conv C -> C/reduction (bias; C/8 = 64 for C = 512),
    V = 1x1 conv C -> C (bias); S = softmax over keys of Q^T K (N x N, **no** 1/sqrt(d) scaling, as the
    official code and mmseg); Y = V S^T (B, C, H, W); out = gamma * Y + X with a learnable scalar gamma
    initialised to 0 (a fresh module is the identity). Softmax attention goes through the shared fused
    kernel (never materialises N x N unless weights are requested). Convs use PyTorch's default init as
    the official code. Paper: Fu et al., CVPR 2019 (junfu1115/DANet ``encoding/nn/da_att.py``).
    Equals the embedded-Gaussian non-local block with C' = C/8, value channels C, no scaling, no
    output conv and residual gamma*Y (spec 1.5.5). Cost (MACs, batch 1): ``N C (2C/8 + C)`` for the
    projections + ``N^2 (C/8 + C)`` for the attention; order O(N^2 C), attention memory O(N^2) only on
    the reference path.
    """

    @checked()
    def __init__(self, in_channels: int, *, reduction: int = 8, gamma_init: float = 0.0) -> None:
        super().__init__(in_channels)
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.key_channels = max(1, in_channels // reduction)
        self.query = nn.Conv2d(in_channels, self.key_channels, 1)
        self.key = nn.Conv2d(in_channels, self.key_channels, 1)
        self.value = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = nn.Parameter(torch.full((1,), float(gamma_init)))

    def context(self, x: Tensor, return_attention: bool = False) -> Tuple[Tensor, Optional[Attention]]:
        """``gamma * Y`` (B, C, H, W) and, on request, the (B, N, N) attention."""
        _, _, h, w = x.shape
        q, k, v = to_tokens(self.query(x)), to_tokens(self.key(x)), to_tokens(self.value(x))
        y, weights = self._aggregate(q, k, v, return_attention)
        factors: Optional[Attention] = None if weights is None else {"attention": weights.squeeze(1)}
        return self.gamma * from_tokens(y, h, w), factors

    def _aggregate(self, q: Tensor, k: Tensor, v: Tensor, return_attention: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """``Y`` as tokens (B, 1, N, C) and, when asked, ``S`` (B, 1, N, N): the aggregation, one method
        so that the analysis' taps (:func:`segattn.analyze.measure.survey.tap_context`) reach it."""
        return attend(q, k, v, 1.0, return_attention)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        ctx, factors = self.context(x, return_attention)
        return (x + ctx, factors) if return_attention else x + ctx

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Row ``query`` of the N x N position attention (softmax, convex)."""
        return {"position attention": factors["attention"][0, flat_index(query, size[1])].reshape(size)}, True

    def flops(self, height: int, width: int) -> int:
        """MACs: three 1x1 projections and the N x N attention (batch 1)."""
        n, c, d = height * width, self.in_channels, self.key_channels
        return n * c * (2 * d + c) + n * n * (d + c)


@MODULES.register("danet_cam", paper=PAPER, family="pairwise", order="O(N C^2)")
class ChannelAttention(ContextModule):
    """DANet channel attention module (CAM): ``out = gamma * softmax(logits(E)) A + A``, E = A A^T.

    Shapes: A = X viewed as (B, C, N); energy E = A A^T (B, C, C), kept in float32 (float64 for float64
    input), also under ``torch.autocast``; attention (B, C, C) softmax over the last index; Y = attention A (B, C, N) -> (B, C, H, W);
    out = gamma * Y + X, learnable scalar gamma initialised to 0. No convolutions.
    ``cam_mode='reference'`` (default, official code and mmseg) uses logits ``rowmax(E) - E``, which
    equals ``softmax(-E)`` (favours the *least* similar channels; the row max is a per-row constant);
    ``cam_mode='paper'`` uses ``softmax(E)`` as the paper's equation (CASIA-IVA-Lab/DANet #9, #106).
    Cost (MACs, batch 1): 2 N C^2, order O(N C^2), attention memory O(C^2).
    """

    no_pixel_weights = "attends over channels, not pixels: use segattn.viz.channel_attention()"

    @checked(cam_mode=CAM_MODES)
    def __init__(self, in_channels: int, *, cam_mode: str = "reference", gamma_init: float = 0.0) -> None:
        super().__init__(in_channels)
        if cam_mode not in CAM_MODES:
            raise ValueError(f"cam_mode must be one of {CAM_MODES}, got {cam_mode!r}")
        self.cam_mode = cam_mode
        self.gamma = nn.Parameter(torch.full((1,), float(gamma_init)))

    def context(self, x: Tensor, return_attention: bool = False) -> Tuple[Tensor, Optional[Attention]]:
        """``gamma * Y`` (B, C, H, W) and, on request, the (B, C, C) attention and energy."""
        with full_precision(x.device):  # autocast would recast the energy to half: inf / NaN in fp16
            a = upcast(x)
            # one view per use: each path's gradient then joins x's as soon as it is computed, instead of
            # three (B, C, N) gradients waiting in one view's buffer (one map less at the training peak)
            energy = torch.matmul(a.flatten(2), a.flatten(2).transpose(1, 2))
            if self.cam_mode == "reference":
                # the row max is a per-row constant: its gradient through the softmax is exactly zero, so
                # it is detached (autograd would otherwise keep the (B, C, C) energy for amax's backward)
                logits = energy.amax(dim=-1, keepdim=True).detach() - energy
            else:
                logits = energy
            attention = torch.softmax(logits, dim=-1)
            y = torch.matmul(attention, a.flatten(2)).reshape(x.shape).to(x.dtype)
        factors = {"attention": attention, "energy": energy} if return_attention else None
        return self.gamma * y, factors

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        ctx, factors = self.context(x, return_attention)
        return (x + ctx, factors) if return_attention else x + ctx

    def flops(self, height: int, width: int) -> int:
        """MACs: the C x C Gram matrix and the channel aggregation (batch 1)."""
        return 2 * height * width * self.in_channels**2

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, cam_mode={self.cam_mode}"


@MODULES.register("danet", paper=PAPER, family="pairwise", order="O(N^2 C + N C^2)")
class DualAttention(ContextModule):
    """DANet dual attention: PAM and CAM in parallel on the same input, context terms summed.

    ``out = X + gamma_p * Y_pam + gamma_c * Y_cam`` (B, C, H, W), i.e. ``PAM(X) + CAM(X) - X``: the two
    branches' residual outputs summed with the shared input counted once, so a fresh module (both
    gammas 0) is the identity. In the paper's head each branch has its own 3x3 conv before and after
    the attention and the branch outputs are summed; a head builds that from ``self.pam`` /
    ``self.cam`` (or ``danet_pam`` / ``danet_cam``), and :meth:`branches` returns the two residual
    outputs ``(PAM(X), CAM(X))`` for the three-loss setup. Defaults: PAM reduction 8, CAM
    ``cam_mode='reference'``. Cost (MACs, batch 1): PAM ``N C (C/4 + C) + N^2 (C/8 + C)`` plus CAM
    ``2 N C^2``; order O(N^2 C + N C^2).
    """

    @checked(cam_mode=CAM_MODES)
    def __init__(self, in_channels: int, *, reduction: int = 8, cam_mode: str = "reference") -> None:
        super().__init__(in_channels)
        self.pam = PositionAttention(in_channels, reduction=reduction)
        self.cam = ChannelAttention(in_channels, cam_mode=cam_mode)

    def branches(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """The two branch outputs ``(PAM(X), CAM(X))``, each (B, C, H, W)."""
        self.check_input(x)
        return self.pam(x), self.cam(x)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        pam_ctx, pam_f = self.pam.context(x, return_attention)
        cam_ctx, cam_f = self.cam.context(x, return_attention)
        out = x + pam_ctx + cam_ctx
        if not return_attention:
            return out
        return out, {"position_attention": pam_f["attention"], "channel_attention": cam_f["attention"]}

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """The PAM branch's row ``query`` (softmax, convex); the CAM branch: ``segattn.viz.channel_attention``."""
        return {"position attention": factors["position_attention"][0, flat_index(query, size[1])].reshape(size)}, True

    def flops(self, height: int, width: int) -> int:
        """MACs of both branches (batch 1)."""
        return self.pam.flops(height, width) + self.cam.flops(height, width)
