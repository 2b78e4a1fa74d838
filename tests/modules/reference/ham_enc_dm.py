"""Independent float64 references for Hamburger (NMF / VQ / CD), EncNet's encoding module and DMNet.

Written from the papers' equations and the official code's arithmetic, in (B, C, H, W) layout with
einsums over (h, w): no token reshape, nothing from ``segattn``. Eval mode (the stored bases).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tests.modules.reference import reference
from tests.modules.reference.ops import avg_pool, bn, cna, conv, l2n, norm, shift


def _nmf(z: Tensor, bases: Tensor, steps: int) -> Tensor:
    """``z`` (B, D, H, W), ``bases`` (B, D, R) -> reconstruction B C^T (B, D, H, W)."""

    def coef_update(c, b):
        num = torch.einsum("bdhw,bdr->bhwr", z, b)
        den = torch.einsum("bhwr,brs->bhws", c, torch.einsum("bdr,bds->brs", b, b))
        return c * num / (den + 1e-6)

    c = torch.softmax(torch.einsum("bdhw,bdr->bhwr", z, bases), dim=-1)
    b = bases
    for _ in range(steps):
        c = coef_update(c, b)
        num = torch.einsum("bdhw,bhwr->bdr", z, c)
        den = torch.einsum("bdr,brs->bds", b, torch.einsum("bhwr,bhws->brs", c, c))
        b = b * num / (den + 1e-6)
    c = coef_update(c, b)
    return torch.einsum("bdr,bhwr->bdhw", b, c)


def _cosine(z: Tensor, b: Tensor, inv_t: float, norm_b: bool) -> Tensor:
    zn = l2n(z, 1)
    bb = l2n(b, 1, 1e-6) if norm_b else b
    return torch.softmax(inv_t * torch.einsum("bdhw,bdr->bhwr", zn, bb), dim=-1)


def _vq_cd(z: Tensor, bases: Tensor, steps: int, inv_t: float, method: str, beta: float) -> Tensor:
    b = bases
    for _ in range(steps):
        c = _cosine(z, b, inv_t, method == "vq")
        c = c / (1e-6 + c.sum(dim=(1, 2), keepdim=True))
        b = torch.einsum("bdhw,bhwr->bdr", z, c)
        if method == "cd":
            b = l2n(b, 1, 1e-6)
    if method == "vq":  # the official final step divides by (1e-6 + ||x||)
        zn = z / (1e-6 + torch.sqrt((z * z).sum(dim=1, keepdim=True)))
        c = torch.softmax(inv_t * torch.einsum("bdhw,bdr->bhwr", zn, l2n(b, 1, 1e-6)), dim=-1)
    else:
        r = b.shape[-1]
        inv = torch.linalg.inv(torch.einsum("bdr,bds->brs", b, b) + beta * torch.eye(r, dtype=b.dtype))
        c = torch.einsum("bdhw,bdr,brs->bhws", z, b, inv)
    return torch.einsum("bdr,bhwr->bdhw", b, c)


@reference("hamburger")
def hamburger(m, x):
    ham = m.block.mapper
    z = conv(x, m.ham_in)
    if ham.method == "nmf":
        z = torch.clamp(z, min=0)
    bases = ham.bases.double().unsqueeze(0).expand(x.shape[0], -1, -1)
    if ham.method == "nmf":
        rec = _nmf(z, bases, ham.eval_steps)
    else:
        rec = _vq_cd(z, bases, ham.eval_steps, ham.inv_t, ham.method, ham.beta)
    return torch.clamp(x + norm(conv(rec, m.ham_out[0]), m.ham_out[1]), min=0)


@reference("encnet")
def encnet(m, x):
    xp = cna(x, m.project)
    codes = m.encoding.codewords.double()  # (K, C)
    diff = xp[:, :, :, :, None] - codes.t()[None, :, None, None, :]  # (B, C, H, W, K)
    dist = (diff * diff).sum(dim=1)  # (B, H, W, K)
    a = torch.softmax(m.encoding.scale.double() * dist, dim=-1)
    enc = torch.einsum("bhwk,bchwk->bkc", a, diff)
    e = torch.clamp(bn(enc, m.norm), min=0).mean(dim=1)  # (B, C)
    gamma = torch.sigmoid(e @ m.fc.weight.double().t() + m.fc.bias.double())
    return torch.clamp(x + x * gamma[:, :, None, None], min=0)


@reference("dmnet")
def dmnet(m, x):
    outs = [x]
    for dcm in m.dcms:
        s = dcm.filter_size
        kernels = conv(avg_pool(x, s, s), dcm.filter_gen)  # (B, c, s, s)
        r = cna(x, dcm.reduce)
        top = (s - 1) // 2 + (s - 1) % 2
        y = sum(kernels[:, :, i, j, None, None] * shift(r, i - top, j - top) for i in range(s) for j in range(s))
        y = torch.clamp(bn(y, dcm.norm), min=0)
        outs.append(cna(y, dcm.fusion_conv) if dcm.fusion else y)
    y = torch.cat(outs, 1)
    return y if isinstance(m.bottleneck, torch.nn.Identity) else cna(y, m.bottleneck)
