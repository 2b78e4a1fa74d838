"""Plain float64 building blocks for the independent references (nothing from segattn is imported).

Layout is explicit: feature maps stay (B, C, H, W) and every pairwise quantity is indexed by
(h, w) pairs with einsum, never through a token reshape / transpose.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv(x: Tensor, layer: nn.Module) -> Tensor:
    """The convolution ``layer`` (Conv2d) applied with its own weights, stride 1."""
    w = layer.weight.double()
    b = None if layer.bias is None else layer.bias.double()
    if w.shape[-2:] == (1, 1) and layer.groups == 1:
        y = torch.einsum("oc,bchw->bohw", w[:, :, 0, 0], x)
        return y if b is None else y + b.view(1, -1, 1, 1)
    return F.conv2d(x, w, b, 1, layer.padding, layer.dilation, layer.groups)


def conv1d(x: Tensor, layer: nn.Module) -> Tensor:
    """A 1x1 Conv1d on (B, C, L)."""
    y = torch.einsum("oc,bcl->bol", layer.weight.double()[:, :, 0], x)
    return y if layer.bias is None else y + layer.bias.double().view(1, -1, 1)


def bn(x: Tensor, layer: nn.Module) -> Tensor:
    """Eval-mode batch norm with the running statistics."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, var = layer.running_mean.double().view(shape), layer.running_var.double().view(shape)
    return (x - mean) / torch.sqrt(var + layer.eps) * layer.weight.double().view(shape) + layer.bias.double().view(shape)


def gn(x: Tensor, layer: nn.Module) -> Tensor:
    """Group norm: per sample and group of channels, mean and biased variance over (channels, H, W)."""
    b, c = x.shape[:2]
    g = x.reshape(b, layer.num_groups, -1)
    mean, var = g.mean(-1, keepdim=True), ((g - g.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True)
    y = ((g - mean) / torch.sqrt(var + layer.eps)).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return y * layer.weight.double().view(shape) + layer.bias.double().view(shape)


def norm(x: Tensor, layer: nn.Module) -> Tensor:
    """``bn`` or ``gn``, by the layer's type."""
    return gn(x, layer) if isinstance(layer, nn.GroupNorm) else bn(x, layer)


def act(x: Tensor, layer: nn.Module) -> Tensor:
    if isinstance(layer, nn.ReLU):
        return torch.clamp(x, min=0)
    if isinstance(layer, nn.LeakyReLU):
        return torch.where(x > 0, x, x * layer.negative_slope)
    if isinstance(layer, nn.Identity):
        return x
    raise NotImplementedError(type(layer))


def cna(x: Tensor, seq: nn.Module) -> Tensor:
    """conv -> batch norm -> activation (a ``ConvNormAct``, read as its three children)."""
    return act(norm(conv(x, seq[0]), seq[1]), seq[2])


def l2n(t: Tensor, dim: int, eps: float = 1e-12) -> Tensor:
    return t / torch.sqrt((t * t).sum(dim=dim, keepdim=True)).clamp_min(eps)


def bins(size: int, b: int) -> List[Tuple[int, int]]:
    """Adaptive pooling windows: [floor(i n / b), ceil((i + 1) n / b))."""
    return [((i * size) // b, -((-(i + 1) * size) // b)) for i in range(b)]


def avg_pool(x: Tensor, bh: int, bw: int) -> Tensor:
    out = x.new_zeros(x.shape[0], x.shape[1], bh, bw)
    for i, (h0, h1) in enumerate(bins(x.shape[2], bh)):
        for j, (w0, w1) in enumerate(bins(x.shape[3], bw)):
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(dim=(2, 3))
    return out


def max_pool(x: Tensor, s: int, ceil: bool) -> Tensor:
    """s x s windows at stride s; floor drops the partial last window unless the side is shorter than s."""
    def windows(n: int) -> List[Tuple[int, int]]:
        count = -(-n // s) if ceil else max(1, n // s)
        return [(i * s, min(n, i * s + s)) for i in range(count)]

    rows, cols = windows(x.shape[2]), windows(x.shape[3])
    out = x.new_zeros(x.shape[0], x.shape[1], len(rows), len(cols))
    for i, (h0, h1) in enumerate(rows):
        for j, (w0, w1) in enumerate(cols):
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].amax(dim=(2, 3))
    return out


def _coords(out: int, inp: int, align_corners: bool) -> Tensor:
    i = torch.arange(out, dtype=torch.float64)
    if align_corners:
        return i * ((inp - 1) / (out - 1)) if out > 1 else torch.zeros(out, dtype=torch.float64)
    return ((i + 0.5) * (inp / out) - 0.5).clamp(min=0)


def bilinear(x: Tensor, size: Sequence[int], align_corners: bool) -> Tensor:
    """Separable bilinear resize (PyTorch's conventions), written out."""
    def axis(t: Tensor, out: int, dim: int) -> Tensor:
        n = t.shape[dim]
        c = _coords(out, n, align_corners)
        lo = c.floor().long().clamp(max=n - 1)
        hi = (lo + 1).clamp(max=n - 1)
        frac = (c - lo).view([-1 if d == dim else 1 for d in range(t.dim())])
        return t.index_select(dim, lo) * (1 - frac) + t.index_select(dim, hi) * frac

    return axis(axis(x, size[0], 2), size[1], 3)


def sample(img: Tensor, py: Tensor, px: Tensor) -> Tensor:
    """Bilinear samples of img (B, C, H, W) at real positions py, px (B, H, W): zeros outside."""
    b, c, h, w = img.shape
    y0, x0 = py.floor(), px.floor()
    out = img.new_zeros(b, c, *py.shape[1:])
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            wgt = (1 - (py - yy).abs()) * (1 - (px - xx).abs())
            valid = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            yi, xi = yy.clamp(0, h - 1).long(), xx.clamp(0, w - 1).long()
            for bi in range(b):
                vals = img[bi][:, yi[bi], xi[bi]]  # (C, H, W)
                out[bi] += vals * (wgt[bi] * valid[bi])
    return out


def shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """``out[..., h, w] = x[..., h + dy, w + dx]`` with zeros outside."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ys, ye = max(0, -dy), min(h, h - dy)
    xs, xe = max(0, -dx), min(w, w - dx)
    if ys < ye and xs < xe:
        out[..., ys:ye, xs:xe] = x[..., ys + dy : ye + dy, xs + dx : xe + dx]
    return out


def pair_softmax(logits: Tensor) -> Tensor:
    """Softmax over the key (i, j) axes of (B, H, W, Hk, Wk) logits."""
    b, h, w, hk, wk = logits.shape
    return torch.softmax(logits.reshape(b, h, w, hk * wk), dim=-1).reshape(b, h, w, hk, wk)


def dense_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Tensor = None) -> Tensor:
    """``out[b, c, h, w] = sum_ij softmax_ij(scale q[:, h, w] . k[:, i, j]) v[b, c, i, j]`` (explicit pairs)."""
    logits = torch.einsum("bchw,bcij->bhwij", q, k) * scale
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhwij,bcij->bchw", pair_softmax(logits), v)


def sqrt_inv(n: float) -> float:
    return 1.0 / math.sqrt(n)
