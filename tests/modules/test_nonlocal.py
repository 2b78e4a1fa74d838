"""Non-local identities (spec 1.5) in float64, beyond the registry-wide contract."""

from __future__ import annotations

import pytest
import torch

import segattn
from segattn.bench.tensors import LargestTensorRecorder
from segattn.modules import nonlocal_
from segattn.ops.attention import linear_attention, reference_attention
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

C = 8
NAMES = ["nonlocal", "nonlocal_gaussian", "nonlocal_dot", "nonlocal_concat"]
D64 = torch.float64


def build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(segattn.create_module(name, C, **kwargs)).to(D64).eval()


def test_shared_qk_symmetric_logits_and_reversible_attention():
    module = build("nonlocal", shared_qk=True)
    x = torch.randn(1, C, 3, 4, dtype=D64)
    _, f = module(x, return_attention=True)
    logits = f["query"][0] @ f["key"][0].T * module.scale
    torch.testing.assert_close(logits, logits.T, atol=1e-12, rtol=0)
    a = f["attention"][0]
    d = logits.exp().sum(-1)
    da = d[:, None] * a
    torch.testing.assert_close(da, da.T, atol=1e-10, rtol=1e-10)
    assert torch.linalg.eigvals(a).imag.abs().max() < 1e-10
    pi = d / d.sum()
    torch.testing.assert_close(pi @ a, pi, atol=1e-12, rtol=0)


def test_separate_qk_is_not_reversible():
    module = build("nonlocal")
    x = torch.randn(1, C, 3, 4, dtype=D64)
    _, f = module(x, return_attention=True)
    logits = f["query"][0] @ f["key"][0].T * module.scale
    da = logits.exp().sum(-1)[:, None] * f["attention"][0]
    assert (da - da.T).abs().max() > 1e-3


def test_dot_linear_attention_equals_quadratic_form():
    module = build("nonlocal_dot")
    x = torch.randn(2, C, 5, 6, dtype=D64)
    y, f = module(x, return_attention=True)
    torch.testing.assert_close(module(x), y, atol=1e-12, rtol=0)
    expected = f["query"] @ f["key"].transpose(1, 2) / f["key"].shape[1]
    torch.testing.assert_close(f["attention"], expected, atol=1e-12, rtol=0)
    quadratic = f["attention"] @ f["value"]
    linear = linear_attention(f["query"], f["key"], f["value"])
    torch.testing.assert_close(linear, quadratic, atol=1e-10, rtol=1e-10)
    # the default path really is linear: the counter sees (N + M) C' C_v products, not N M C'
    assert count_macs(module, x[:1], reference=False) == module.flops(5, 6)
    n, c = 64 * 64, module.key_channels
    assert build("nonlocal").flops(64, 64) - module.flops(64, 64) > n * n * c


def test_dot_shared_qk_operator_is_symmetric_psd():
    module = build("nonlocal_dot", shared_qk=True)
    _, f = module(torch.randn(1, C, 4, 4, dtype=D64), return_attention=True)
    a = f["attention"][0]
    torch.testing.assert_close(a, a.T, atol=1e-12, rtol=0)
    assert torch.linalg.eigvalsh(a).min() > -1e-12


@pytest.mark.parametrize("name", NAMES)
def test_fresh_module_is_identity(name):
    torch.manual_seed(0)
    module = segattn.create_module(name, C, sub_sample=True)
    x = torch.randn(2, C, 5, 7)
    for train in (True, False):
        module.train(train)
        assert torch.equal(module(x), x)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sub_sample", [False, True])
def test_fused_equals_naive(name, sub_sample):
    kwargs = {"sub_sample": sub_sample}
    if name != "nonlocal_gaussian":
        kwargs["shared_qk"] = sub_sample
    module = build(name, **kwargs)
    x = torch.randn(2, C, 7, 5, dtype=D64)
    with torch.no_grad():
        fused = module(x)
        with reference_attention():
            naive = module(x)
    torch.testing.assert_close(fused, naive, atol=1e-10, rtol=1e-10)
    assert (fused - x).abs().max() > 1e-3, "context path is off; the comparison would be vacuous"


def test_gaussian_is_embedded_gaussian_with_identity_embedding():
    gauss = build("nonlocal_gaussian")
    emb = build("nonlocal", reduction=1, value_channels=gauss.value_channels, use_scale=False)
    with torch.no_grad():
        for conv in (emb.theta, emb.phi):
            conv.weight.copy_(torch.eye(C, dtype=D64).view(C, C, 1, 1))
            conv.bias.zero_()
    emb.g.load_state_dict(gauss.g.state_dict())
    emb.conv_out.load_state_dict(gauss.conv_out.state_dict())
    emb.norm.load_state_dict(gauss.norm.state_dict())
    x = torch.randn(2, C, 4, 5, dtype=D64)
    torch.testing.assert_close(emb(x), gauss(x), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(1, 1), (1, 4), (5, 7)])
def test_sub_sample_keys_and_flops(name, size):
    module = build(name, sub_sample=True)
    x = torch.randn(1, C, *size, dtype=D64)
    y, f = module(x, return_attention=True)
    assert y.shape == x.shape
    h, w = size
    assert f["key"].shape[1] == ((h + 1) // 2) * ((w + 1) // 2) == f["attention"].shape[-1]
    assert module.flops(*size) == count_macs(module, x)


@pytest.mark.parametrize("name", ["nonlocal", "nonlocal_dot", "nonlocal_concat"])
def test_shared_qk_flops(name):
    module = build(name, shared_qk=True)
    x = torch.randn(1, C, 6, 5, dtype=D64)
    assert module.flops(6, 5) == count_macs(module, x)
    assert module.phi is None


def test_concat_chunks_match_explicit_pairwise_function(monkeypatch):
    module = build("nonlocal_concat")
    x = torch.randn(2, C, 5, 6, dtype=D64)
    full, f = module(x, return_attention=True)
    monkeypatch.setattr(nonlocal_, "CONCAT_CHUNK_ELEMENTS", 7)  # many uneven query chunks
    torch.testing.assert_close(module(x), full, atol=1e-12, rtol=0)
    q, k = f["query"], f["key"]
    n, m = q.shape[1], k.shape[1]
    pairs = torch.cat([q[:, :, None].expand(-1, -1, m, -1), k[:, None].expand(-1, n, -1, -1)], dim=-1)
    explicit = torch.relu(pairs @ module.concat_weight[:, 0]) / m  # (B, N, M) via the N x M x 2C' tensor
    torch.testing.assert_close(f["attention"], explicit, atol=1e-12, rtol=0)


def test_compile_fullgraph():
    module = build("nonlocal_concat", sub_sample=True).float()
    x = torch.randn(1, C, 5, 7)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), module(x))


@pytest.mark.parametrize("name", ["nonlocal", "nonlocal_gaussian", "nonlocal_dot"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_path_never_materialises_n_by_n(name, channels_last):
    module = build(name).float().train()
    x = torch.randn(1, C, 24, 24, requires_grad=True)
    if channels_last:
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    with LargestTensorRecorder() as mode:
        module(x).sum().backward()
    assert mode.largest < 24**4 // 8, f"an op produced {mode.largest} elements (N x N = {24**4})"
    if name == "nonlocal_dot":
        return  # linear attention has no quadratic path at all
    with LargestTensorRecorder() as mode, reference_attention():
        module(x).sum().backward()
    assert mode.largest >= 24**4  # the check can fail: the naive path does materialise it


def test_concat_materialises_only_chunks(monkeypatch):
    monkeypatch.setattr(nonlocal_, "CONCAT_CHUNK_ELEMENTS", 24**4 // 16)
    module = build("nonlocal_concat").float().train()
    with LargestTensorRecorder() as mode:
        module(torch.randn(1, C, 24, 24, requires_grad=True)).sum().backward()
    assert mode.largest <= 24**4 // 16


def test_concat_chunked_matches_naive_and_saves_no_n_by_m(monkeypatch):
    """The chunked concat aggregation (forward and its own backward) equals the materialised formula, and
    autograd keeps no tensor of the N x M map for the backward."""
    from segattn.bench.tensors import LargestTensorRecorder
    from segattn.modules import nonlocal_ as nl

    monkeypatch.setattr(nl, "CONCAT_CHUNK_ELEMENTS", 7 * 11)  # several chunks, the last one partial
    a = torch.randn(2, 1, 30, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 1, 1, 11, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 1, 11, 5, dtype=torch.float64, requires_grad=True)
    naive = torch.matmul(torch.relu(a + b) / 11, v)
    torch.testing.assert_close(nl.ConcatAggregate.apply(a, b, v), naive, atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(nl.ConcatAggregate.apply, (a, b, v))
    with LargestTensorRecorder() as rec:
        nl.ConcatAggregate.apply(a, b, v).sum().backward()
    assert rec.largest_saved <= max(a.numel(), v.numel())  # only a, b, v are saved, never a chunk of the map
    assert rec.largest < 2 * 30 * 11  # nothing as large as the whole map, forward or backward
