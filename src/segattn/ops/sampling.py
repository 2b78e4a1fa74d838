"""Local-window gather, deformable sampling and window aggregation, in pure PyTorch.

Shared by the local / sampled-neighbourhood modules (Local Relation, DGMN, CARAFE). Conventions:

* windows are ``k x k`` (k odd) with dilation ``d``, centred on the pixel, zero padding
  ``d (k - 1) / 2`` (the "same" convention of ``nn.Unfold``); sample ``s = i k + j`` (row-major) sits at
  the relative position ``((i - r) d, (j - r) d)``, ``r = (k - 1) / 2``;
* channel groups are contiguous: with ``G`` groups of ``R = C / G`` channels, channel ``c`` belongs to
  group ``c // R``;
* offsets for deformable sampling are (B, 2 k^2, H, W) with ``offsets[:, 2 s]`` the row shift
  ``dy`` and ``offsets[:, 2 s + 1]`` the column shift ``dx`` of sample ``s`` (the deformable-conv layout);
  sampling is bilinear with zeros outside the map.

Aggregation written as an element-wise multiply and a sum is invisible to ``FlopCounterMode``; when
``segattn.ops.attention.use_reference()`` is True the aggregators unfold and use ``einsum`` so the
counter sees exactly ``C k^2`` MACs per output pixel (times the number of phases). The fast
``window_aggregate`` never materialises the k^2-times unfolded map: it accumulates k^2 shifted slices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from segattn.ops.attention import use_reference


def _check_kernel(kernel_size: int, dilation: int) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be a positive int, got {dilation!r}")


def _check_map(x: Tensor, what: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{what} expects a 4-D feature map (B, C, H, W), got {shape}")


def window_offsets(kernel_size: int, dilation: int = 1) -> list[tuple[int, int]]:
    """Relative (dy, dx) of the k^2 window samples, row-major."""
    _check_kernel(kernel_size, dilation)
    r = (kernel_size - 1) // 2
    return [((i - r) * dilation, (j - r) * dilation) for i in range(kernel_size) for j in range(kernel_size)]


def unfold_window(x: Tensor, kernel_size: int, dilation: int = 1) -> Tensor:
    """Zero-padded k x k neighbourhoods: (B, C, H, W) -> (B, C, k^2, H, W) (``nn.Unfold``, 'same')."""
    _check_map(x, "unfold_window")
    _check_kernel(kernel_size, dilation)
    b, c, h, w = x.shape
    pad = dilation * (kernel_size - 1) // 2
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=pad)
    return cols.reshape(b, c, kernel_size * kernel_size, h, w)


def sampling_grid(offsets: Tensor, kernel_size: int, dilation: int, height: int, width: int) -> Tensor:
    """Normalised ``grid_sample`` grid (B, k^2 H, W, 2) for window samples shifted by ``offsets``.

    Pixel coordinates are mapped with the ``align_corners=False`` convention
    ``g = (2 p + 1) / size - 1``, which is well defined for a size of 1.
    """
    b = offsets.shape[0]
    kk = kernel_size * kernel_size
    if offsets.shape != (b, 2 * kk, height, width):
        raise ValueError(
            f"offsets must have shape (B, 2*k^2, H, W) = ({b}, {2 * kk}, {height}, {width}), got {tuple(offsets.shape)}"
        )
    rel = torch.tensor(
        window_offsets(kernel_size, dilation), dtype=offsets.dtype, device=offsets.device
    )  # (k^2, 2)
    ys = torch.arange(height, dtype=offsets.dtype, device=offsets.device).view(1, 1, height, 1)
    xs = torch.arange(width, dtype=offsets.dtype, device=offsets.device).view(1, 1, 1, width)
    off = offsets.reshape(b, kk, 2, height, width)
    py = ys + rel[:, 0].view(1, kk, 1, 1) + off[:, :, 0]
    px = xs + rel[:, 1].view(1, kk, 1, 1) + off[:, :, 1]
    gy = (2.0 * py + 1.0) / height - 1.0
    gx = (2.0 * px + 1.0) / width - 1.0
    return torch.stack((gx, gy), dim=-1).view(b, kk * height, width, 2)


def deform_unfold(x: Tensor, offsets: Tensor, kernel_size: int, dilation: int = 1) -> Tensor:
    """Deformable neighbourhoods: bilinear samples at ``p + window offset + offsets``.

    ``x`` (B, C, H, W), ``offsets`` (B, 2 k^2, H, W) -> (B, C, k^2, H, W); zeros outside the map, so
    zero offsets give exactly :func:`unfold_window` (up to the rounding of the coordinate map).
    float16/bfloat16 are sampled in float32 and returned in float32.
    """
    _check_map(x, "deform_unfold")
    _check_kernel(kernel_size, dilation)
    b, c, h, w = x.shape
    if offsets.dim() != 4 or offsets.shape[0] != b:
        raise ValueError(
            f"offsets must have shape ({b}, {2 * kernel_size**2}, {h}, {w}), got {tuple(offsets.shape)}"
        )
    dtype = torch.promote_types(x.dtype, torch.float32)
    grid = sampling_grid(offsets.to(dtype), kernel_size, dilation, h, w)
    out = F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(b, c, kernel_size * kernel_size, h, w)


def _check_weights(channels: int, weights: Tensor, kernel_size: int, spatial: tuple[int, int]) -> int:
    kk = kernel_size * kernel_size
    if weights.dim() not in (5, 6) or weights.shape[2] != kk or tuple(weights.shape[-2:]) != spatial:
        raise ValueError(
            f"weights must have shape (B, G, k^2={kk}, H, W) or (B, G, k^2, P, H, W) with (H, W) = {spatial}, "
            f"got {tuple(weights.shape)}"
        )
    groups = weights.shape[1]
    if channels % groups:
        raise ValueError(f"{channels} channels cannot be split into {groups} weight groups")
    return groups


def aggregate_columns(cols: Tensor, weights: Tensor) -> Tensor:
    """``y[c] = sum_s w[group(c), s] cols[c, s]``: (B, C, K, H, W) x (B, G, K, H, W) -> (B, C, H, W).

    Computed in the promoted dtype of both inputs; einsum (counted MACs ``B C K H W``) in reference mode.
    """
    if cols.dim() != 5:
        raise ValueError(f"cols must have shape (B, C, K, H, W), got {tuple(cols.shape)}")
    b, c, kk, h, w = cols.shape
    if weights.dim() != 5 or weights.shape[0] != b or weights.shape[2:] != (kk, h, w):
        raise ValueError(f"weights must have shape ({b}, G, {kk}, {h}, {w}), got {tuple(weights.shape)}")
    g = weights.shape[1]
    if c % g:
        raise ValueError(f"{c} channels cannot be split into {g} weight groups")
    dtype = torch.promote_types(cols.dtype, weights.dtype)
    grouped = cols.to(dtype).reshape(b, g, c // g, kk, h, w)
    weights = weights.to(dtype)
    if use_reference():
        out = torch.einsum("bgrkhw,bgkhw->bgrhw", grouped, weights)
    else:
        out = (grouped * weights.unsqueeze(2)).sum(dim=3)
    return out.reshape(b, c, h, w)


def window_aggregate(x: Tensor, weights: Tensor, kernel_size: int, dilation: int = 1) -> Tensor:
    """Per-pixel weighted sum over the zero-padded k x k window, weights shared within channel groups.

    ``x`` (B, C, H, W) and ``weights`` (B, G, k^2, H, W) -> (B, C, H, W), or weights with P phases
    (B, G, k^2, P, H, W) -> (B, C, P, H, W) (CARAFE's sub-pixel kernels):
    ``y[c, (p,) h, w] = sum_s weights[group(c), s, (p,) h, w] * x[c, h + dy_s, w + dx_s]``.

    Fast path: k^2 shifted slices of the padded map, no unfolded copy (memory O(output)).
    Reference path (``use_reference()``): unfold + einsum, counted MACs ``B C k^2 P H W``.
    Computed in the promoted dtype of ``x`` and ``weights``.
    """
    _check_map(x, "window_aggregate")
    _check_kernel(kernel_size, dilation)
    b, c, h, w = x.shape
    g = _check_weights(c, weights, kernel_size, (h, w))
    if weights.shape[0] != b:
        raise ValueError(f"weights batch {weights.shape[0]} does not match input batch {b}")
    dtype = torch.promote_types(x.dtype, weights.dtype)
    x, weights = x.to(dtype), weights.to(dtype)
    phased = weights.dim() == 6
    if not phased:
        weights = weights.unsqueeze(3)
    if use_reference():
        cols = unfold_window(x, kernel_size, dilation).reshape(b, g, c // g, kernel_size**2, h, w)
        out = torch.einsum("bgrkhw,bgkphw->bgrphw", cols, weights)
    else:
        out = _shifted_sum(x.reshape(b, g, c // g, h, w), weights, kernel_size, dilation)
    out = out.reshape(b, c, weights.shape[3], h, w)
    return out if phased else out.squeeze(2)


def _shifted_sum(x: Tensor, weights: Tensor, kernel_size: int, dilation: int) -> Tensor:
    """(B, G, R, H, W) x (B, G, k^2, P, H, W) -> (B, G, R, P, H, W) by accumulating shifted slices.

    Under autograd this is :class:`ShiftedSum`, which saves only ``x`` and ``weights``."""
    if torch.is_grad_enabled() and (x.requires_grad or weights.requires_grad) and not torch.compiler.is_compiling():
        return ShiftedSum.apply(x, weights, kernel_size, dilation)
    return _shifted_sum_plain(x, weights, kernel_size, dilation)


class ShiftedSum(torch.autograd.Function):
    """``_shifted_sum`` with its own backward: plain autograd keeps one graph node per window sample and
    its backward allocates a zero-filled copy of the padded input and of the whole weight tensor for
    every one of the k^2 slices; here the gradients are accumulated slice by slice into one buffer each
    (extra memory O(input + weights), the k^2 products are the same)."""

    @staticmethod
    def forward(ctx, x: Tensor, weights: Tensor, kernel_size: int, dilation: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weights)
        ctx.kernel_size, ctx.dilation = kernel_size, dilation
        return _shifted_sum_plain(x, weights, kernel_size, dilation)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weights = ctx.saved_tensors
        k, d = ctx.kernel_size, ctx.dilation
        h, w = x.shape[-2:]
        pad = d * (k - 1) // 2
        padded = F.pad(x, (pad, pad, pad, pad))
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_padded = torch.zeros_like(padded) if need_x else None
        grad_w = torch.empty_like(weights) if need_w else None
        single_phase = weights.shape[3] == 1
        for s in range(k * k):
            i, j = divmod(s, k)
            rows, cols = slice(i * d, i * d + h), slice(j * d, j * d + w)
            shifted = padded[..., rows, cols]
            if need_w:  # (B, G, R, P, H, W) . (B, G, R, 1, H, W) over R
                _dot_into(grad, shifted.unsqueeze(3), 2, grad_w[:, :, s])
            if need_x and single_phase:  # fused multiply-add, no temporary
                grad_padded[..., rows, cols].addcmul_(grad[:, :, :, 0], weights[:, :, s])
            elif need_x:  # (B, G, R, P, H, W) . (B, G, 1, P, H, W) over P
                grad_padded[..., rows, cols] += torch.linalg.vecdot(
                    grad, weights[:, :, s].unsqueeze(2), dim=3)
        grad_x = grad_padded[..., pad : pad + h, pad : pad + w] if need_x else None
        return grad_x, grad_w, None, None


def _dot_into(a: Tensor, b: Tensor, dim: int, out: Tensor) -> None:
    """``out = sum(a * b, dim)`` (broadcasting): a short ``dim`` is accumulated slice by slice with
    fused multiply-adds (about 2x faster on CPU than ``vecdot``, no temporary); a long one by ``vecdot``."""
    if a.shape[dim] > 32:
        torch.linalg.vecdot(a, b, dim=dim, out=out)
        return
    torch.mul(a.select(dim, 0), b.select(dim, 0), out=out)
    for r in range(1, a.shape[dim]):
        out.addcmul_(a.select(dim, r), b.select(dim, r))


def _shifted_sum_plain(x: Tensor, weights: Tensor, kernel_size: int, dilation: int) -> Tensor:
    h, w = x.shape[-2:]
    pad = dilation * (kernel_size - 1) // 2
    padded = F.pad(x, (pad, pad, pad, pad))
    out = x.new_zeros(*x.shape[:3], weights.shape[3], h, w)
    for s in range(kernel_size * kernel_size):
        i, j = divmod(s, kernel_size)
        shifted = padded[..., i * dilation : i * dilation + h, j * dilation : j * dilation + w]
        out.addcmul_(shifted.unsqueeze(3), weights[:, :, s].unsqueeze(2))  # fused multiply-add
    return out
