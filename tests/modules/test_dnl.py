"""DNL identities (spec successors A.2) in float64, beyond the registry-wide contract."""

from __future__ import annotations

import torch

import segattn
from segattn.bench.tensors import LargestTensorRecorder
from segattn.ops.attention import reference_attention
from tests.helpers import perturb_

C = 8
D64 = torch.float64


def build(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(segattn.create_module("dnl", C, **kwargs)).to(D64).eval()


def test_decomposition_of_the_embedded_gaussian_logit_is_exact():
    """softmax_j(q_i . k_j) = softmax_j((q_i - mu_q).(k_j - mu_k) + mu_q . k_j): the j-constant terms drop."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(30, 6, generator=g, dtype=D64), torch.randn(30, 6, generator=g, dtype=D64)
    mu_q, mu_k = q.mean(0), k.mean(0)
    left = torch.softmax(q @ k.T, dim=-1)
    right = torch.softmax((q - mu_q) @ (k - mu_k).T + (mu_q @ k.T)[None], dim=-1)
    torch.testing.assert_close(left, right, atol=1e-12, rtol=0)


def test_module_attention_is_the_whitened_pairwise_softmax_and_the_unary_softmax():
    module = build()
    x = torch.randn(2, C, 4, 5, dtype=D64)
    _, f = module(x, return_attention=True)
    theta = module.theta(x).flatten(2).transpose(1, 2)
    phi = module.phi(x).flatten(2).transpose(1, 2)
    q, k = theta - theta.mean(1, keepdim=True), phi - phi.mean(1, keepdim=True)
    expected = torch.softmax(q @ k.transpose(1, 2) / (module.inter_channels**0.5 * 0.05), dim=-1)
    torch.testing.assert_close(f["attention"], expected, atol=1e-12, rtol=0)
    unary = torch.softmax(module.mask(x).flatten(1), dim=-1)
    torch.testing.assert_close(f["unary"], unary, atol=1e-12, rtol=0)


def test_whitening_removes_any_shift_of_the_query_and_key_embeddings():
    """Adding a constant vector to every q_i (or k_j) changes NL's attention, never DNL's pairwise term."""
    module = build(unary=False)
    x = torch.randn(1, C, 4, 5, dtype=D64)
    y, f = module(x, return_attention=True)
    with torch.no_grad():
        module.theta.bias.add_(3.0)
        module.phi.bias.sub_(2.0)
    y2, f2 = module(x, return_attention=True)
    torch.testing.assert_close(f2["attention"], f["attention"], atol=1e-12, rtol=0)
    torch.testing.assert_close(y2, y, atol=1e-12, rtol=0)
    plain = build(unary=False, whiten=False)
    _, p = plain(x, return_attention=True)
    with torch.no_grad():
        plain.theta.bias.add_(3.0)
    _, p2 = plain(x, return_attention=True)
    assert (p2["attention"] - p["attention"]).abs().max() > 1e-3  # the check can fail without whitening


def test_without_whitening_and_unary_it_is_the_non_local_block():
    module = build(whiten=False, unary=False, temperature=1.0)
    nl = segattn.create_module("nonlocal", C).to(D64).eval()
    nl.load_state_dict(module.state_dict())
    x = torch.randn(2, C, 5, 3, dtype=D64)
    torch.testing.assert_close(module(x), nl(x), atol=1e-12, rtol=0)


def test_unary_term_is_the_same_vector_at_every_position():
    """y = P g + 1 (u^T g): removing the pairwise term (zero value for it) leaves a constant map."""
    module = build()
    x = torch.randn(1, C, 4, 6, dtype=D64)
    _, f = module(x, return_attention=True)
    with_unary = module(x)
    module.mask = None
    no_unary = module(x)
    diff = with_unary - no_unary  # = BN scale * W_z (u^T g): constant over positions in eval mode
    torch.testing.assert_close(diff, diff[:, :, :1, :1].expand_as(diff), atol=1e-12, rtol=0)
    assert diff.abs().max() > 1e-3


def test_fused_path_equals_naive_formula_and_never_builds_n_by_n():
    module = build().float().train()
    x = torch.randn(1, C, 24, 24, requires_grad=True)
    torch.manual_seed(0)
    y = module(x)
    with reference_attention():
        y_ref = module(x)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    with reference_attention():
        (g_ref,) = torch.autograd.grad(module(x).square().sum(), x)
    torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4)
    with LargestTensorRecorder() as rec:
        module(x).sum().backward()
    assert rec.largest < 24**4 // 8, f"an op produced {rec.largest} elements (N x N = {24**4})"
    with LargestTensorRecorder() as rec, reference_attention():
        module(x).sum().backward()
    assert rec.largest >= 24**4  # the recorder sees the naive path's map: the check can fail


def test_temperature_sharpens_the_pairwise_softmax():
    x = torch.randn(1, C, 5, 5, dtype=D64)
    sharp = build(temperature=0.05)(x, return_attention=True)[1]["attention"]
    soft = build(temperature=1.0)(x, return_attention=True)[1]["attention"]
    assert sharp.max(-1).values.mean() > soft.max(-1).values.mean()


def test_official_use_out_false_form_builds_the_cited_cityscapes_block():
    """NLin_fcn (use_out False, out_bn False): bias-free C -> C value conv, no W_z, no BN, gamma init 0."""
    torch.manual_seed(0)
    m = segattn.create_module("dnl", C, use_out=False, norm=False)
    assert m.conv_out is None and m.norm is None and m.g.bias is None
    assert (m.g.in_channels, m.g.out_channels) == (C, C) and m.theta.out_channels == C // 2
    assert m.gamma.item() == 0.0 and m.flops(5, 5) > 0
    default = segattn.create_module("dnl", C)
    assert default.gamma is None and default.conv_out is not None and default.norm is not None


def test_gamma_scales_the_pairwise_term_only():
    """Z = X + gamma P g(X) + u^T g(X): linear in gamma, and at gamma 0 the unary term alone."""
    m = build(use_out=False, norm=False)
    x = torch.randn(2, C, 5, 6, dtype=D64)
    outs = []
    with torch.no_grad():
        for gamma in (0.0, 1.0, 2.0):
            m.gamma.fill_(gamma)
            outs.append(m(x))
        v = m.g(x).flatten(2)  # (B, C, N)
        u = torch.softmax(m.mask(x).flatten(2), dim=-1)  # (B, 1, N)
        unary = (v * u).sum(-1)[..., None, None]
    torch.testing.assert_close(outs[0], x + unary, atol=1e-12, rtol=0)
    torch.testing.assert_close(outs[2] - outs[0], 2 * (outs[1] - outs[0]), atol=1e-12, rtol=0)
    assert (outs[1] - outs[0]).abs().max() > 1e-3
