"""The pixel pictures are the real computation.

For every registered module (and the CARAFE upsampler) the map of ``segattn.viz.pixel_weights`` is
compared with a Jacobian probe of the module's own forward on a tiny input: the attention is frozen
(its producers' outputs recorded, then replayed), the values are replaced by a leaf tensor, and the
gradient of the query pixel's aggregated output w.r.t. those values is the effective weight map.
Also: convex (softmax) maps are >= 0 and sum to 1, CCNet R = 2 covers the whole image, bad input is
one clear error.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, List

import pytest
import torch
from torch import Tensor, nn

import segattn
from segattn.lowrank import IdentityReasoner
from segattn.modules.ccnet import criss_cross_aggregate
from segattn.viz import NoAttentionError, channel_attention, pixel_weights, run_with_attention
from segattn.viz.weights import supports_pixel_weights
from tests.helpers import perturb_

pytestmark = pytest.mark.filterwarnings("ignore:SGR without a knowledge graph")
C, H, W = 16, 16, 16
QUERY = (5, 6)
NAMES = segattn.list_modules() + ["carafe"]
WITH_WEIGHTS = [n for n in NAMES if supports_pixel_weights(n)]


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    module = segattn.create_upsampler(name, C) if name == "carafe" else segattn.create_module(name, C)
    if name == "ocr":  # fresh BN statistics and ReLUs leave most pixel-region rows exactly uniform: randomise
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
    return perturb_(module).double().eval()


def make_input(seed: int = 1) -> Tensor:
    return torch.randn(1, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----- hooks ---------------------------------------------------------------------------------------
def replace_output(module: nn.Module, make: Callable[[Tensor], Tensor], calls: List[int] | None = None):
    """Forward hook returning ``make(real output)`` on the listed calls (all calls when None)."""
    count = [0]

    def hook(_m, _args, out):
        i = count[0]
        count[0] += 1
        return make(out) if calls is None or i in calls else out

    return module.register_forward_hook(hook)


def frozen(module: nn.Module, x_run: Callable[[], None]) -> None:
    """Record ``module``'s outputs during ``x_run()``, then replay them (detached) on later calls."""
    seen: List[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _a, out: seen.append(out.detach()))
    x_run()
    handle.remove()
    count = [0]

    def replay(_m, _args, _out):
        i = count[0]
        count[0] += 1
        return seen[i % len(seen)]

    module.register_forward_hook(replay)


def capture_input(module: nn.Module, store: Dict[str, Tensor], key: str = "in"):
    return module.register_forward_pre_hook(lambda _m, args: store.__setitem__(key, args[0]))


def leaf_like(t: Tensor, seed: int = 2) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=g, dtype=t.dtype).requires_grad_(True)


def grad_of(out: Tensor, leaf: Tensor) -> Tensor:
    (g,) = torch.autograd.grad(out, leaf, retain_graph=True)
    return g


def first_channel(conv: nn.Module) -> nn.Module:
    """A bias-free 1x1 conv whose every output channel copies input channel 0 (float64)."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0] = 1.0
    return conv.double()


def value_leaf(module: nn.Module, run: Callable[[], object]) -> List[Tensor]:
    """Replace ``module``'s output by a leaf of the same shape on every call; returns the leaves."""
    leaves: List[Tensor] = []

    def make(out: Tensor) -> Tensor:
        leaves.append(leaf_like(out, seed=len(leaves) + 2))
        return leaves[-1]

    replace_output(module, make)
    run()
    return leaves


# ----- probes: one per family, each returns {label: map} -------------------------------------------
def probe(name: str, m: nn.Module, x: Tensor) -> Dict[str, Tensor]:
    qy, qx = QUERY
    store: Dict[str, Tensor] = {}
    if name.startswith("nonlocal"):
        capture_input(m.conv_out, store)
        (v,) = value_leaf(m.g, lambda: m(x))
        return {"*": grad_of(store["in"][0, 0, qy, qx], v)[0, 0]}
    if name in ("danet_pam", "danet"):
        pam = m.pam if name == "danet" else m
        out: List[Tensor] = []
        (v,) = value_leaf(pam.value, lambda: out.append(m(x)))
        return {"*": grad_of(out[0][0, 0, qy, qx], v)[0, 0] / pam.gamma.item()}
    if name in ("ocnet_base", "ocnet_asp", "ann_apnb", "ann_afnb"):
        unit = m.attention
        if unit.pool_scale == 1:  # the unit's aggregate is the input of its output conv
            capture_input(unit.out, store, "ctx")
        else:  # pooled queries: keep the unit's bilinear upsampling, drop the (channel-mixing) output conv
            unit.out = nn.Identity()
            unit.register_forward_hook(lambda _m, _a, out: store.__setitem__("ctx", out[0]))
        (v,) = value_leaf(m.attention.value, lambda: m(x))
        return {"*": grad_of(store["ctx"][0, 0, qy, qx], v)[0, 0]}
    if name == "ocnet_pyramid":
        for unit in m.stages:
            unit.out = nn.Identity()
        capture_input(m.bottleneck, store)
        made: List[Tensor] = []
        for unit in m.stages:
            replace_output(unit.value, lambda out: made.append(leaf_like(out)) or made[-1])
        m(x)
        off = len(m.sizes) * C
        return {f"regions {s}x{s}": grad_of(store["in"][0, off + i * C, qy, qx], made[i])[0, 0]
                for i, s in enumerate(m.sizes)}
    if name == "ccnet":
        # R = 1 through the real forward: x1 = gamma * A_1 value(x) + x is the input of the second query conv
        calls: List[Tensor] = []
        m.query.register_forward_pre_hook(lambda _m, args: calls.append(args[0]))
        leaves: List[Tensor] = []
        replace_output(m.value, lambda out: leaves.append(leaf_like(out)) or leaves[-1], calls=[0])
        m(x)
        one = grad_of(calls[-1][0, 0, qy, qx], leaves[-1])[0, 0] / m.gamma.item()
        # R = 2 composed: the module's own aggregation applied twice with the frozen attentions
        f = run_with_attention(m, x)
        v = leaf_like(x)
        two = criss_cross_aggregate(f["attention_1"], criss_cross_aggregate(f["attention_0"], v))
        return {"R=1": one, "R=2": grad_of(two[0, 0, qy, qx], v)[0, 0]}
    if name == "isa":
        for sub in (m.short.query, m.short.key):
            frozen(sub, lambda: m(x))
        m.long.out, m.short.value, m.short.out = nn.Identity(), nn.Identity(), nn.Identity()
        out = []
        (v,) = value_leaf(m.long.value, lambda: out.append(m(x)))
        composed = grad_of(out[0][0, 0, qy, qx], v)[0, 0]
        m.long.value._forward_hooks.clear()
        m.short.value = nn.Conv2d(C, C, 1, bias=False).double()
        out.clear()
        (v2,) = value_leaf(m.short.value, lambda: out.append(m(x)))
        return {"short": grad_of(out[0][0, 0, qy, qx], v2)[0, 0], "long then short": composed}
    if name == "psanet":
        for kind in m.kinds:
            frozen(m.branches[kind].attention, lambda: m(x))
        m.proj = nn.Identity()
        leaves = []
        for kind in m.kinds:
            replace_output(m.branches[kind].reduce, lambda out: leaves.append(leaf_like(out)) or leaves[-1])
        y = m(x)
        cm = m.mid_channels
        return {kind: grad_of(y[0, i * cm, qy, qx], leaves[i])[0, 0] for i, kind in enumerate(m.kinds)}
    if name in ("local_relation", "carafe"):
        factors = run_with_attention(m, x)
        if name == "local_relation":
            weights = m.relation_weights(x).detach()
            m.relation_weights = lambda _x: weights
            m.proj = nn.Identity()
        else:
            kernels = m.kernels(x).detach()
            m.kernels = lambda _x: kernels
        assert factors
        xl = x.clone().requires_grad_(True)
        y = m(xl)
        return {"*": grad_of(y[0, :, qy, qx].sum(), xl)[0].mean(0)}
    if name == "dgmn":
        for conv in list(m.predictors) + list(m.offset_convs):
            frozen(conv, lambda: m(x))
        capture_input(m.fuse, store)
        (v,) = value_leaf(m.reduce, lambda: m(x))
        cr = m.mid_channels
        return {f"dilation {d}": grad_of(store["in"][0, (i + 1) * cr:(i + 2) * cr, qy, qx].sum(), v)[0].mean(0)
                for i, d in enumerate(m.dilations)}
    if name in ("ema", "a2", "glore", "graphrep", "sgr", "latentgnn", "apcnet"):
        blocks = {"latentgnn": [m.kernels[0]] if name == "latentgnn" else None,
                  "apcnet": [acm.block for acm in m.acms] if name == "apcnet" else None}.get(name) or [m.block]
        calls: List[Dict[str, object]] = [{} for _ in blocks]
        handles = [block.register_forward_pre_hook(
            lambda _m, args, kwargs, c=c: c.update(args=args, kwargs=kwargs), with_kwargs=True)
            for block, c in zip(blocks, calls)]
        if name == "sgr":  # the compatibility weights read the reasoned nodes: freeze them first
            frozen(m.block.reverse.key, lambda: m(x))
        else:
            m(x)
        for h in handles:
            h.remove()
        out = {}
        for i, (block, call) in enumerate(zip(blocks, calls)):
            args, kwargs = call["args"], dict(call["kwargs"])
            block.reasoner = IdentityReasoner()
            kwargs["return_factors"] = False
            if name == "sgr":  # route node channel 0 to every output channel
                block.reverse.value = first_channel(nn.Conv1d(m.node_channels, C, 1, bias=False))
            v = leaf_like(kwargs.get("value", args[0]))
            kwargs["value"] = v
            y = block(*args, **kwargs)
            out[f"{i}"] = grad_of(y[0, 0, qy, qx], v)[0, 0]
        return out
    if name == "cgnl":
        capture_input(m.z, store)
        (v,) = value_leaf(m.g, lambda: m(x))
        return {"*": grad_of(store["in"][0, :, qy, qx].sum(), v)[0].sum(0) / m.planes}
    if name == "ppm":
        cb = m.branch_channels  # linear branches that copy input channel 0: the path is U_b P_b
        m.branches = nn.ModuleList(first_channel(nn.Conv2d(C, cb, 1, bias=False)) for _ in m.bins)
        capture_input(m.bottleneck, store)
        xl = x.clone().requires_grad_(True)
        m(xl)
        return {f"bin {b}": grad_of(store["in"][0, C + i * cb, qy, qx], xl)[0, 0] for i, b in enumerate(m.bins)}
    if name == "gcnet":  # the pooled context c = sum_j a_j x_j, attention logits frozen
        frozen(m.mask, lambda: m(x))
        capture_input(m.channel_add[0], store)
        xl = x.clone().requires_grad_(True)
        m(xl)
        return {"*": grad_of(store["in"][0, 0, 0, 0], xl)[0, 0]}
    if name == "dnl":  # y = P g + 1 u^T g: the pairwise row alone (unary branch removed), then the unary
        capture_input(m.conv_out, store)
        (v,) = value_leaf(m.g, lambda: m(x))
        total = grad_of(store["in"][0, 0, qy, qx], v)[0, 0]
        m.g._forward_hooks.clear()
        m.mask = None
        (v2,) = value_leaf(m.g, lambda: m(x))
        pairwise = grad_of(store["in"][0, 0, qy, qx], v2)[0, 0]
        return {"whitened pairwise": pairwise, "unary": total - pairwise}
    if name == "ocr":  # sum_k W_ik M_kj with delta and rho as identity, regions and relations frozen
        for sub in (m.region, m.query, m.key):
            frozen(sub, lambda: m(x))
        m.value, m.out = nn.Identity(), nn.Identity()
        capture_input(m.bottleneck, store)
        xl = x.clone().requires_grad_(True)
        m(xl)
        return {"*": grad_of(store["in"][0, 0, qy, qx], xl)[0, 0]}
    raise AssertionError(f"no probe for {name}")


def test_every_module_with_weights_has_a_probe():
    assert {"danet_cam", "aspp"} <= set(NAMES) - set(WITH_WEIGHTS)
    assert {"nonlocal", "ocr", "dnl", "gcnet", "ema", "carafe"} <= set(WITH_WEIGHTS)


@pytest.mark.parametrize("name", sorted(set(NAMES) - set(WITH_WEIGHTS) - {"danet_cam"}))
def test_module_without_weights_says_so(name):
    with pytest.raises(NoAttentionError, match="has no per-pixel attention weights"):
        pixel_weights(build(name), make_input(), QUERY)


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_picture_equals_jacobian_probe(name):
    m = build(name)
    x = make_input()
    picture = pixel_weights(m, x, QUERY)
    probed = probe(name, copy.deepcopy(m), x)
    maps = list(picture.maps.values())
    if list(probed) == ["*"] or all(k.isdigit() for k in probed):
        pairs = zip(maps, probed.values())
    else:
        assert set(probed) == set(picture.maps)
        pairs = ((picture.maps[k], probed[k]) for k in probed)
    for got, want in pairs:
        assert got.shape == want.shape
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-6, atol=1e-9)


# softmax (or other convex) weights: every map >= 0, summing to 1 over the pixels it covers
CONVEX = {"nonlocal", "nonlocal_gaussian", "danet_pam", "danet", "ocnet_base", "ocnet_asp", "ocnet_pyramid",
          "ann_apnb", "ann_afnb", "psanet", "ccnet", "isa", "local_relation", "carafe", "ema", "a2", "graphrep", "ppm",
          "gcnet", "dnl", "ocr"}


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_convex_maps_are_nonnegative_and_sum_to_one(name):
    m = build(name).float()
    picture = pixel_weights(m, make_input().float(), QUERY)  # interior query: windows lie inside the map
    assert picture.maps
    assert picture.convex == (name in CONVEX)
    for label, weights in picture.maps.items():
        assert torch.isfinite(weights).all(), label
        if picture.convex:
            assert weights.min() >= 0, label
            torch.testing.assert_close(weights.sum().double(), torch.tensor(1.0, dtype=torch.float64),
                                       rtol=1e-5, atol=1e-5)


def test_ccnet_two_recurrences_cover_the_whole_image():
    picture = pixel_weights(build("ccnet"), make_input(), QUERY)
    one, two = picture.maps["R=1"], picture.maps["R=2"]
    assert int((one > 0).sum()) == H + W - 1  # the criss-cross of the query
    assert bool((two > 0).all())


def test_isa_composed_covers_the_whole_image():
    picture = pixel_weights(build("isa"), make_input(), QUERY)
    assert bool((picture.maps["long then short"] > 0).all())


def test_danet_cam_channel_picture():
    att = channel_attention(build("danet_cam"), make_input())
    assert att.shape == (C, C)
    torch.testing.assert_close(att.sum(1), torch.ones(C, dtype=att.dtype))
    with pytest.raises(NoAttentionError, match="channels, not pixels"):
        pixel_weights(build("danet_cam"), make_input(), QUERY)


@pytest.mark.parametrize("query", [(H, 0), (0, W), (-1, 3), (2, 99)])
def test_query_outside_the_map_is_one_clear_error(query):
    with pytest.raises(ValueError, match=r"outside the 16x16 feature map") as info:
        pixel_weights(build("nonlocal"), make_input(), query)
    assert "\n" not in str(info.value)


def test_module_without_attention_is_one_clear_error():
    with pytest.raises(NoAttentionError, match="aspp has no per-pixel attention") as info:
        pixel_weights(build("aspp"), make_input(), QUERY)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="not a registered context module"):
        pixel_weights(nn.Conv2d(C, C, 1), make_input().float(), QUERY)
