"""Mappers: pixels -> K nodes (the ``M_map`` of spec section 1.2).

Every mapper is called as ``mapper(x, value=None) -> MapResult`` with ``x`` (B, C, H, W) the map's
input (keys) and ``value`` (B, C_v, H, W) the features to aggregate (default ``x``). It returns

* ``map`` (B, K, N): ``M_map``; node k is ``nodes[:, :, k] = value_flat @ map[:, k, :]``;
* ``nodes`` (B, C_v, K): the aggregated node features;
* ``assignment`` (B, K, N): the pixel-to-node scores *before* the normalisation over pixels
  (logits of a projection, EM responsibilities ``Z^T`` normalised over K, pooling weights); the
  ``TransposeReverse`` reverse mapper re-uses it (tied map / reverse map);
* ``grid``: the (bh, bw) pooling grid when the nodes are the cells of one grid, else ``None``;
* ``anchors``: (B, C, K) anchors the pixels were compared with, when the mapper has them.

Maps and nodes are float32 for float16/bfloat16 inputs (``segattn.ops.attention.upcast``), also under
``torch.autocast`` (the map and node math runs in ``full_precision``; only convolutions are autocast).
Every mapper has ``macs(height, width, value_channels)`` (batch 1, spec convention).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import NON_NEGATIVE, POSITIVE, UNIT, checked
from segattn.lowrank.functional import (
    Grid,
    as_grid,
    check_normalization,
    flatten,
    normalize,
    pooling_matrix,
)
from segattn.ops.attention import full_precision, upcast


class MapResult(NamedTuple):
    """Output of a mapper; shapes in the module docstring."""

    map: Tensor
    nodes: Tensor
    assignment: Tensor
    grid: Optional[Grid] = None
    anchors: Optional[Tensor] = None


def aggregate(value: Tensor, map_: Tensor) -> Tensor:
    """``value`` (B, C_v, H, W) or (B, C_v, N), ``map_`` (B, K, N) -> nodes (B, C_v, K)."""
    v = flatten(value) if value.dim() == 4 else value
    with full_precision(v.device):
        return torch.matmul(upcast(v), upcast(map_).transpose(1, 2))


def _proj_macs(proj: nn.Module, in_channels: int, out_channels: int, height: int, width: int) -> int:
    if hasattr(proj, "macs"):
        return int(proj.macs(height, width))
    return in_channels * out_channels * height * width


class ProjectionMapper(nn.Module):
    """Learned 1x1-conv projection ``B = proj(x)`` (B, K, N) as the map (A2 gather, GloRe, SGR, LatentGNN).

    ``map = normalize_N(B)`` with ``normalize`` = ``"softmax"`` (A2: each node a softmax over the N
    pixels), ``"none"`` (GloRe: raw projection), ``"mean"`` (GloRe ``normalize=True``: B / N),
    ``"l2"`` (LatentGNN), ``"sum"`` (non-negative B). ``log_softmax_nodes`` first replaces B by
    ``log_softmax_K(B)``: with it, an A2 gather equals an EM M-step exactly (spec 1.3).
    ``proj`` replaces the default ``Conv2d(in_channels, num_nodes, 1, bias=bias)`` (e.g. a
    ``ConvNormAct``). ``assignment`` is B (after the optional log-softmax). MACs:
    ``C K N`` (projection) + ``C_v K N`` (aggregation).
    """

    @checked(eps=NON_NEGATIVE)
    def __init__(
        self,
        in_channels: int,
        num_nodes: int,
        normalize: str = "softmax",
        *,
        log_softmax_nodes: bool = False,
        bias: bool = True,
        proj: Optional[nn.Module] = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        check_normalization(normalize, ("none", "softmax", "sum", "l2", "mean"))
        self.in_channels, self.num_nodes = in_channels, num_nodes
        self.normalize, self.log_softmax_nodes, self.eps = normalize, log_softmax_nodes, eps
        self.proj = proj if proj is not None else nn.Conv2d(in_channels, num_nodes, 1, bias=bias)

    def forward(self, x: Tensor, value: Optional[Tensor] = None) -> MapResult:
        projected = flatten(self.proj(x))
        with full_precision(x.device):
            logits = upcast(projected)
            if self.log_softmax_nodes:
                logits = torch.log_softmax(logits, dim=1)
            map_ = normalize(logits, 2, self.normalize, self.eps)
        nodes = aggregate(x if value is None else value, map_)
        return MapResult(map_, nodes, logits)

    def macs(self, height: int, width: int, value_channels: int) -> int:
        n = height * width
        return _proj_macs(self.proj, self.in_channels, self.num_nodes, height, width) + value_channels * self.num_nodes * n

    def extra_repr(self) -> str:
        return f"normalize={self.normalize!r}, log_softmax_nodes={self.log_softmax_nodes}"


class GridPoolingMapper(nn.Module):
    """Fixed adaptive-average-pooling grid(s) (PPM bins): ``map = P`` stacked over ``bins``.

    ``bins`` is one square bin ``b`` or a sequence of square bins (a pyramid, K = sum of b^2);
    ``grid=(bh, bw)`` instead gives one rectangular grid. ``P_b`` (b^2, N) is the exact
    ``adaptive_avg_pool2d`` matrix (rows sum to 1; bins overlap when the size is not divisible).
    Nodes are computed by pooling (no MACs); the explicit map is built from shapes only
    (input-independent, ``assignment == map``). ``result.grid`` is set when there is one grid.
    """

    @checked()
    def __init__(self, bins: Union[int, Sequence[int]] = 1, *, grid: Optional[Tuple[int, int]] = None) -> None:
        super().__init__()
        if grid is not None:
            self.grids = [as_grid(grid)]
        elif isinstance(bins, int):
            self.grids = [as_grid(bins)]
        else:
            self.grids = [as_grid(b) for b in bins]
        if not self.grids:
            raise ValueError("GridPoolingMapper needs at least one bin")
        self.single = len(self.grids) == 1
        self.num_nodes = sum(bh * bw for bh, bw in self.grids)

    def forward(self, x: Tensor, value: Optional[Tensor] = None) -> MapResult:
        v = x if value is None else value
        size = (x.shape[2], x.shape[3])
        pooled = [flatten(F.adaptive_avg_pool2d(v, g)) for g in self.grids]
        nodes = upcast(torch.cat(pooled, dim=2))
        dtype = nodes.dtype
        mats = [pooling_matrix(size, g, x.device, dtype) for g in self.grids]
        map_ = torch.cat(mats, dim=0).unsqueeze(0).expand(x.shape[0], -1, -1)
        return MapResult(map_, nodes, map_, self.grids[0] if self.single else None)

    def macs(self, height: int, width: int, value_channels: int) -> int:
        return 0

    def extra_repr(self) -> str:
        return f"grids={self.grids}"


def em_step(x: Tensor, bases: Tensor, scale: float, l2norm: bool, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """One EM iteration on ``x`` (B, C, N) from ``bases`` (B, C, K).

    E-step ``Z = softmax_K(scale * x^T mu)`` (B, N, K); M-step ``Zbar = Z / (eps + sum_N Z)`` and
    ``mu = x Zbar`` (B, C, K), l2-normalised over C when ``l2norm`` (``mu / (eps + ||mu||)``, as the
    official code). Returns ``(Z, Zbar, mu)``.
    """
    z = torch.softmax(torch.matmul(x.transpose(1, 2), bases) * scale, dim=2)
    zbar = z / (eps + z.sum(dim=1, keepdim=True))
    mu = torch.matmul(x, zbar)
    if l2norm:
        mu = mu / (eps + torch.linalg.vector_norm(mu, dim=1, keepdim=True))
    return z, zbar, mu


class EMMapper(nn.Module):
    """Expectation-maximisation iterations (EMANet, spec 3.14) from a bases buffer ``mu`` (C, K).

    For t = 1..T: E-step ``Z = softmax_K(kernel_scale * X^T mu)`` (N, K), M-step
    ``mu = X Z / (eps + sum_N Z)`` (C, K), l2-normalised over C when ``l2norm``. Result: ``map =
    (Z D^-1)^T`` (K, N) of the last iteration, ``assignment = Z^T`` (so ``TransposeReverse()`` gives
    EMANet's reconstruction ``mu Z^T``), ``nodes = mu_T`` (or ``value @ map^T`` if a separate
    ``value`` is given). ``kernel_scale`` is the inverse temperature lambda (official 1; lambda ->
    infinity gives spherical k-means, spec 1.4).

    Gradients: with ``backprop=False`` (official) the iterations run without autograd in training
    mode, so nothing flows through ``Z`` and ``mu`` (XiaLiPKU/EMANet issues #5, #14). In eval mode
    (and with ``backprop=True``) the forward is differentiated exactly.

    Bases maintenance (only when ``momentum`` is not None and the bases buffer was used): every
    training forward adds the batch's final ``mu`` to a running sum; ``after_optimizer_step()``
    (called once per optimiser step, ``segattn.lowrank.call_step_hooks``) averages the sum over the
    samples of all forwards since the last step and over all processes (``all_reduce`` under
    ``torch.distributed``) and sets ``mu <- momentum * mu + (1 - momentum) * mean``, then
    l2-normalises when ``renormalize`` (mmseg; official: off). Eval forwards never touch the bases.

    Training loops without the hook: until ``after_optimizer_step()`` has been called once, a
    training forward first applies the average of the forwards before it (one update per forward,
    after the optimiser step that followed it, as the official ``train.py``) and warns once, so the
    bases never silently stay at their initialisation. After the first hook call, updates are left
    to the hooks (several forwards per step then accumulate into one update). Samples whose ``mu``
    is not finite (a NaN / inf batch) are left out of the average, and a step whose average is not
    finite is skipped, with a warning: one bad batch cannot turn the bases into NaN for good. Only
    the bases: the batch's output, loss, gradients and the BatchNorm running statistics of the model
    still see the NaN, so a training loop outside segattn's engine must check its input or loss (and
    skip the optimiser step) itself; the engine stops on a non-finite loss.
    Init: ``mu ~ N(0, sqrt(2 / K))``, l2-normalised over C. MACs: ``T * 2 N K C``.
    """

    @checked(kernel_scale=POSITIVE, eps=NON_NEGATIVE, momentum=UNIT)
    def __init__(
        self,
        channels: int,
        num_bases: int = 64,
        num_stages: int = 3,
        *,
        kernel_scale: float = 1.0,
        l2norm: bool = True,
        backprop: bool = False,
        eps: float = 1e-6,
        momentum: Optional[float] = None,
        renormalize: bool = False,
    ) -> None:
        super().__init__()
        if num_bases < 1 or num_stages < 1 or channels < 1:
            raise ValueError(f"channels, num_bases and num_stages must be >= 1, got {channels}, {num_bases}, {num_stages}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
        self.channels, self.num_nodes, self.num_stages = channels, num_bases, num_stages
        self.kernel_scale, self.l2norm, self.backprop, self.eps = kernel_scale, l2norm, backprop, eps
        self.momentum, self.renormalize = momentum, renormalize
        bases = torch.randn(channels, num_bases) * math.sqrt(2.0 / num_bases)
        self.register_buffer("bases", bases / (eps + torch.linalg.vector_norm(bases, dim=0, keepdim=True)))
        self.register_buffer("stat_sum", torch.zeros(channels, num_bases), persistent=False)
        self.register_buffer("stat_count", torch.zeros(()), persistent=False)
        self.register_buffer("stat_skipped", torch.zeros(()), persistent=False)
        self._hooked = False  # after_optimizer_step() has been called: it owns the updates
        self._pending = False  # a training forward accumulated since the last update
        self._warned = False

    def _initial_bases(self, x: Tensor, bases: Optional[Tensor]) -> Tensor:
        mu = self.bases if bases is None else bases
        if mu.dim() == 2:
            mu = mu.unsqueeze(0)
        if mu.dim() != 3 or mu.shape[1] != x.shape[1]:
            raise ValueError(f"bases must be (C, K) or (B, C, K) with C = {x.shape[1]}, got {tuple(mu.shape)}")
        # a copy: a later moving-average update must not modify a tensor saved for backward
        return upcast(mu).to(x.dtype).clone().expand(x.shape[0], -1, -1)

    def iterate(self, x: Tensor, bases: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Run the T iterations on ``x`` (B, C, N); returns the last ``(Z, Zbar, mu)``."""
        mu = self._initial_bases(x, bases)
        cut = self.training and not self.backprop
        with torch.set_grad_enabled(torch.is_grad_enabled() and not cut):
            z, zbar = mu, mu  # replaced in the first stage (num_stages >= 1)
            for _ in range(self.num_stages):
                z, zbar, mu = em_step(x, mu, self.kernel_scale, self.l2norm, self.eps)
        return z, zbar, mu

    def forward(self, x: Tensor, value: Optional[Tensor] = None, bases: Optional[Tensor] = None) -> MapResult:
        maintain = self.training and self.momentum is not None and bases is None
        if maintain and self._pending and not self._hooked:
            self._update_without_hook()
        with full_precision(x.device):
            z, zbar, mu = self.iterate(upcast(flatten(x)), bases)
        if maintain:
            self._accumulate(mu)
        nodes = mu if value is None else aggregate(value, zbar.transpose(1, 2))
        return MapResult(zbar.transpose(1, 2), nodes, z.transpose(1, 2))

    @torch.no_grad()
    def _accumulate(self, mu: Tensor) -> None:
        """Add the finite samples' ``mu`` (B, C, K) to the running sum (no host sync)."""
        mu = mu.detach()
        finite = torch.isfinite(mu).flatten(1).all(dim=1)
        kept = torch.where(finite[:, None, None], mu, torch.zeros_like(mu))
        self.stat_sum.add_(kept.sum(dim=0).to(self.stat_sum.dtype))
        self.stat_count.add_(finite.sum())
        self.stat_skipped.add_((~finite).sum())
        self._pending = True

    def _update_without_hook(self) -> None:
        if not self._warned:
            warnings.warn(
                "EMMapper: no after_optimizer_step() since the last training forward; the bases' moving "
                "average is applied at this forward. Call segattn.lowrank.call_step_hooks(model) after "
                "optimizer.step() to apply it once per step.",
                stacklevel=3,
            )
            self._warned = True
        self._apply_average()

    def after_optimizer_step(self) -> None:
        """Apply the moving average of the bases once (see the class docstring); no-op if nothing accumulated."""
        self._hooked = True
        self._apply_average()

    @torch.no_grad()
    def _apply_average(self) -> None:
        self._pending = False
        if self.momentum is None:
            return
        stats = torch.cat([self.stat_sum.flatten(), self.stat_count.reshape(1), self.stat_skipped.reshape(1)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        self.stat_sum.zero_()
        self.stat_count.zero_()
        self.stat_skipped.zero_()
        count, skipped = float(stats[-2].item()), float(stats[-1].item())
        mean = stats[:-2].reshape(self.bases.shape) / max(count, 1.0)
        if skipped or (count and not bool(torch.isfinite(mean).all())):
            warnings.warn(
                f"EMMapper: {int(skipped)} sample(s) with non-finite bases left out of the moving average"
                + ("" if count and torch.isfinite(mean).all() else "; update skipped")
                + ". Only the EM bases are protected: that forward's output, loss and gradients, and the "
                "BatchNorm running statistics, still saw the NaN/inf input; a training loop of your own "
                "must check the input or the loss (segattn's engine stops on a non-finite loss)",
                stacklevel=3,
            )
        if count == 0.0 or not bool(torch.isfinite(mean).all()):
            return
        new = self.momentum * self.bases + (1.0 - self.momentum) * mean
        if self.renormalize:
            new = new / (self.eps + torch.linalg.vector_norm(new, dim=0, keepdim=True))
        self.bases.copy_(new)

    def macs(self, height: int, width: int, value_channels: int) -> int:
        n = height * width
        extra = 0 if value_channels == self.channels else value_channels * self.num_nodes * n
        return self.num_stages * 2 * n * self.num_nodes * self.channels + extra

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, num_bases={self.num_nodes}, num_stages={self.num_stages}, "
            f"kernel_scale={self.kernel_scale}, l2norm={self.l2norm}, backprop={self.backprop}, "
            f"momentum={self.momentum}, renormalize={self.renormalize}"
        )


class PyramidAnchorMapper(nn.Module):
    """Soft assignment of pixels to anchors pooled on a pyramid of grids (ANN-style anchors).

    Anchors ``a`` (B, C, S) = adaptive-average-pooled ``x`` on each of ``bins`` (S = sum b^2; default
    (1, 3, 6, 8) -> 110). ``assignment = softmax_S(scale * a^T x)`` (S, N) (each pixel's weights over
    the anchors), ``map = assignment / (eps + sum_N assignment)`` (normalised over pixels),
    ``nodes = value @ map^T``. ``scale`` defaults to ``1 / sqrt(C)``. MACs: ``S C N + S C_v N``.
    """

    @checked(scale=POSITIVE, eps=NON_NEGATIVE)
    def __init__(self, bins: Sequence[int] = (1, 3, 6, 8), scale: Optional[float] = None, eps: float = 1e-6) -> None:
        super().__init__()
        self.grids = [as_grid(b) for b in bins]
        if not self.grids:
            raise ValueError("PyramidAnchorMapper needs at least one bin")
        self.num_nodes = sum(bh * bw for bh, bw in self.grids)
        self.scale, self.eps = scale, eps

    def forward(self, x: Tensor, value: Optional[Tensor] = None) -> MapResult:
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(x.shape[1])
        with full_precision(x.device):
            xf = upcast(flatten(x))
            anchors = torch.cat([flatten(F.adaptive_avg_pool2d(xf.view_as(x), g)) for g in self.grids], dim=2)
            logits = torch.matmul(anchors.transpose(1, 2), xf) * scale
            assignment = torch.softmax(logits, dim=1)
            map_ = normalize(assignment, 2, "sum", self.eps)
        nodes = aggregate(x if value is None else value, map_)
        return MapResult(map_, nodes, assignment, None, anchors)

    def macs(self, height: int, width: int, value_channels: int, in_channels: Optional[int] = None) -> int:
        n = height * width
        c = value_channels if in_channels is None else in_channels
        return self.num_nodes * c * n + self.num_nodes * value_channels * n

    def extra_repr(self) -> str:
        return f"grids={self.grids}, scale={self.scale}"


class GaussianAnchorMapper(nn.Module):
    """Soft assignment to K learned anchors with per-anchor, per-channel scales (Beyond Grids, spec 3.10).

    ``assignment_ik = softmax_K(-1/2 ||(x_i - w_k) / sigma_k||^2)`` (K, N), computed with two
    products (``-1/2 [(x^2)^T s - 2 x^T (w s) + sum_c w^2 s]`` with ``s = 1 / sigma^2``);
    ``map = assignment / (eps + sum_N assignment)``; nodes ``z_k = sum_i map_ki (x_i - w_k) / sigma_k``
    computed exactly as ``(x map^T - w sum_i map_ki) / sigma_k`` (also for anchors whose total weight
    is below ``eps``, where ``sum_i map_ki < 1``), or
    ``value @ map^T`` when a separate ``value`` is given. Anchors ``w`` (C, K) ~ N(0, 1),
    ``log_sigma`` (C, K) = 0. ``anchors`` in the result is ``w``. MACs: ``3 C K N`` (``2 C K N`` +
    ``C_v K N`` with a separate value).
    """

    @checked(eps=NON_NEGATIVE)
    def __init__(self, channels: int, num_anchors: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.channels, self.num_nodes, self.eps = channels, num_anchors, eps
        self.anchors = nn.Parameter(torch.randn(channels, num_anchors))
        self.log_sigma = nn.Parameter(torch.zeros(channels, num_anchors))

    def forward(self, x: Tensor, value: Optional[Tensor] = None) -> MapResult:
        with full_precision(x.device):  # no convolution here: the whole assignment is float32 math
            return self._assign(x, value)

    def _assign(self, x: Tensor, value: Optional[Tensor]) -> MapResult:
        xf = upcast(flatten(x))
        w, log_sigma = upcast(self.anchors).to(xf.dtype), upcast(self.log_sigma).to(xf.dtype)
        s = torch.exp(-2.0 * log_sigma)
        xt = xf.transpose(1, 2)
        dist2 = torch.matmul(xt * xt, s) - 2.0 * torch.matmul(xt, w * s) + (w * w * s).sum(0)
        assignment = torch.softmax(-0.5 * dist2, dim=2).transpose(1, 2)
        map_ = normalize(assignment, 2, "sum", self.eps)
        if value is None:
            mass = map_.sum(dim=2).unsqueeze(1)  # (B, 1, K): 1 up to eps
            nodes = (torch.matmul(xf, map_.transpose(1, 2)) - w * mass) * torch.exp(-log_sigma)
        else:
            nodes = aggregate(value, map_)
        anchors = w.unsqueeze(0).expand(x.shape[0], -1, -1).clone()
        return MapResult(map_, nodes, assignment, None, anchors)

    def macs(self, height: int, width: int, value_channels: int) -> int:
        return 2 * self.channels * self.num_nodes * height * width + value_channels * self.num_nodes * height * width

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_anchors={self.num_nodes}"
