"""Where a pixel looks: a query pixel's effective weights over the input pixels, per module family.

Every context module re-estimates a pixel as a weighted combination of others. For a module and an
input ``x`` (1, C, H, W), :func:`pixel_weights` runs ``module(x, return_attention=True)`` and turns
the returned factors into, for the query pixel ``(y, x)`` of the H x W map, one or more maps of
weights over the *value* positions (the value path: attention frozen, values varied). Each map
lives on its own grid that spans the whole feature map (the pooled grid of sub-sampled keys, the
shrunk PSANet grid, ...) and is upsampled only for display. The tests check every map against a
Jacobian probe of the real forward (attention frozen, gradient w.r.t. the values).

One function per family below. ``PixelWeights.convex`` is True when each map is a convex combination
(weights >= 0 summing to 1 over the pixels it covers; zero-padded windows lose the mass that falls
outside the map). Composed maps (CCNet R = 2, ISA long then short) compose the frozen aggregation
operators; low-rank maps are the row of ``M_rev M_map`` (the reasoner ``f`` left out, it acts on
node features, not on positions).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Tuple

import torch
from torch import Tensor, nn

from segattn.lowrank.functional import pooling_matrix, upsampling_matrix
from segattn.modules.base import Attention
from segattn.modules.cgnl import taylor_coefficients
from segattn.modules.isa import group_long, group_short, padding_for
from segattn.modules.nonlocal_ import subsampled_size
from segattn.modules.ocnet import _splits, _to_blocks, pooled_size
from segattn.modules.psanet import shrunk_size
from segattn.ops.sampling import window_offsets
from segattn.registry import MODULES, UPSAMPLERS

Pair = Tuple[int, int]


class NoAttentionError(ValueError):
    """The module has no per-pixel weights to show (or a kind of picture it does not support)."""


@dataclass
class PixelWeights:
    """Effective weights of one query pixel.

    ``maps``: label -> (h, w) float tensor on a grid spanning the feature map; ``convex``: each map
    is >= 0 and sums to 1 over the pixels it covers; ``query`` (y, x) on the module's input grid
    (CARAFE: its output grid); ``size`` the module's input (H, W); ``name`` the registered name.
    """

    name: str
    query: Pair
    size: Pair
    maps: Dict[str, Tensor] = field(default_factory=dict)
    convex: bool = True


def registered_name(module: nn.Module) -> str:
    """The registry name of a context module or upsampler instance (ValueError if unregistered)."""
    for registry in (MODULES, UPSAMPLERS):
        for name in registry.list():
            if type(module) is registry.get(name):
                return name
    raise ValueError(f"{type(module).__name__} is not a registered context module or upsampler (see `segattn modules`)")


def check_query(query: Pair, size: Pair, what: str = "feature map") -> Tuple[int, int]:
    """``query`` as two ints inside ``size``; a one-line ValueError otherwise."""
    try:
        y, x = (int(v) for v in query)
    except (TypeError, ValueError):
        raise ValueError(f"query must be two integers (y, x), got {query!r}") from None
    if not (0 <= y < size[0] and 0 <= x < size[1]):
        raise ValueError(f"query pixel (y={y}, x={x}) is outside the {size[0]}x{size[1]} {what}; "
                         f"expected 0 <= y < {size[0]} and 0 <= x < {size[1]}")
    return y, x


def _flat(query: Pair, width: int) -> int:
    return query[0] * width + query[1]


def _onehot(index: int, n: int, like: Tensor) -> Tensor:
    out = torch.zeros(n, dtype=like.dtype, device=like.device)
    out[index] = 1.0
    return out


def _index_map(size: Pair, device: torch.device) -> Tensor:
    """(1, 1, H, W) float map whose value is the flat pixel index (to follow groupings exactly)."""
    return torch.arange(size[0] * size[1], device=device, dtype=torch.float64).reshape(1, 1, *size)


# ----- pairwise ---------------------------------------------------------------------------------
def nonlocal_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """Non-local (all four forms): row ``query`` of the (N, M) weights; keys on the pooled grid with
    ``sub_sample``. Embedded Gaussian / Gaussian are softmax rows; dot / concat are ``f / M``."""
    grid = subsampled_size(*size) if module.sub_sample else size
    row = factors["attention"][0, _flat(query, size[1])]
    convex = module.mode in ("embedded_gaussian", "gaussian")
    return PixelWeights("", query, size, {module.mode.replace("_", " "): row.reshape(grid)}, convex)


def danet_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """DANet PAM (alone or in the dual module): row ``query`` of the N x N position attention."""
    if "position_attention" in factors:
        key = "position_attention"
    elif "energy" in factors:
        raise NoAttentionError("danet_cam attends over channels, not pixels: use segattn.viz.channel_attention()")
    else:
        key = "attention"
    row = factors[key][0, _flat(query, size[1])]
    return PixelWeights("", query, size, {"position attention": row.reshape(size)}, True)


def attention_unit_weights(unit: nn.Module, attention: Tensor, size: Pair, source_size: Pair, query: Pair) -> Tensor:
    """OCNet / ANN :class:`SelfAttentionUnit`: weights over the unit's value positions.

    Queries on the ``pool_scale``-pooled grid are bilinearly upsampled (align_corners=True), so the
    pixel's row is the bilinear mix of the pooled rows; pyramid-pooled anchors (``key_pool_sizes``)
    are averages of value pixels, so their weights are spread back through the pooling matrices.
    Returns an (h_s, w_s) map on the (pooled) source grid.
    """
    s = unit.pool_scale
    qgrid, sgrid = pooled_size(*size, s), pooled_size(*source_size, s)
    attn = attention[0]
    if s == 1:
        coeff = _onehot(_flat(query, size[1]), qgrid[0] * qgrid[1], attn)
    else:
        coeff = upsampling_matrix(size, qgrid, True, attn.device, attn.dtype)[_flat(query, size[1])]
    row = coeff @ attn
    if unit.key_pool_sizes is not None:
        pools = [pooling_matrix(sgrid, (b, b), attn.device, attn.dtype) for b in unit.key_pool_sizes]
        row = row @ torch.cat(pools, dim=0)
    return row.reshape(sgrid)


def ocnet_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair,
                  source_size: Pair | None = None) -> PixelWeights:
    """OCNet base / ASP and ANN APNB / AFNB: one :class:`SelfAttentionUnit` (see above)."""
    src = source_size or size
    grid = attention_unit_weights(module.attention, factors["attention"], size, src, query)
    label = "pooled anchors" if module.attention.key_pool_sizes is not None else "object context"
    return PixelWeights("", query, size, {label: grid}, True)


def ocnet_pyramid_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """OCNet pyramid: one map per region size s, the softmax row inside the query's sub-region."""
    h, w = size
    q = _flat(query, w)
    index = _index_map(size, factors[next(iter(factors))].device)
    maps: Dict[str, Tensor] = {}
    for s in module.sizes:
        out = torch.zeros(h * w, dtype=torch.float32, device=index.device)
        r0 = 0
        for rs, rc in _splits(h, s):
            c0 = 0
            for cs, cc in _splits(w, s):
                blocks = _to_blocks(index[:, :, r0:r0 + rs * rc, c0:c0 + cs * cc], rs, rc, cs, cc)[0, :, :, 0].long()
                hit = (blocks == q).nonzero()
                if hit.numel():
                    region, pos = int(hit[0, 0]), int(hit[0, 1])
                    weights = factors[f"size{s}_r{r0}_c{c0}"][0, region, pos]
                    out = out.to(weights.dtype)
                    out[blocks[region]] = weights
                c0 += cs * cc
            r0 += rs * rc
        maps[f"regions {s}x{s}"] = out.reshape(size)
    return PixelWeights("", query, size, maps, True)


def psanet_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """PSANet collect / distribute: column ``i`` of the (source, target) attention on the shrunk grid,
    with the bilinear resize of the output (target side) and of the reduced input (source side)."""
    grid = shrunk_size(size, module.shrink_factor)
    maps: Dict[str, Tensor] = {}
    for kind in module.kinds:
        attn = factors[kind][0]
        if module.shrink_factor == 1:
            coeff = _onehot(_flat(query, size[1]), grid[0] * grid[1], attn)
            row = attn @ coeff
        else:
            coeff = upsampling_matrix(size, grid, True, attn.device, attn.dtype)[_flat(query, size[1])]
            shrink = upsampling_matrix(grid, size, True, attn.device, attn.dtype)  # (N', N)
            row = (attn @ coeff) @ shrink
        maps[kind] = row.reshape(size) / module.normalization_factor
    convex = module.psa_softmax and module.normalization_factor == 1.0
    return PixelWeights("", query, size, maps, convex)


# ----- sparse -----------------------------------------------------------------------------------
def criss_cross_transpose(u: Tensor, attn: Tensor) -> Tensor:
    """``u^T A`` for one criss-cross attention ``attn`` (H, W, H + W) and a pixel vector ``u`` (H, W):
    the adjoint of ``criss_cross_aggregate``, so rows compose without an N x N matrix."""
    height = u.shape[0]
    col = torch.einsum("yx,yxi->ix", u, attn[..., :height])
    row = torch.einsum("yx,yxj->yj", u, attn[..., height:])
    return col + row


def ccnet_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """CCNet: the query's criss-cross row after one recurrence, and the rows of the composed
    operators ``A_R ... A_1`` (R = 2 reaches every pixel). The first map is ``A_1``'s row."""
    maps: Dict[str, Tensor] = {}
    first = factors["attention_0"][0]
    u = torch.zeros(size, dtype=first.dtype, device=first.device)
    u[query] = 1.0
    maps["R=1"] = criss_cross_transpose(u, first)
    for r in range(1, module.recurrence):
        u = torch.zeros_like(u)
        u[query] = 1.0
        for t in range(r, -1, -1):
            u = criss_cross_transpose(u, factors[f"attention_{t}"][0])
        maps[f"R={r + 1}"] = u
    return PixelWeights("", query, size, maps, True)


def isa_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """ISA: the short-range row of the query and the composed long-then-short operator (every pixel
    reached), on the padded grid cropped back to the image (padded relays keep their mass)."""
    factor = module.down_factor
    left, right, top, bottom = padding_for(size, factor)
    padded = (size[0] + top + bottom, size[1] + left + right)
    short, long = factors["short"][0], factors["long"][0]
    index = _index_map(padded, short.device)
    q = _flat((query[0] + top, query[1] + left), padded[1])
    members_s = group_short(index, factor)[0, :, :, 0].long()  # (groups, l)
    hit = (members_s == q).nonzero()
    group, pos = int(hit[0, 0]), int(hit[0, 1])
    u = torch.zeros(padded[0] * padded[1], dtype=short.dtype, device=short.device)
    u[members_s[group]] = short[group, pos]
    members_l = group_long(index, factor)[0, :, :, 0].long()  # (groups, g)
    composed = torch.zeros_like(u)
    composed[members_l.reshape(-1)] = torch.einsum("gb,gbc->gc", u[members_l], long).reshape(-1)

    def crop(t: Tensor) -> Tensor:
        return t.reshape(padded)[top:top + size[0], left:left + size[1]]

    return PixelWeights("", query, size, {"short": crop(u), "long then short": crop(composed)}, True)


def _window_map(weights: Tensor, centre: Pair, size: Pair, kernel: int, dilation: int = 1) -> Tensor:
    """Place k^2 window weights (row-major offsets) around ``centre``; taps outside the map are dropped."""
    out = torch.zeros(size, dtype=weights.dtype, device=weights.device)
    for t, (dy, dx) in enumerate(window_offsets(kernel, dilation)):
        y, x = centre[0] + dy, centre[1] + dx
        if 0 <= y < size[0] and 0 <= x < size[1]:
            out[y, x] += weights[t]
    return out


def local_relation_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """Local Relation: the query's k x k softmax window, averaged over the channel groups."""
    w = factors["weights"][0, :, :, query[0], query[1]].mean(0)
    return PixelWeights("", query, size, {f"{module.kernel_size}x{module.kernel_size} window":
                                          _window_map(w, query, size, module.kernel_size)}, True)


def _splat(out: Tensor, y: float, x: float, value: Tensor) -> None:
    """Bilinear splat of ``value`` at real (y, x) onto ``out`` (H, W); taps outside are dropped."""
    y0, x0 = math.floor(y), math.floor(x)
    fy, fx = y - y0, x - x0
    for yy, wy in ((y0, 1.0 - fy), (y0 + 1, fy)):
        for xx, wx in ((x0, 1.0 - fx), (x0 + 1, fx)):
            if 0 <= yy < out.shape[0] and 0 <= xx < out.shape[1] and wy * wx != 0.0:
                out[yy, xx] += wy * wx * value


def dgmn_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """DGMN: per dilation, the k^2 sampled neighbours (deformable offsets, bilinear) with their weights
    (softmax filter times sigmoid affinity, averaged over groups): not a convex combination."""
    maps: Dict[str, Tensor] = {}
    qy, qx = query
    for d in module.dilations:
        w = factors[f"weights_d{d}"][0, :, :, qy, qx].mean(0)
        off = factors[f"offsets_d{d}"][0, :, qy, qx]
        out = torch.zeros(size, dtype=w.dtype, device=w.device)
        for s, (dy, dx) in enumerate(window_offsets(module.kernel_size, d)):
            _splat(out, qy + dy + float(off[2 * s]), qx + dx + float(off[2 * s + 1]), w[s])
        maps[f"dilation {d}"] = out
    return PixelWeights("", query, size, maps, False)


def carafe_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """CARAFE: the reassembly kernel of output pixel ``query`` on the source grid (k x k around
    ``query // s``), averaged over groups. ``query`` is on the upsampled grid; ``size`` the source."""
    kernels = factors["kernels"][0, :, :, query[0], query[1]].mean(0)
    s = module.scale_factor
    centre = (query[0] // s, query[1] // s)
    return PixelWeights("", query, size, {"reassembly kernel": _window_map(kernels, centre, size, module.up_kernel)},
                        True)


# ----- low-rank ---------------------------------------------------------------------------------
def _operator_row(rev: Tensor, map_: Tensor, size: Pair, query: Pair) -> Tensor:
    """Row ``query`` of ``M_rev M_map``: (N, K) x (K, N) -> (H, W) without the N x N matrix."""
    return (rev[0, _flat(query, size[1])] @ map_[0]).reshape(size)


CONVEX_LOWRANK = ("ema", "a2", "graphrep")


def lowrank_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """A2, EMA, GloRe, Beyond Grids, SGR: the row of ``M_rev M_map`` (EMA: ``Z (Z D^-1)^T``)."""
    row = _operator_row(factors["reverse"], factors["map"], size, query)
    return PixelWeights("", query, size, {"M_rev M_map": row}, registered_name(module) in CONVEX_LOWRANK)


def latentgnn_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """LatentGNN: one operator row per latent kernel (l2-normalised maps, not convex)."""
    maps = {f"kernel {i} ({d} latents)": _operator_row(factors[f"reverse_{i}"], factors[f"map_{i}"], size, query)
            for i, d in enumerate(module.latent_dims)}
    return PixelWeights("", query, size, maps, False)


def apcnet_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """APCNet: per scale s, the sigmoid affinity of the pixel to the s x s cells times the pooling."""
    maps: Dict[str, Tensor] = {}
    for s in module.pool_scales:
        alpha = factors[f"affinity_{s}"][0, _flat(query, size[1])]
        maps[f"scale {s}"] = (alpha @ pooling_matrix(size, (s, s), alpha.device, alpha.dtype)).reshape(size)
    return PixelWeights("", query, size, maps, False)


def cgnl_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """CGNL: every (channel, pixel) of a group is a position; the map is the weight of value pixel j
    for the query pixel, averaged over query channels and groups, summed over value channels."""
    b, g = factors["theta"].shape[:2]
    n = size[0] * size[1]
    theta = factors["theta"][0].reshape(g, -1, n)  # (G, A, N)
    phi = factors["phi"][0].reshape(g, -1, n)
    t_q = theta[:, :, _flat(query, size[1])]  # (G, A)
    if module.kernel == "dot":
        scale = 1.0 / (theta.shape[1] * n) ** 0.5 if module.use_scale else 1.0
        per = t_q.mean(1)[:, None] * phi.sum(1) * scale  # (G, N)
    else:
        coeff = torch.tensor(taylor_coefficients(module.order, module.gamma), dtype=theta.dtype, device=theta.device)
        tp = torch.stack([t_q**p for p in range(module.order + 1)], -1)  # (G, A, P+1)
        pp = torch.stack([phi**p for p in range(module.order + 1)], -1)  # (G, B, N, P+1)
        if module.exact_beta:
            tp = tp * torch.exp(-module.gamma * t_q * t_q)[..., None]
            pp = pp * torch.exp(-module.gamma * phi * phi)[..., None]
        else:
            coeff = coeff * torch.exp(torch.tensor(-2.0 * module.gamma, dtype=theta.dtype))
        per = torch.einsum("gap,gbnp,p->gn", tp, pp, coeff) / tp.shape[1]
    return PixelWeights("", query, size, {f"{module.kernel} kernel": per.mean(0).reshape(size)}, False)


def ppm_weights(module: nn.Module, factors: Attention, size: Pair, query: Pair) -> PixelWeights:
    """PSPNet pyramid pooling: per bin b, the fixed row ``U_b P_b`` (pooling, then bilinear upsampling)."""
    ref = next(iter(factors.values()))
    maps = {}
    for b in module.bins:
        up = upsampling_matrix(size, (b, b), module.align_corners, ref.device, torch.float32)[_flat(query, size[1])]
        maps[f"bin {b}"] = (up @ pooling_matrix(size, (b, b), ref.device, torch.float32)).reshape(size)
    return PixelWeights("", query, size, maps, True)


Family = Callable[..., PixelWeights]
FAMILIES: Dict[str, Family] = {
    "nonlocal": nonlocal_weights, "nonlocal_gaussian": nonlocal_weights, "nonlocal_dot": nonlocal_weights,
    "nonlocal_concat": nonlocal_weights, "danet_pam": danet_weights, "danet": danet_weights,
    "danet_cam": danet_weights, "ocnet_base": ocnet_weights, "ocnet_asp": ocnet_weights,
    "ann_apnb": ocnet_weights, "ann_afnb": ocnet_weights, "ocnet_pyramid": ocnet_pyramid_weights,
    "psanet": psanet_weights, "ccnet": ccnet_weights, "isa": isa_weights,
    "local_relation": local_relation_weights, "dgmn": dgmn_weights, "carafe": carafe_weights,
    "ema": lowrank_weights, "a2": lowrank_weights, "glore": lowrank_weights, "graphrep": lowrank_weights,
    "sgr": lowrank_weights, "latentgnn": latentgnn_weights, "apcnet": apcnet_weights, "cgnl": cgnl_weights,
    "ppm": ppm_weights,
}


def own_weight_maps(name: str) -> bool:
    """Whether the registered module ``name`` reads its own weights off (a ``weight_maps`` method beside it)."""
    registry = MODULES if name in MODULES else UPSAMPLERS if name in UPSAMPLERS else None
    return registry is not None and callable(getattr(registry.get(name), "weight_maps", None))


def supports_pixel_weights(name: str) -> bool:
    return (name in FAMILIES and name != "danet_cam") or own_weight_maps(name)


def with_weights() -> List[str]:
    """Registered modules (and upsamplers) that have per-pixel weight maps."""
    return sorted(n for n in set(MODULES.list()) | set(UPSAMPLERS.list()) if supports_pixel_weights(n))


def extra_inputs(module: nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """The inputs a module's forward received beyond the feature map, by name (ANN AFNB's ``low``, OCR's
    ``regions``), from the positional and keyword arguments of one call."""
    bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
    return {k: v for k, v in list(bound.arguments.items())[1:] if k != "return_attention" and v is not None}


def run_with_attention(module: nn.Module, x: Tensor, **kwargs: Any) -> Attention:
    """Eval-mode, no-grad ``module(x, return_attention=True)`` factors (training flag restored)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(x, return_attention=True, **kwargs)
    finally:
        module.train(was_training)
    return out[1]


def pixel_weights(module: nn.Module, x: Tensor, query: Pair, factors: Mapping[str, Tensor] | None = None,
                  **kwargs: Any) -> PixelWeights:
    """Effective weights of pixel ``query`` = (y, x) for ``module`` on ``x`` (1, C, H, W).

    ``factors``: reuse the output of :func:`run_with_attention` (several queries, one forward);
    ``kwargs`` go to the forward (ANN's AFNB ``low=``). Raises :class:`NoAttentionError` for modules
    without per-pixel weights (ASPP, DANet CAM) and ValueError for a query outside the map.
    """
    name = registered_name(module)
    if name not in FAMILIES and not own_weight_maps(name):
        raise NoAttentionError(f"{name} has no per-pixel attention weights to show (fixed convolutions / pooling); "
                               f"modules with weights: {', '.join(with_weights())}")
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"pixel_weights expects one feature map of shape (1, C, H, W), got {tuple(x.shape)}")
    size: Pair = (int(x.shape[2]), int(x.shape[3]))
    qsize = size
    if name == "carafe":
        qsize = (size[0] * module.scale_factor, size[1] * module.scale_factor)
    query = check_query(query, qsize, "upsampled map" if name == "carafe" else "feature map")
    if name == "danet_cam":
        raise NoAttentionError("danet_cam attends over channels, not pixels: use segattn.viz.channel_attention()")
    found = dict(factors) if factors is not None else run_with_attention(module, x, **kwargs)
    if own_weight_maps(name):  # the module family reads its weights off itself (see its ``weight_maps``)
        maps, convex = module.weight_maps(found, size, query)
        result = PixelWeights(name, query, size, dict(maps), bool(convex))
    elif name == "ann_afnb" and kwargs.get("low") is not None:
        result = ocnet_weights(module, found, size, query, tuple(kwargs["low"].shape[-2:]))
    else:
        result = FAMILIES[name](module, found, size, query)
    result.name = name
    return result


# ----- other pictures ---------------------------------------------------------------------------
def channel_attention(module: nn.Module, x: Tensor) -> Tensor:
    """DANet CAM (alone or in ``danet``): the (C, C) channel attention, row c = the channels that
    channel c gathers from (softmax rows)."""
    name = registered_name(module)
    if name not in ("danet_cam", "danet"):
        raise NoAttentionError(f"{name} has no channel attention (only danet_cam and danet do)")
    factors = run_with_attention(module, x)
    return factors["channel_attention" if name == "danet" else "attention"][0]


def em_responsibilities(module: nn.Module, x: Tensor) -> List[Tensor]:
    """EMANet: the responsibilities Z (K, H, W) after each of the T EM iterations (E-steps), from the
    module's bases buffer, as the forward runs them (``segattn.lowrank`` ``em_step``)."""
    from segattn.lowrank.functional import flatten
    from segattn.lowrank.mappers import em_step
    from segattn.ops.attention import upcast

    if registered_name(module) != "ema":
        raise NoAttentionError(f"EM responsibilities exist only for ema, not {registered_name(module)}")
    mapper = module.block.mapper
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            h = upcast(flatten(module.conv_in(x)))
            mu = upcast(mapper.bases).to(h.dtype).unsqueeze(0).expand(h.shape[0], -1, -1)
            out = []
            for _ in range(mapper.num_stages):
                z, _, mu = em_step(h, mu, mapper.kernel_scale, mapper.l2norm, mapper.eps)
                out.append(z[0].transpose(0, 1).reshape(-1, x.shape[2], x.shape[3]))
    finally:
        module.train(was_training)
    return out


def base_similarity(module: nn.Module, x: Tensor) -> Tensor:
    """EMANet: cosine similarity (K, K) of the final bases ``mu`` for input ``x``."""
    if registered_name(module) != "ema":
        raise NoAttentionError(f"base similarity exists only for ema, not {registered_name(module)}")
    mu = run_with_attention(module, x)["nodes"][0]
    mu = mu / mu.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return mu.transpose(0, 1) @ mu


ASSIGNMENT_KEYS = {"ema": "reverse", "a2": "reverse", "glore": "reverse", "graphrep": "reverse", "sgr": "reverse",
                   "latentgnn": "reverse_0"}


def node_assignments(module: nn.Module, x: Tensor) -> Tensor:
    """Low-rank modules: each pixel's weights over the K nodes / bases, ``M_rev`` as (K, H, W)
    (EMA's responsibilities Z, A2's distribution softmax, GloRe's B, SGR's compatibility, ...)."""
    name = registered_name(module)
    if name not in ASSIGNMENT_KEYS:
        raise NoAttentionError(f"{name} has no node assignment (low-rank modules: {', '.join(sorted(ASSIGNMENT_KEYS))})")
    rev = run_with_attention(module, x)[ASSIGNMENT_KEYS[name]][0]
    return rev.transpose(0, 1).reshape(-1, x.shape[2], x.shape[3])


__all__ = [
    "PixelWeights", "NoAttentionError", "pixel_weights", "run_with_attention", "registered_name", "check_query",
    "channel_attention", "em_responsibilities", "base_similarity", "node_assignments", "supports_pixel_weights",
    "criss_cross_transpose", "FAMILIES", "CONVEX_LOWRANK", "own_weight_maps", "with_weights", "extra_inputs",
]
