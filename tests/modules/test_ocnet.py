"""OCNet identities and region bookkeeping in float64."""

from __future__ import annotations

import pytest
import torch

import segattn
from segattn.bench.tensors import LargestTensorRecorder
from segattn.modules.ocnet import region_attention
from segattn.ops.attention import reference_attention
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

C = 8
D64 = torch.float64
NAMES = ["ocnet_base", "ocnet_pyramid", "ocnet_asp"]


def build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(segattn.create_module(name, C, **kwargs)).to(D64).eval()


def test_base_shared_key_query_gives_reversible_attention():
    module = build("ocnet_base")
    x = torch.randn(1, C, 3, 4, dtype=D64)
    _, f = module(x, return_attention=True)
    q, k, _ = module.attention.project(x)
    assert k is q
    tokens = q.flatten(2)[0].T
    logits = tokens @ tokens.T * module.attention.key_channels**-0.5
    a = f["attention"][0]
    torch.testing.assert_close(a, torch.softmax(logits, dim=-1), atol=1e-12, rtol=0)
    d = logits.exp().sum(-1)
    torch.testing.assert_close(d[:, None] * a, (d[:, None] * a).T, atol=1e-10, rtol=1e-10)
    assert torch.linalg.eigvals(a).imag.abs().max() < 1e-10


@pytest.mark.parametrize("name", NAMES)
def test_fresh_context_is_zero(name):
    torch.manual_seed(0)
    module = segattn.create_module(name, C).to(D64).eval()
    x = torch.randn(2, C, 5, 6, dtype=D64)
    y, f = module(x, return_attention=True)
    if name == "ocnet_pyramid":
        zero = torch.zeros(2, C, 5, 6, dtype=D64)
        expected = module.bottleneck(torch.cat([module.lift(x)] + [zero] * len(module.sizes), dim=1))
        torch.testing.assert_close(y, expected, atol=0, rtol=0)
    else:
        assert torch.count_nonzero(f["context"]) == 0
    if name == "ocnet_base":
        torch.testing.assert_close(y, module.bottleneck(torch.cat([torch.zeros_like(x), x], 1)), atol=0, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_fused_equals_naive(name):
    module = build(name)
    x = torch.randn(2, C, 7, 6, dtype=D64)
    with torch.no_grad():
        fused = module(x)
        with reference_attention():
            naive = module(x)
    torch.testing.assert_close(fused, naive, atol=1e-10, rtol=1e-10)


def _naive_regions(q, k, v, s, scale):
    """OCNet's loop over regions (last row/column absorbs the remainder)."""
    out = torch.zeros(v.shape, dtype=v.dtype)
    h, w = q.shape[2:]
    sh, sw = max(h // s, 1), max(w // s, 1)
    ns_h, ns_w = (s if h >= s else 1), (s if w >= s else 1)
    for i in range(ns_h):
        for j in range(ns_w):
            r0, r1 = i * sh, (h if i == ns_h - 1 else (i + 1) * sh)
            c0, c1 = j * sw, (w if j == ns_w - 1 else (j + 1) * sw)
            qi, ki, vi = (t[:, :, r0:r1, c0:c1].flatten(2) for t in (q, k, v))
            a = torch.softmax(qi.transpose(1, 2) @ ki * scale, dim=-1)
            out[:, :, r0:r1, c0:c1] = (vi @ a.transpose(1, 2)).view(v.shape[0], v.shape[1], r1 - r0, c1 - c0)
    return out


@pytest.mark.parametrize("size", [(7, 5), (6, 6), (2, 7), (1, 1)])
@pytest.mark.parametrize("s", [1, 2, 3, 6])
def test_region_attention_matches_loop_over_regions(size, s):
    q, k = torch.randn(2, 3, *size, dtype=D64), torch.randn(2, 3, *size, dtype=D64)
    v = torch.randn(2, 4, *size, dtype=D64)
    torch.testing.assert_close(region_attention(q, k, v, s, 0.5), _naive_regions(q, k, v, s, 0.5), atol=1e-12, rtol=0)


def test_pyramid_stage_is_block_diagonal():
    q, k, v = (torch.randn(1, 3, 6, 6, dtype=D64, requires_grad=True) for _ in range(3))
    region_attention(q, k, v, 2, 1.0)[0, :, 1, 1].sum().backward()
    touched = v.grad.abs().sum((0, 1)) > 0
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[:3, :3] = True
    assert torch.equal(touched, expected)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (6, 6), (1, 7)])
def test_pooled_base_and_asp(size, ceil_mode):
    for name, kwargs in (("ocnet_base", {"pool_scale": 2}), ("ocnet_asp", {})):
        module = build(name, ceil_mode=ceil_mode, **kwargs)
        x = torch.randn(1, C, *size, dtype=D64)
        y, f = module(x, return_attention=True)
        if ceil_mode:
            n = ((size[0] + 1) // 2) * ((size[1] + 1) // 2)
        else:  # official floor; a side shorter than 2 is one window
            n = max(1, size[0] // 2) * max(1, size[1] // 2)
        assert y.shape == (1, C, *size) and f["attention"].shape == (1, n, n)
        assert module.flops(*size) == count_macs(module, x)


def test_asp_floor_pooling_drops_the_last_odd_row_as_official():
    """Official asp_oc_block: nn.MaxPool2d(2) (floor): on a 5x5 map the last row/column never enter."""
    module = build("ocnet_asp").eval()
    x = torch.randn(1, C, 5, 5, dtype=D64)
    feats = module.context_in(x)
    pooled = module.attention._pool(feats)
    torch.testing.assert_close(pooled, torch.nn.functional.max_pool2d(feats, 2))  # floor: 2x2
    assert pooled.shape[-2:] == (2, 2)
    assert build("ocnet_asp", ceil_mode=True).attention._pool(feats).shape[-2:] == (3, 3)


def test_compile_fullgraph_pyramid():
    module = build("ocnet_pyramid").float()
    x = torch.randn(1, C, 7, 5)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), module(x))


@pytest.mark.parametrize("name", ["ocnet_base", "ocnet_pyramid"])
def test_fused_path_never_materialises_n_by_n(name):
    module = build(name).float().train()
    x = torch.randn(1, C, 24, 24, requires_grad=True)
    with LargestTensorRecorder() as mode:
        module(x).sum().backward()
    assert mode.largest < 24**4 // 8
