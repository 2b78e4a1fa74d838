"""LatentGNN: the spec 3.12 equations written out, the symmetric PSD operator and rank bounds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import segattn
from segattn.lowrank import IdentityReasoner
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

D = torch.float64


def build(**kw):
    torch.manual_seed(0)
    return perturb_(segattn.create_module("latentgnn", 16, **kw)).double().eval()


def test_matches_spec_equations():
    m = build(latent_dims=(5, 3))
    x = torch.randn(2, 16, 4, 6, dtype=D)
    f_v2l = F.normalize(m.v2l(x), dim=1).flatten(2)  # (B, C', N)
    f_l2v = F.normalize(m.l2v(x), dim=1)
    ys = []
    for kernel in m.kernels:
        psi_v2l = F.normalize(kernel.mapper.proj(f_v2l.view_as(f_l2v)).flatten(2), dim=2)  # over pixels
        psi_l2v = F.normalize(kernel.reverse.proj(f_l2v).flatten(2), dim=1)  # over latents
        z = psi_v2l @ f_v2l.transpose(1, 2)  # (B, d, C')
        zhat = F.normalize(z, dim=2)
        z = torch.softmax(zhat @ zhat.transpose(1, 2), dim=2) @ z
        ys.append((z.transpose(1, 2) @ psi_l2v).view(2, -1, 4, 6))
    expected = x + m.gamma * m.norm(m.up(torch.cat(ys, 1)))
    torch.testing.assert_close(m(x), expected, atol=1e-10, rtol=0)


def test_symmetric_without_latent_step_is_psd_gram_operator():
    m = build(mode="symmetric", latent_dims=(4,))
    m.kernels[0].reasoner = IdentityReasoner()
    x = torch.randn(1, 16, 5, 6, dtype=D)
    _, f = m(x, return_attention=True)
    op = f["reverse_0"][0] @ f["map_0"][0]  # (N, N) = Psi^T Psi
    torch.testing.assert_close(op, op.T, atol=1e-12, rtol=0)
    assert torch.linalg.eigvalsh(op).min() > -1e-10
    fv, _ = m.visible(x)
    y = m.kernels[0](fv)
    torch.testing.assert_close(y.flatten(2)[0], fv.flatten(2)[0] @ op, atol=1e-12, rtol=0)


def test_asymmetric_operator_applied_and_not_symmetric():
    m = build(latent_dims=(3,))
    m.kernels[0].reasoner = IdentityReasoner()
    x = torch.randn(1, 16, 6, 7, dtype=D)
    _, f = m(x, return_attention=True)
    op = f["reverse_0"][0] @ f["map_0"][0]
    assert op.shape == (42, 42)
    fv, fl = m.visible(x)
    y = m.kernels[0](fv, query=fl)
    torch.testing.assert_close(y.flatten(2)[0], fv.flatten(2)[0] @ op.T, atol=1e-12, rtol=0)
    assert (op - op.T).abs().max() > 1e-6


def test_identity_at_init_and_gamma_gate():
    m = segattn.create_module("latentgnn", 16).eval()
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(m(x), x)
    perturb_(m)
    assert (m(x) - x).abs().max() > 1e-3


@pytest.mark.parametrize("kw", [{"mode": "symmetric", "latent_dims": (3, 5)}, {"graph_conv": True, "latent_dims": (4,)}])
def test_variants_gradcheck_and_flops(kw):
    m = build(**kw)
    x = torch.randn(1, 16, 3, 4, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,), fast_mode=True)
    assert m(torch.randn(2, 16, 1, 1, dtype=D)).shape == (2, 16, 1, 1)
    assert m.flops(7, 9) == count_macs(m.float(), torch.randn(1, 16, 7, 9))


def test_compile_and_export():
    m = perturb_(segattn.create_module("latentgnn", 16, latent_dims=(8,))).eval()
    x = torch.randn(2, 16, 5, 7)
    ref = m(x)
    torch.testing.assert_close(torch.compile(m, fullgraph=True, backend="eager")(x), ref)
    torch.testing.assert_close(torch.export.export(m, (x,)).module()(x), ref)


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        segattn.create_module("latentgnn", 16, mode="tied")
    with pytest.raises(ValueError, match="latent_dims"):
        segattn.create_module("latentgnn", 16, latent_dims=())
