"""Independent float64 references: one plain implementation of the spec's equations per registered module.

``REFERENCES[name](module, x)`` computes what ``module(x)`` should return in eval mode from the
module's *weights only* (its submodules are never called) and from nothing in ``segattn``: pairwise
terms are explicit (h, w) x (i, j) einsums or loops, pooling / resizing / sampling are written out in
``ops``. ``tests/modules/test_reference.py`` compares every registered module with its reference.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor

from tests.modules.reference.ops import (
    avg_pool,
    bilinear,
    bn,
    cna,
    conv,
    conv1d,
    dense_attention,
    l2n,
    max_pool,
    sample,
    shift,
)

Reference = Callable[[torch.nn.Module, Tensor], Tensor]
REFERENCES: Dict[str, Reference] = {}


def reference(*names: str):
    def deco(fn):
        for n in names:
            REFERENCES[n] = fn
        return fn
    return deco


# ---------------------------------------------------------------- pairwise
@reference("nonlocal", "nonlocal_gaussian", "nonlocal_dot", "nonlocal_concat")
def nonlocal_block(m, x):
    src = max_pool(x, 2, ceil=True) if m.sub_sample else x
    g = conv(src, m.g)
    if m.mode == "gaussian":
        q, k = x, src
    else:
        q = conv(x, m.theta)
        k = conv(src, m.theta if m.shared_qk else m.phi)
    pair = torch.einsum("bchw,bcij->bhwij", q, k)
    count = src.shape[2] * src.shape[3]
    if m.mode in ("embedded_gaussian", "gaussian"):
        scale = k.shape[1] ** -0.5 if m.use_scale else 1.0
        b, h, w = pair.shape[:3]
        f = torch.softmax(pair.reshape(b, h, w, -1) * scale, dim=-1).reshape(pair.shape)
    elif m.mode == "dot":
        f = pair / count
    else:
        d = q.shape[1]
        wq, wk = m.concat_weight.double()[:d, 0], m.concat_weight.double()[d:, 0]
        a = torch.einsum("c,bchw->bhw", wq, q)[:, :, :, None, None]
        bb = torch.einsum("c,bcij->bij", wk, k)[:, None, None]
        f = torch.clamp(a + bb, min=0) / count
    y = torch.einsum("bhwij,bcij->bchw", f, g)
    z = conv(y, m.conv_out)
    return x + (bn(z, m.norm) if m.norm is not None else z)


@reference("dnl")
def dnl(m, x):
    q, k, g = conv(x, m.theta), conv(x, m.phi), conv(x, m.g)
    if m.whiten:
        q = q - q.mean(dim=(2, 3), keepdim=True)
        k = k - k.mean(dim=(2, 3), keepdim=True)
    scale = (q.shape[1] ** -0.5 if m.use_scale else 1.0) / m.temperature
    y = dense_attention(q, k, g, scale)
    if not m.use_out:  # the official use_out=False block: gamma on the pairwise term only, no W_z
        y = m.gamma.double() * y
    if m.unary:
        logits = conv(x, m.mask)[:, 0]  # (B, H, W)
        u = torch.softmax(logits.flatten(1), dim=-1).reshape(logits.shape)
        y = y + torch.einsum("bij,bcij->bc", u, g)[:, :, None, None]
    z = conv(y, m.conv_out) if m.use_out else y
    return x + (bn(z, m.norm) if m.norm is not None else z)


def _channel_ln_mlp(c: Tensor, seq) -> Tensor:
    """conv1x1 -> LayerNorm over the P channels (biased variance) -> ReLU -> conv1x1 on (B, C) vectors."""
    conv1, ln, conv2 = seq[0], seq[1], seq[3]
    h = torch.einsum("pc,bc->bp", conv1.weight.double()[:, :, 0, 0], c) + conv1.bias.double()
    mean, var = h.mean(1, keepdim=True), ((h - h.mean(1, keepdim=True)) ** 2).mean(1, keepdim=True)
    h = (h - mean) / torch.sqrt(var + ln.eps) * ln.weight.double().flatten() + ln.bias.double().flatten()
    h = torch.clamp(h, min=0)
    return torch.einsum("cp,bp->bc", conv2.weight.double()[:, :, 0, 0], h) + conv2.bias.double()


@reference("gcnet")
def gcnet(m, x):
    if m.pooling == "att":
        logits = conv(x, m.mask)[:, 0]
        a = torch.softmax(logits.flatten(1), dim=-1).reshape(logits.shape)
    else:
        a = torch.full_like(x[:, 0], 1.0 / (x.shape[2] * x.shape[3]))
    c = torch.einsum("bij,bcij->bc", a, x)
    out = x
    if m.channel_mul is not None:
        out = out * torch.sigmoid(_channel_ln_mlp(c, m.channel_mul))[:, :, None, None]
    if m.channel_add is not None:
        out = out + _channel_ln_mlp(c, m.channel_add)[:, :, None, None]
    return out


@reference("ocr")
def ocr(m, x, regions=None):
    logits = conv(x, m.region) if regions is None else regions  # (B, K, H, W)
    b, kk = logits.shape[:2]
    mask = torch.softmax(m.gather_scale * logits.reshape(b, kk, -1), dim=-1).reshape(logits.shape)
    feats = torch.einsum("bkij,bcij->bck", mask, x)[..., None]  # (B, C, K, 1): one column per region
    q = cna(cna(x, m.query[0]), m.query[1])
    key = cna(cna(feats, m.key[0]), m.key[1])
    val = cna(feats, m.value)
    logit = torch.einsum("bchw,bck->bhwk", q, key[..., 0]) * m.key_channels ** -0.5
    w = torch.softmax(logit, dim=-1)
    ctx = cna(torch.einsum("bhwk,bck->bchw", w, val[..., 0]), m.out)
    return cna(torch.cat([ctx, x], 1), m.bottleneck)


def _pam(m, x):
    q, k, v = conv(x, m.query), conv(x, m.key), conv(x, m.value)
    return m.gamma.double() * dense_attention(q, k, v, 1.0)


def _cam(m, x):
    energy = torch.einsum("bchw,bdhw->bcd", x, x)
    logits = energy.amax(dim=-1, keepdim=True) - energy if m.cam_mode == "reference" else energy
    return m.gamma.double() * torch.einsum("bcd,bdhw->bchw", torch.softmax(logits, dim=-1), x)


@reference("danet_pam")
def danet_pam(m, x):
    return x + _pam(m, x)


@reference("danet_cam")
def danet_cam(m, x):
    return x + _cam(m, x)


@reference("danet")
def danet(m, x):
    return x + _pam(m.pam, x) + _cam(m.cam, x)


def _oc_unit(u, x, source=None):
    """OCNet / ANN self-attention unit on x (B, C, H, W) -> context (B, C_out, H, W)."""
    h, w = x.shape[-2:]
    if u.pool_scale > 1:
        x = max_pool(x, u.pool_scale, u.ceil_mode)
        source = None if source is None else max_pool(source, u.pool_scale, u.ceil_mode)
    src = x if source is None else source
    q = cna(x, u.query)
    k = cna(src, u.key if u.key is not None else u.query)
    v = conv(src, u.value)
    if u.key_pool_sizes is not None:  # pyramid anchors: pooled after projection, one row of cells
        k = torch.cat([avg_pool(k, s, s).flatten(2) for s in u.key_pool_sizes], 2).unsqueeze(2)
        v = torch.cat([avg_pool(v, s, s).flatten(2) for s in u.key_pool_sizes], 2).unsqueeze(2)
    ctx = conv(dense_attention(q, k, v, u.key_channels ** -0.5), u.out)
    return bilinear(ctx, (h, w), True) if u.pool_scale > 1 else ctx


@reference("ocnet_base", "ann_apnb")
def ocnet_base(m, x):
    return cna(torch.cat([_oc_unit(m.attention, x), x], 1), m.bottleneck)


@reference("ann_afnb")
def ann_afnb(m, x):
    return cna(torch.cat([_oc_unit(m.attention, x, x), x], 1), m.bottleneck)


def _regions(n: int, s: int) -> List[Tuple[int, int]]:
    step = n // s
    if s == 1 or step == 0:
        return [(0, n)]
    return [(i * step, (i + 1) * step) for i in range(s - 1)] + [((s - 1) * step, n)]


@reference("ocnet_pyramid")
def ocnet_pyramid(m, x):
    feats = [cna(x, m.lift)]
    for s, u in zip(m.sizes, m.stages):
        q, v = cna(x, u.query), conv(x, u.value)
        same = torch.zeros(x.shape[2], x.shape[3], x.shape[2], x.shape[3], dtype=torch.bool)
        for r0, r1 in _regions(x.shape[2], s):
            for c0, c1 in _regions(x.shape[3], s):
                same[r0:r1, c0:c1, r0:r1, c0:c1] = True
        feats.append(conv(dense_attention(q, q, v, u.key_channels ** -0.5, same[None]), u.out))
    return cna(torch.cat(feats, 1), m.bottleneck)


@reference("ocnet_asp")
def ocnet_asp(m, x):
    ctx = _oc_unit(m.attention, cna(x, m.context_in))
    feats = [cna(ctx, m.context_out), cna(x, m.conv1x1)] + [cna(x, c) for c in m.atrous]
    return cna(torch.cat(feats, 1), m.bottleneck)


@reference("psanet")
def psanet(m, x):
    hh, ww = x.shape[-2:]
    s = m.shrink_factor
    size = ((hh - 1) // s + 1, (ww - 1) // s + 1)
    mh, mw = m.mask_size
    outs = []
    for kind in m.kinds:
        br = m.branches[kind]
        z = cna(x, br.reduce)
        if s != 1:
            z = bilinear(z, size, True)
        mask = conv(cna(z, br.attention[0]), br.attention[1])  # (B, mh mw, h, w)
        h, w = size
        n = h * w
        logits = x.new_zeros(x.shape[0], n, n)  # [source j, target i]
        for j in range(n):
            for i in range(n):
                at = i if kind == "collect" else j  # where the mask is predicted
                other = j if kind == "collect" else i
                dh = other // w - at // w + (mh - 1) // 2
                dw = other % w - at % w + (mw - 1) // 2
                if 0 <= dh < mh and 0 <= dw < mw:
                    logits[:, j, i] = mask[:, dh * mw + dw, at // w, at % w]
                elif m.mask_fill == "-inf" and m.psa_softmax:
                    logits[:, j, i] = float("-inf")
        attn = torch.softmax(logits, dim=1) if m.psa_softmax else logits
        out = torch.einsum("bcj,bji->bci", z.flatten(2), attn) / m.normalization_factor
        outs.append(out.reshape(z.shape))
    y = cna(torch.cat(outs, 1), m.proj)
    return bilinear(y, (hh, ww), True) if s != 1 else y


# ---------------------------------------------------------------- sparse
@reference("ccnet")
def ccnet(m, x):
    for _ in range(m.recurrence):
        q, k, v = conv(x, m.query), conv(x, m.key), conv(x, m.value)
        b, c, h, w = x.shape
        ctx = torch.zeros_like(v)
        for y in range(h):
            for xx in range(w):
                col = torch.einsum("bc,bci->bi", q[:, :, y, xx], k[:, :, :, xx])
                col[:, y] = float("-inf")
                row = torch.einsum("bc,bcj->bj", q[:, :, y, xx], k[:, :, y, :])
                a = torch.softmax(torch.cat([col, row], 1), dim=1)
                ctx[:, :, y, xx] = torch.einsum("bi,bci->bc", a[:, :h], v[:, :, :, xx]) + torch.einsum(
                    "bj,bcj->bc", a[:, h:], v[:, :, y, :]
                )
        x = m.gamma.double() * ctx + x
    return x


def _isa_stage(sa, x, same):
    q = cna(cna(x, sa.query[0]), sa.query[1])
    k = cna(cna(x, sa.key[0]), sa.key[1])
    return cna(dense_attention(q, k, conv(x, sa.value), sa.key_channels ** -0.5, same[None]), sa.out)


@reference("isa")
def isa(m, x):
    assert not m.mask_padding
    dh, dw = m.down_factor
    h, w = x.shape[-2:]
    ph, pw = -h % dh, -w % dw
    top, left = ph // 2, pw // 2
    xp = torch.nn.functional.pad(x, (left, pw - left, top, ph - top))
    hp, wp = xp.shape[-2:]
    r = torch.arange(hp).view(hp, 1, 1, 1)
    c = torch.arange(wp).view(1, wp, 1, 1)
    i = torch.arange(hp).view(1, 1, hp, 1)
    j = torch.arange(wp).view(1, 1, 1, wp)
    long = (r % dh == i % dh) & (c % dw == j % dw)  # same offset inside the d_h x d_w cell
    short = (r // dh == i // dh) & (c // dw == j // dw)  # same cell
    z = _isa_stage(m.short, _isa_stage(m.long, xp, long), short)
    return z[:, :, top : top + h, left : left + w]


@reference("local_relation")
def local_relation(m, x):
    k, r = m.kernel_size, (m.kernel_size - 1) // 2
    q, kk = conv(x, m.query), conv(x, m.key)
    offsets = [(i - r, j - r) for i in range(k) for j in range(k)]
    rel = torch.tensor([[dy / r if r else 0.0, dx / r if r else 0.0] for dy, dx in offsets], dtype=torch.float64)
    l1, l2 = m.geometry[0], m.geometry[2]
    hidden = torch.clamp(rel @ l1.weight.double()[:, :, 0, 0].T + l1.bias.double(), min=0)
    geo = hidden @ l2.weight.double()[:, :, 0, 0].T + l2.bias.double()  # (k^2, G)
    logits = torch.stack([q * shift(kk, dy, dx) + geo[s].view(1, -1, 1, 1) for s, (dy, dx) in enumerate(offsets)], 2)
    wts = torch.softmax(logits, dim=2)  # (B, G, k^2, H, W)
    share = m.channel_sharing
    y = sum(wts[:, torch.arange(x.shape[1]) // share, s] * shift(x, dy, dx) for s, (dy, dx) in enumerate(offsets))
    return conv(y, m.proj)


def _dgmn_after3x3(m, x):
    """ReDynamicWeightsCat33: deformable samples of x, a deformable conv for the logits, gamma-weighted sum."""
    b, c, h, w = x.shape
    k, r, g = m.kernel_size, (m.kernel_size - 1) // 2, m.groups
    kk = k * k
    ys = torch.arange(h, dtype=torch.float64).view(1, h, 1).expand(b, h, w)
    xs = torch.arange(w, dtype=torch.float64).view(1, 1, w).expand(b, h, w)
    out = x.clone()
    for i, d in enumerate(m.dilations):
        off = conv(x, m.offset_convs[i]) if m.deformable else x.new_zeros(b, 2 * kk, h, w)
        vals = [sample(x, ys + (s // k - r) * d + off[:, 2 * s], xs + (s % k - r) * d + off[:, 2 * s + 1])
                for s in range(kk)]  # each (B, C, H, W)
        wt = m.predictors[i].weight.double()  # (O, C, k, k)
        logits = sum(torch.einsum("oc,bchw->bohw", wt[:, :, s // k, s % k], vals[s]) for s in range(kk))
        if m.affinity:
            att = torch.softmax(logits[:, g * kk:], dim=1)  # (B, K, H, W)
            wts = logits[:, : g * kk].reshape(b, g, kk, h, w) * att.unsqueeze(1)
        else:
            wts = torch.softmax(logits[:, : g * kk].reshape(b, g, kk, h, w), dim=2)
        msg = sum(wts[:, torch.arange(c) // (c // g), s] * vals[s] for s in range(kk))
        out = out + m.gammas[i].double() * msg
    return out


@reference("dgmn")
def dgmn(m, x):
    if m.block == "after3x3":
        return _dgmn_after3x3(m, x)
    xd = cna(x, m.reduce)
    b, c, h, w = xd.shape
    k, r, g = m.kernel_size, (m.kernel_size - 1) // 2, m.groups
    kk = k * k
    msgs = [xd]
    for i, d in enumerate(m.dilations):
        logits = conv(xd, m.predictors[i])
        wts = torch.softmax(logits[:, : g * kk].reshape(b, g, kk, h, w), dim=2)
        if m.affinity:
            wts = wts * torch.sigmoid(logits[:, g * kk :]).unsqueeze(1)
        off = conv(xd, m.offset_convs[i]) if m.deformable else xd.new_zeros(b, 2 * kk, h, w)
        ys = torch.arange(h, dtype=torch.float64).view(1, h, 1).expand(b, h, w)
        xs = torch.arange(w, dtype=torch.float64).view(1, 1, w).expand(b, h, w)
        msg = torch.zeros_like(xd)
        for s in range(kk):
            dy, dx = (s // k - r) * d, (s % k - r) * d
            vals = sample(xd, ys + dy + off[:, 2 * s], xs + dx + off[:, 2 * s + 1])
            msg = msg + wts[:, torch.arange(c) // (c // g), s] * vals
        msgs.append(msg)
    return x + cna(cna(torch.cat(msgs, 1), m.fuse[0]), m.fuse[1])


@reference("upsampler:carafe")
def carafe(m, x):
    b, c, h, w = x.shape
    s, k, g = m.scale_factor, m.up_kernel, m.up_group
    r = (k - 1) // 2
    z = conv(conv(x, m.compressor), m.encoder)  # (B, s^2 k^2 G, H, W)
    shuffled = x.new_zeros(b, z.shape[1] // (s * s), s * h, s * w)  # pixel_shuffle, written out
    for i in range(s):
        for j in range(s):
            shuffled[:, :, i::s, j::s] = z[:, i * s + j :: s * s]
    kernels = torch.softmax(shuffled.reshape(b, g, k * k, s * h, s * w), dim=2)
    out = x.new_zeros(b, c, s * h, s * w)
    src_y = torch.arange(s * h) // s
    src_x = torch.arange(s * w) // s
    for t in range(k * k):
        dy, dx = t // k - r, t % k - r
        shifted = shift(x, dy, dx)[:, :, src_y][:, :, :, src_x]
        out += kernels[:, torch.arange(c) // (c // g), t] * shifted
    return out


# ---------------------------------------------------------------- low-rank
@reference("a2")
def a2(m, x):
    a = conv(x, m.phi).flatten(2)  # (B, m, N)
    bl = conv(x, m.block.mapper.proj).flatten(2)  # (B, n, N)
    if m.block.mapper.log_softmax_nodes:
        bl = torch.log_softmax(bl, dim=1)
    gather = torch.einsum("bmN,bnN->bmn", a, torch.softmax(bl, dim=2))
    dist = torch.softmax(conv(x, m.block.reverse.proj).flatten(2), dim=1)  # over the n descriptors
    z = torch.einsum("bmn,bnN->bmN", gather, dist).reshape(x.shape[0], -1, *x.shape[2:])
    return x + conv(z, m.conv_out)


@reference("ema")
def ema(m, x):
    mp = m.block.mapper
    h = conv(x, m.conv_in).flatten(2)  # (B, C, N)
    mu = mp.bases.double().unsqueeze(0).expand(x.shape[0], -1, -1)
    for _ in range(mp.num_stages):
        z = torch.softmax(mp.kernel_scale * torch.einsum("bcn,bck->bnk", h, mu), dim=2)
        zbar = z / (mp.eps + z.sum(dim=1, keepdim=True))
        mu = torch.einsum("bcn,bnk->bck", h, zbar)
        if mp.l2norm:
            mu = mu / (mp.eps + torch.sqrt((mu * mu).sum(dim=1, keepdim=True)))
    rec = torch.einsum("bck,bnk->bcn", mu, z).reshape(x.shape)
    return torch.clamp(bn(conv(torch.clamp(rec, min=0), m.conv_out[0]), m.conv_out[1]) + x, min=0)


@reference("glore")
def glore(m, x):
    xs = conv(x, m.conv_state).flatten(2)  # (B, C_s, N)
    proj = conv(x, m.block.mapper.proj).flatten(2)  # (B, K, N)
    v = torch.einsum("bcn,bkn->bck", xs, proj)
    if m.block.mapper.normalize == "mean":
        v = v / proj.shape[2]
    rs = m.block.reasoner
    hidden = torch.einsum("kj,bcj->bck", rs.node_conv.weight.double()[:, :, 0], v) + rs.node_conv.bias.double()
    zz = conv1d(torch.clamp(hidden + v, min=0), rs.channel_conv)
    y = torch.einsum("bck,bkn->bcn", zz, proj).reshape(x.shape[0], -1, *x.shape[2:])
    return x + bn(conv(y, m.conv_extend), m.blocker)


def _node_attention(v: Tensor) -> Tensor:
    """LatentGNN / Beyond Grids latent graph: ``V softmax_rows(Vhat^T Vhat)^T`` on (B, C, K)."""
    vh = l2n(v, 1)
    s = torch.softmax(torch.einsum("bck,bcj->bkj", vh, vh), dim=2)
    return torch.einsum("bcj,bkj->bck", v, s)


@reference("latentgnn")
def latentgnn(m, x):
    f_v2l = l2n(bn(conv(x, m.v2l[0]), m.v2l[1]), 1)
    f_l2v = f_v2l if m.l2v is None else l2n(bn(conv(x, m.l2v[0]), m.l2v[1]), 1)
    outs = []
    for i, kern in enumerate(m.kernels):
        if m.mode == "symmetric":
            psi = l2n(cna(f_v2l, kern.mapper.proj[0]).flatten(2), 1)  # over the latents
            fmap, rev = psi, psi
        else:
            fmap = l2n(cna(f_v2l, kern.mapper.proj).flatten(2), 2, 1e-6)  # over the pixels
            rev = l2n(cna(f_l2v, kern.reverse.proj).flatten(2), 1, 1e-6)  # over the latents
        nodes = _node_attention(torch.einsum("bcn,bkn->bck", f_v2l.flatten(2), fmap))
        y = torch.einsum("bck,bkn->bcn", nodes, rev).reshape(f_v2l.shape)
        outs.append(cna(y, m.graph_convs[i]) if m.graph_convs is not None else y)
    return x + m.gamma.double() * bn(conv(torch.cat(outs, 1), m.up), m.norm)


@reference("sgr")
def sgr(m, x):
    blk = m.block
    votes = torch.softmax(conv(x, blk.mapper.proj[0]).flatten(2), dim=1)  # (B, K, N), over nodes
    value = conv(x, m.value).flatten(2)
    nodes = torch.einsum("bdn,bkn->bdk", value, votes)
    if blk.mapper.normalize == "mean":
        nodes = nodes / votes.shape[2]
    rs = blk.reasoner
    prior = rs.embeddings.double().T.unsqueeze(0).expand(x.shape[0], -1, -1)
    hmat = conv1d(torch.cat([nodes, prior], 1), rs.weight)
    a = torch.clamp(rs.adjacency.double(), min=0) + torch.eye(rs.num_nodes, dtype=torch.float64)
    dinv = a.sum(1) ** -0.5
    a_hat = dinv[:, None] * a * dinv[None, :]
    hg = torch.clamp(torch.einsum("bdj,kj->bdk", hmat, a_hat), min=0)
    rv = blk.reverse
    q = conv(x, rv.query).flatten(2)  # (B, D, N)
    keys, vals = conv1d(hg, rv.key), conv1d(hg, rv.value)
    if rv.compatibility == "bilinear":
        wts = torch.softmax(torch.einsum("bdn,bdk->bnk", q, keys) / math.sqrt(q.shape[1]), dim=2)
    else:
        wts = torch.softmax(q.transpose(1, 2) + keys, dim=2)
    y = torch.einsum("bnk,bck->bcn", wts, vals).reshape(x.shape)
    return x + torch.clamp(y, min=0)


@reference("graphrep")
def graphrep(m, x):
    mp = m.block.mapper
    xf = x.flatten(2)  # (B, C, N)
    w, sig = mp.anchors.double(), torch.exp(mp.log_sigma.double())  # (C, K)
    diff = (xf.unsqueeze(3) - w[None, :, None, :]) / sig[None, :, None, :]  # (B, C, N, K)
    q = torch.softmax(-0.5 * (diff * diff).sum(1), dim=2)  # (B, N, K)
    mapk = q / (mp.eps + q.sum(dim=1, keepdim=True))
    nodes = torch.einsum("bnk,bcnk->bck", mapk, diff)
    rs = m.block.reasoner
    z = l2n(nodes, 1, 1e-6) if rs.normalize_nodes else nodes
    reasoned = torch.clamp(conv1d(_node_attention(z), rs.weight), min=0)
    return x + torch.einsum("bck,bnk->bcn", reasoned, q).reshape(x.shape)


@reference("cgnl")
def cgnl(m, x):
    b, _, h, w = x.shape
    t, p, g = (conv(x, c).reshape(b, m.groups, -1) for c in (m.theta, m.phi, m.g))
    length = t.shape[-1]
    if m.kernel == "dot":
        f = torch.einsum("bgi,bgj->bgij", t, p)
    else:
        u = 2 * m.gamma * torch.einsum("bgi,bgj->bgij", t, p)
        series = sum(u**i / math.factorial(i) for i in range(m.order + 1))
        if m.exact_beta:
            beta = torch.exp(-m.gamma * (t.unsqueeze(-1) ** 2 + p.unsqueeze(-2) ** 2))
        else:
            beta = math.exp(-2 * m.gamma)
        f = beta * series
    if m.use_scale:
        f = f / math.sqrt(length)
    y = torch.einsum("bgij,bgj->bgi", f, g).reshape(b, m.planes, h, w)
    z = conv(y, m.z)
    zg = z.reshape(b, m.groups, -1)
    mean, var = zg.mean(-1, keepdim=True), zg.var(-1, unbiased=False, keepdim=True)
    zn = ((zg - mean) / torch.sqrt(var + m.norm.eps)).reshape(z.shape)
    return x + zn * m.norm.weight.double().view(1, -1, 1, 1) + m.norm.bias.double().view(1, -1, 1, 1)


@reference("apcnet")
def apcnet(m, x):
    outs = [x]
    for acm in m.acms:
        reduced = cna(x, acm.input_conv)
        guide = cna(reduced.mean(dim=(2, 3), keepdim=True), acm.global_conv)
        cells = cna(avg_pool(x, acm.scale, acm.scale), acm.block.reasoner.conv).flatten(2)  # (B, c, s^2)
        alpha = torch.sigmoid(conv(reduced + guide, acm.block.reverse.proj)).flatten(2)  # (B, s^2, N)
        z = torch.einsum("bck,bkn->bcn", cells, alpha).reshape(reduced.shape)
        out = torch.clamp(cna(z, acm.residual_conv) + reduced, min=0)
        outs.append(cna(out, acm.fusion_conv) if acm.fusion else out)
    y = torch.cat(outs, 1)
    return y if isinstance(m.bottleneck, torch.nn.Identity) else cna(y, m.bottleneck)


# ---------------------------------------------------------------- pooling
@reference("ppm")
def ppm(m, x):
    feats = [x] + [
        bilinear(cna(avg_pool(x, b, b), br), x.shape[-2:], m.align_corners) for b, br in zip(m.bins, m.branches)
    ]
    y = torch.cat(feats, 1)
    return y if m.bottleneck is None else cna(y, m.bottleneck)


@reference("aspp")
def aspp(m, x):
    feats = [cna(x, m.conv1x1)] + [cna(x, c) for c in m.atrous]
    if m.image_pool is not None:
        feats.append(cna(x.mean(dim=(2, 3), keepdim=True), m.image_pool).expand(-1, -1, *x.shape[2:]))
    y = torch.cat(feats, 1)
    return y if m.bottleneck is None else cna(y, m.bottleneck)



# the successors' references live in their own file (registered on import)
from tests.modules.reference import ham_enc_dm  # noqa: E402,F401
