"""CGNL: compact generalised non-local block (Yue et al., NeurIPS 2018), spec section 3.8 and 1.9."""

from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from segattn.checks import NON_NEGATIVE, checked
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import full_precision, upcast
from segattn.ops.weightmaps import flat_index
from segattn.registry import MODULES

KERNELS = ("dot", "gaussian")


def taylor_coefficients(order: int, gamma: float) -> Tuple[float, ...]:
    """``(2 gamma)^p / p!`` for ``p = 0..order`` (the squared alpha_p of spec 1.9 without beta)."""
    return tuple((2.0 * gamma) ** p / math.factorial(p) for p in range(order + 1))


def powers(t: Tensor, order: int) -> Tensor:
    """Stack ``[t^0, t^1, ..., t^order]`` on a new last axis: (..., L) -> (..., L, order + 1)."""
    terms = [torch.ones_like(t)]
    for _ in range(order):
        terms.append(terms[-1] * t)
    return torch.stack(terms, dim=-1)


def compact_kernel(
    theta: Tensor,
    phi: Tensor,
    g: Tensor,
    kernel: str = "dot",
    order: int = 3,
    gamma: float = 1e-4,
    exact_beta: bool = False,
    use_scale: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Linear-time CGNL aggregation ``y_i = sum_j f(theta_i, phi_j) g_j`` over the last axis L.

    ``theta``, ``phi``, ``g``: (..., L) with every (channel, pixel) element of a group a position.
    ``dot``: ``f = theta_i phi_j``, computed as ``theta (phi^T g)``. ``use_scale`` divides ``f`` by
    ``sqrt(L)`` for both kernels (official ``SpatialCGNLx.kernel``: ``att.div((c*h*w)**0.5)``).
    ``gaussian``: ``f = exp(-gamma (theta_i - phi_j)^2)`` truncated at Taylor order ``order``:
    ``y_i = sum_p c_p b_i theta_i^p (sum_j b_j phi_j^p g_j)``, ``c_p = (2 gamma)^p / p!``, where
    ``b_i b_j = exp(-gamma (theta_i^2 + phi_j^2))`` (``exact_beta``) or the reference's constant
    ``exp(-2 gamma)`` (default). Returns ``y`` (..., L) and the per-order aggregates (..., P+1).
    Every product is a matmul: 2 (P+1) L multiply-accumulates (P = 0 for ``dot``).
    """
    if kernel == "dot":
        att = torch.matmul(phi.unsqueeze(-2), g.unsqueeze(-1))  # (..., 1, 1)
        if use_scale:
            att = att / math.sqrt(theta.shape[-1])
        y = torch.matmul(theta.unsqueeze(-1), att).squeeze(-1)
        return y, att.squeeze(-1)
    coeff = torch.tensor(taylor_coefficients(order, gamma), dtype=theta.dtype, device=theta.device)
    theta_pow, phi_pow = powers(theta, order), powers(phi, order)  # (..., L, P+1)
    if exact_beta:
        theta_pow = theta_pow * torch.exp(-gamma * theta * theta).unsqueeze(-1)
        phi_pow = phi_pow * torch.exp(-gamma * phi * phi).unsqueeze(-1)
    else:
        coeff = coeff * math.exp(-2.0 * gamma)
    att = torch.matmul(phi_pow.transpose(-1, -2), g.unsqueeze(-1)) * coeff.unsqueeze(-1)  # (..., P+1, 1)
    if use_scale:  # the official SpatialCGNLx kernel divides both kernels' aggregates by sqrt(L)
        att = att / math.sqrt(theta.shape[-1])
    y = torch.matmul(theta_pow, att).squeeze(-1)
    return y, att.squeeze(-1)


@MODULES.register("cgnl", paper="Yue et al., NeurIPS 2018", family="lowrank", order="O(P C N)")
class CGNL(ContextModule):
    """Compact generalised non-local block: a kernel over every (channel, pixel) element of a group.

    ``t, p, g = W_t X, W_p X, W_g X`` (1x1 convs C -> C' = C / reduction, no bias), split into
    ``groups`` groups of C'/G channels and flattened to vectors of length L = (C'/G) H W, so channels
    and pixels are both positions with a scalar feature. Per group (spec 1.9)::

        dot:       y = t (p^T g)                          (L,)  = (t p^T) g without the L x L matrix
        gaussian:  y_i = sum_{p=0..P} c_p b_i t_i^p sum_j b_j p_j^p g_j,   c_p = (2 gamma)^p / p!

    i.e. the order-P Taylor series of ``exp(-gamma (t_i - p_j)^2)``. The official code replaces the
    exact ``b_i b_j = exp(-gamma (t_i^2 + p_j^2))`` by the constant ``exp(-2 gamma)``; that is the
    default here and ``exact_beta=True`` switches to the paper's exact factor. The groups are
    concatenated, ``z = GN_G(W_z y)`` with ``W_z`` a 1x1 conv C' -> C grouped with G groups (no bias),
    and ``out = X + z``. GroupNorm weight and bias start at zero, so the block is the identity at
    init; convs are N(0, 0.01) as in kaiyuyue/cgnl-network.pytorch.

    Defaults (reference): reduction 2, G = 8, dot-product kernel, ``use_scale=False`` (optional
    ``/sqrt(L)``), Gaussian order P = 3 (README experiments) and gamma = 1e-4. Deviations: the Gaussian
    kernel runs on CPU (the reference hard-codes ``.cuda()``); the kernel is computed in float32 under
    float16/bfloat16 input. ``return_attention`` gives the flattened ``theta``, ``phi``, ``g`` (B, G, L)
    and the per-order aggregates ``att`` (B, G, P+1) (P = 0 for dot).

    Cost (MACs, batch 1): ``3 C C' N + 2 (P+1) C' N + (C'/G) C N``; order O(P C N), linear in N.
    """

    @checked(order=NON_NEGATIVE, kernel=KERNELS)
    def __init__(
        self,
        in_channels: int,
        *,
        reduction: int = 2,
        groups: int = 8,
        kernel: str = "dot",
        order: int = 3,
        gamma: float = 1e-4,
        exact_beta: bool = False,
        use_scale: bool = False,
    ) -> None:
        super().__init__(in_channels)
        if kernel not in KERNELS:
            raise ValueError(f"CGNL kernel must be one of {KERNELS}, got {kernel!r}")
        if order < 0:
            raise ValueError(f"CGNL Taylor order must be >= 0, got {order}")
        planes = max(in_channels // reduction, 1)
        if planes % groups or in_channels % groups:
            raise ValueError(
                f"CGNL groups={groups} must divide in_channels={in_channels} and in_channels // reduction={planes}"
            )
        self.planes, self.groups, self.kernel = planes, groups, kernel
        self.order = order if kernel == "gaussian" else 0
        self.gamma, self.exact_beta, self.use_scale = gamma, exact_beta, use_scale
        self.theta = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.phi = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.g = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.z = nn.Conv2d(planes, in_channels, 1, groups=groups, bias=False)
        self.norm = nn.GroupNorm(groups, in_channels)
        for conv in (self.theta, self.phi, self.g, self.z):
            nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def _flatten(self, t: Tensor) -> Tensor:
        b = t.shape[0]
        return upcast(t).reshape(b, self.groups, -1)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        b, _, h, w = x.shape
        theta, phi, g = self._flatten(self.theta(x)), self._flatten(self.phi(x)), self._flatten(self.g(x))
        with full_precision(x.device):
            y, att = compact_kernel(
                theta, phi, g, self.kernel, self.order, self.gamma, self.exact_beta, self.use_scale
            )
            y = y.reshape(b, self.planes, h, w).to(x.dtype)
        out = x + self.norm(self.z(y))
        if return_attention:
            return out, {"theta": theta, "phi": phi, "g": g, "att": att}
        return out

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Every (channel, pixel) of a group is a position; the map is the weight of value pixel j for the
        query pixel, averaged over query channels and groups, summed over value channels: not convex."""
        g = factors["theta"].shape[1]
        n = size[0] * size[1]
        theta = factors["theta"][0].reshape(g, -1, n)  # (G, A, N)
        phi = factors["phi"][0].reshape(g, -1, n)
        t_q = theta[:, :, flat_index(query, size[1])]  # (G, A)
        if self.kernel == "dot":
            scale = 1.0 / (theta.shape[1] * n) ** 0.5 if self.use_scale else 1.0
            per = t_q.mean(1)[:, None] * phi.sum(1) * scale  # (G, N)
        else:
            coeff = torch.tensor(taylor_coefficients(self.order, self.gamma), dtype=theta.dtype, device=theta.device)
            tp = torch.stack([t_q**p for p in range(self.order + 1)], -1)  # (G, A, P+1)
            pp = torch.stack([phi**p for p in range(self.order + 1)], -1)  # (G, B, N, P+1)
            if self.exact_beta:
                tp = tp * torch.exp(-self.gamma * t_q * t_q)[..., None]
                pp = pp * torch.exp(-self.gamma * phi * phi)[..., None]
            else:
                coeff = coeff * torch.exp(torch.tensor(-2.0 * self.gamma, dtype=theta.dtype))
            per = torch.einsum("gap,gbnp,p->gn", tp, pp, coeff) / tp.shape[1]
        return {f"{self.kernel} kernel": per.mean(0).reshape(size)}, False

    def flops(self, height: int, width: int) -> int:
        n = height * width
        projections = 3 * self.in_channels * self.planes * n
        kernel = 2 * (self.order + 1) * self.planes * n
        output = (self.planes // self.groups) * self.in_channels * n
        return projections + kernel + output
