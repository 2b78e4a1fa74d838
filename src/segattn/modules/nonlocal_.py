"""Non-local blocks (Wang, Girshick, Gupta, He, CVPR 2018) with the paper's four pairwise functions.

Registered names: ``nonlocal`` (embedded Gaussian), ``nonlocal_gaussian``, ``nonlocal_dot`` and
``nonlocal_concat``. All share :class:`NonLocalBase`; the subclasses only fix the pairwise function
and its defaults. Helpers :func:`to_tokens` / :func:`from_tokens` are reused by the DANet, OCNet and
ANN modules.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import NON_NEGATIVE, checked
from segattn.layers import BatchNorm2d
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import attend, batch_3d, full_precision, linear_attention, scratch_view, upcast
from segattn.ops.flops import conv2d_macs
from segattn.ops.weightmaps import flat_index
from segattn.registry import MODULES

PAPER = "Wang, Girshick, Gupta, He, CVPR 2018"
MODES = ("embedded_gaussian", "gaussian", "dot", "concat")
# Largest number of N x M logits the concatenation form holds at once (chunks over queries).
CONCAT_CHUNK_ELEMENTS = 1 << 22


class ConcatAggregate(torch.autograd.Function):
    """``y = (ReLU(a + b) / M) v`` for a (..., N, 1), b (..., 1, M), v (..., M, C_v), in query chunks.

    Forward and backward hold at most ``CONCAT_CHUNK_ELEMENTS`` of the N x M map at a time: only
    ``a``, ``b`` and ``v`` are saved, and the backward recomputes each chunk's map (element-wise work;
    the matmuls are the two of plain autograd: ``dv += P^T dy``, ``dP = dy v^T``).
    """

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, v: Tensor) -> Tensor:
        ctx.save_for_backward(a, b, v)
        a3, b3, v3 = batch_3d(a), batch_3d(b), batch_3d(v)
        batch, n, m = a3.shape[0], a3.shape[1], b3.shape[-1]
        rows = max(1, CONCAT_CHUNK_ELEMENTS // m)
        scratch = a3.new_empty(batch * min(rows, n) * m)  # one buffer for every chunk (see scratch_view)
        outs = []
        for a_c in a3.split(rows, dim=1):  # split, not range(n): torch.compile keeps n symbolic
            w = torch.add(a_c, b3, out=scratch_view(scratch, batch, a_c.shape[1], m))
            outs.append(torch.bmm(w.relu_().div_(m), v3))
        return torch.cat(outs, dim=1).view(*v.shape[:-2], n, v.shape[-1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        a, b, v = ctx.saved_tensors
        a3, b3, v3, g3 = batch_3d(a), batch_3d(b), batch_3d(v), batch_3d(grad)
        batch, n, m = a3.shape[0], a3.shape[1], b3.shape[-1]
        rows = max(1, CONCAT_CHUNK_ELEMENTS // m)
        grad_a, grad_b, grad_v = [], torch.zeros_like(b3), torch.zeros_like(v3)
        w_scratch = a3.new_empty(batch * min(rows, n) * m)
        g_scratch = torch.empty_like(w_scratch)
        vt = v3.transpose(1, 2)
        for a_c, g_c in zip(a3.split(rows, dim=1), g3.split(rows, dim=1)):
            w = torch.add(a_c, b3, out=scratch_view(w_scratch, batch, a_c.shape[1], m))
            grad_v.baddbmm_(w.relu_().div_(m).transpose(1, 2), g_c)  # P = ReLU(a + b) / M
            g_logits = torch.bmm(g_c, vt, out=scratch_view(g_scratch, batch, a_c.shape[1], m))
            g_logits.mul_(w.sign_()).div_(m)  # sign(P) = [a + b > 0]
            grad_a.append(g_logits.sum(-1, keepdim=True))
            grad_b += g_logits.sum(-2, keepdim=True)
        return torch.cat(grad_a, dim=1).view(a.shape), grad_b.view(b.shape), grad_v.view(v.shape)


def to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 1, H*W, C): one head of position tokens for the attention kernels.

    The result has unit stride along C: the fused CPU kernel (flash attention) requires it and SDPA
    otherwise silently falls back to the math kernel, which materialises the N x M matrix.
    """
    return x.flatten(2).transpose(1, 2).contiguous().unsqueeze(1)


def from_tokens(t: Tensor, height: int, width: int) -> Tensor:
    """(B, 1, H*W, C) -> (B, C, H, W), the inverse of :func:`to_tokens`."""
    return t.squeeze(1).transpose(1, 2).reshape(t.shape[0], t.shape[-1], height, width)


def subsampled_size(height: int, width: int) -> Tuple[int, int]:
    """Spatial size after the paper's 2x2 max-pool sub-sampling (ceil mode, so 1x1 stays 1x1)."""
    return (height + 1) // 2, (width + 1) // 2


def _normal_conv(in_channels: int, out_channels: int, std: float) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.normal_(conv.weight, std=std)
    nn.init.zeros_(conv.bias)
    return conv


class NonLocalBase(ContextModule):
    """Shared machinery of the four non-local variants (see the registered subclasses).

    ``Z = X + BN(W_z Y)``, ``y_i = (1/C(x)) sum_j f(x_i, x_j) g(x_j)`` with ``theta``/``phi``/``g``
    1x1 convolutions to C' = C / reduction channels (value channels ``value_channels``, default C').
    ``flops`` counts multiply-accumulates (MACs) of one forward for batch 1.
    """

    @checked(init_std=NON_NEGATIVE)
    def __init__(
        self,
        in_channels: int,
        mode: str,
        reduction: int,
        value_channels: Optional[int],
        use_scale: bool,
        shared_qk: bool,
        sub_sample: bool,
        norm: bool,
        zero_init: bool,
        init_std: float,
    ) -> None:
        super().__init__(in_channels)
        if mode not in MODES:
            raise ValueError(f"unknown non-local mode {mode!r}; expected one of {MODES}")
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.mode, self.use_scale, self.sub_sample, self.shared_qk = mode, use_scale, sub_sample, shared_qk
        self.inter_channels = max(1, in_channels // reduction)
        self.value_channels = value_channels or self.inter_channels
        self.key_channels = in_channels if mode == "gaussian" else self.inter_channels
        if mode != "gaussian":
            self.theta = _normal_conv(in_channels, self.inter_channels, init_std)
            self.phi = None if shared_qk else _normal_conv(in_channels, self.inter_channels, init_std)
        self.g = _normal_conv(in_channels, self.value_channels, init_std)
        self.conv_out = _normal_conv(self.value_channels, in_channels, init_std)
        self.norm = BatchNorm2d(in_channels) if norm else None
        if self.norm is not None and zero_init:
            nn.init.zeros_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)
        elif self.norm is None and zero_init:
            nn.init.zeros_(self.conv_out.weight)
        if mode == "concat":
            self.concat_weight = nn.Parameter(torch.randn(2 * self.inter_channels, 1) / math.sqrt(2 * self.inter_channels))

    @property
    def scale(self) -> float:
        return self.key_channels**-0.5 if self.use_scale else 1.0

    def _embed(self, x: Tensor, source: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Query (B,1,N,d), key (B,1,M,d), value (B,1,M,dv) tokens."""
        value = to_tokens(self.g(source))
        if self.mode == "gaussian":
            return to_tokens(x), to_tokens(source), value
        query = self.theta(x)
        if self.shared_qk and source is x:
            key = query
        else:
            key = (self.theta if self.shared_qk else self.phi)(source)
        return to_tokens(query), to_tokens(key), value

    def _concat(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """``y_i = (1/M) sum_j ReLU(w_q.q_i + w_k.k_j) v_j`` without an N x M x 2C' tensor (chunked)."""
        d = self.inter_channels
        weight = upcast(self.concat_weight)
        a = torch.matmul(upcast(q), weight[:d])  # (B, 1, N, 1)
        b = torch.matmul(upcast(k), weight[d:]).transpose(-1, -2)  # (B, 1, 1, M)
        return ConcatAggregate.apply(a, b, upcast(v)).to(v.dtype)

    def _weights(self, q: Tensor, k: Tensor) -> Tensor:
        """The (B, N, M) pairwise weights, materialised (only when requested)."""
        q32, k32 = upcast(q), upcast(k)
        m = k.shape[-2]
        if self.mode == "dot":
            return (torch.matmul(q32, k32.transpose(-1, -2)) / m).squeeze(1)
        d = self.inter_channels
        weight = upcast(self.concat_weight)
        logits = torch.matmul(q32, weight[:d]) + torch.matmul(k32, weight[d:]).transpose(-1, -2)
        return (F.relu(logits) / m).squeeze(1)

    def _aggregate(self, q: Tensor, k: Tensor, v: Tensor, return_attention: bool) -> Tuple[Tensor, Optional[Tensor]]:
        if self.mode in ("embedded_gaussian", "gaussian"):
            y, w = attend(q, k, v, self.scale, return_attention)
            return y, None if w is None else w.squeeze(1)
        if self.mode == "dot":
            y = linear_attention(q, k, v).to(v.dtype)
        else:
            with full_precision(q.device):
                y = self._concat(q, k, v)
        if not return_attention:
            return y, None
        with full_precision(q.device):
            return y, self._weights(q, k)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        _, _, h, w = x.shape
        source = F.max_pool2d(x, 2, 2, ceil_mode=True) if self.sub_sample else x
        q, k, v = self._embed(x, source)
        y, weights = self._aggregate(q, k, v, return_attention)
        context = self.conv_out(from_tokens(y, h, w))
        if self.norm is not None:
            context = self.norm(context)
        z = x + context
        if not return_attention:
            return z
        factors: Attention = {"attention": weights, "query": upcast(q.squeeze(1)), "key": upcast(k.squeeze(1))}
        factors["value"] = upcast(v.squeeze(1))
        return z, factors

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Row ``query`` of the (N, M) weights (keys on the pooled grid with ``sub_sample``): softmax rows
        for embedded Gaussian / Gaussian (convex), ``f / M`` for dot / concat."""
        grid = subsampled_size(*size) if self.sub_sample else size
        row = factors["attention"][0, flat_index(query, size[1])]
        return {self.mode.replace("_", " "): row.reshape(grid)}, self.mode in ("embedded_gaussian", "gaussian")

    def flops(self, height: int, width: int) -> int:
        """MACs of one forward at (1, C, height, width); ``nonlocal_dot`` costs ``(M + N) C' C_v``
        for its attention (linear form), the others ``N M (C' + C_v)``."""
        n = height * width
        m = n if not self.sub_sample else math.prod(subsampled_size(height, width))
        c, d, dv = self.in_channels, self.key_channels, self.value_channels
        macs = c * dv * m + dv * c * n  # g on the sources, W_z on the queries
        if self.mode != "gaussian":
            shares_tensor = self.shared_qk and not self.sub_sample
            macs += conv2d_macs(c, d, 1, height, width) + (0 if shares_tensor else c * d * m)
        if self.mode in ("embedded_gaussian", "gaussian"):
            macs += n * m * (d + dv)
        elif self.mode == "dot":
            macs += m * d * dv + n * d * dv
        else:
            macs += n * d + m * d + n * m * dv
        return macs

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, mode={self.mode}, inter_channels={self.inter_channels}, "
            f"value_channels={self.value_channels}, use_scale={self.use_scale}, shared_qk={self.shared_qk}, "
            f"sub_sample={self.sub_sample}"
        )


_COMMON_DOC = """
    Shapes: X (B, C, H, W), N = H*W; theta, phi: 1x1 conv C -> C' = C/reduction (bias), g: 1x1 conv
    C -> C_v (default C'), M = N keys (M = ceil(H/2)*ceil(W/2) with ``sub_sample``: 2x2 max-pool,
    ceil mode, on the *inputs* of phi and g as in the paper's code; works at 1x1 and odd sizes).
    Y (B, C_v, H, W) -> W_z 1x1 conv C_v -> C -> BatchNorm2d -> Z = X + BN(W_z Y) (B, C, H, W).
    Init as the official code: theta/phi/g/W_z normal(std 0.01), biases 0, BN gamma = beta = 0
    (``zero_init``) so a fresh block is the identity. ``shared_qk`` uses theta for phi (symmetric
    logits). ``norm=False`` drops the BN (then ``zero_init`` zeroes W_z's weight). ``flops(H, W)``
    counts multiply-accumulates (MACs) of one forward for batch 1.
"""


@MODULES.register("nonlocal", paper=PAPER, family="pairwise", order="O(N^2 C')")
class NonLocal2d(NonLocalBase):
    __doc__ = (
        """Non-local block, embedded Gaussian: ``y_i = sum_j softmax_j(s theta_i . phi_j) g_j``.

    s = C'^{-1/2} with ``use_scale=True`` (official-code and mmcv default; the paper's equation has
    no scale). Softmax attention through the shared fused kernel (never materialises N x M).
    Defaults: reduction 2, use_scale True, sub_sample False (mmcv/mmseg; the video code uses True).
    Cost: 2 C C' N + C C_v N + N M (C' + C_v) MACs, order O(N^2 C').
"""
        + _COMMON_DOC
    )

    @checked(init_std=NON_NEGATIVE)
    def __init__(
        self,
        in_channels: int,
        *,
        reduction: int = 2,
        value_channels: Optional[int] = None,
        use_scale: bool = True,
        shared_qk: bool = False,
        sub_sample: bool = False,
        norm: bool = True,
        zero_init: bool = True,
        init_std: float = 0.01,
    ) -> None:
        super().__init__(
            in_channels, "embedded_gaussian", reduction, value_channels, use_scale, shared_qk, sub_sample, norm,
            zero_init, init_std,
        )


@MODULES.register("nonlocal_gaussian", paper=PAPER, family="pairwise", order="O(N^2 C)")
class NonLocalGaussian2d(NonLocalBase):
    __doc__ = (
        """Non-local block, Gaussian: ``y_i = sum_j softmax_j(x_i . x_j) g_j`` (no theta/phi embedding).

    The logits use the raw C-channel input (with ``sub_sample`` the keys are the max-pooled input),
    unscaled by default (``use_scale=True`` multiplies them by C^{-1/2}). Fused softmax kernel.
    Cost: C C_v M + C_v C N + N M (C + C_v) MACs, order O(N^2 C).
"""
        + _COMMON_DOC
    )

    @checked(init_std=NON_NEGATIVE)
    def __init__(
        self,
        in_channels: int,
        *,
        reduction: int = 2,
        value_channels: Optional[int] = None,
        use_scale: bool = False,
        sub_sample: bool = False,
        norm: bool = True,
        zero_init: bool = True,
        init_std: float = 0.01,
    ) -> None:
        super().__init__(
            in_channels, "gaussian", reduction, value_channels, use_scale, False, sub_sample, norm, zero_init, init_std
        )


@MODULES.register("nonlocal_dot", paper=PAPER, family="pairwise", order="O(N C'^2)")
class NonLocalDot2d(NonLocalBase):
    __doc__ = (
        """Non-local block, dot product: ``y_i = (1/M) sum_j (theta_i . phi_j) g_j``.

    Computed as linear attention ``theta (phi^T g) / M`` (segattn.ops.attention.linear_attention):
    O(N C' C_v) time and O(C' C_v) extra memory, never an N x M matrix. The normaliser M is the number
    of key positions, a shape constant (the official code's stop-gradient on it is therefore implicit).
    Cost 2 C C' N + C C_v N + (N + M) C' C_v MACs (``flops(H, W)``), on every path.
"""
        + _COMMON_DOC
    )

    @checked(init_std=NON_NEGATIVE)
    def __init__(
        self,
        in_channels: int,
        *,
        reduction: int = 2,
        value_channels: Optional[int] = None,
        shared_qk: bool = False,
        sub_sample: bool = False,
        norm: bool = True,
        zero_init: bool = True,
        init_std: float = 0.01,
    ) -> None:
        super().__init__(
            in_channels, "dot", reduction, value_channels, False, shared_qk, sub_sample, norm, zero_init, init_std
        )


@MODULES.register("nonlocal_concat", paper=PAPER, family="pairwise", order="O(N^2 C')")
class NonLocalConcat2d(NonLocalBase):
    __doc__ = (
        """Non-local block, concatenation: ``y_i = (1/M) sum_j ReLU(w_f . [theta_i ; phi_j]) g_j``.

    ``w_f`` (2C') is split as ``w_f . [theta_i ; phi_j] = w_q . theta_i + w_k . phi_j``, so no
    N x M x 2C' tensor is built; the N x M ReLU map is computed in query chunks of at most 2^22
    entries, in the forward and (recomputed) in the backward, which saves no part of it. w_f has no bias (as mmcv) and is initialised normal(std (2C')^{-1/2}).
    Cost: 2 C C' N + C C_v N + (N + M) C' + N M C_v MACs, order O(N^2 C').
"""
        + _COMMON_DOC
    )

    @checked(init_std=NON_NEGATIVE)
    def __init__(
        self,
        in_channels: int,
        *,
        reduction: int = 2,
        value_channels: Optional[int] = None,
        shared_qk: bool = False,
        sub_sample: bool = False,
        norm: bool = True,
        zero_init: bool = True,
        init_std: float = 0.01,
    ) -> None:
        super().__init__(
            in_channels, "concat", reduction, value_channels, False, shared_qk, sub_sample, norm, zero_init, init_std
        )

