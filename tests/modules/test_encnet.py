"""EncNet's encoding module: a global, query-independent channel gate (spec successors A.5 (5b))."""

from __future__ import annotations

import torch

import segattn
from segattn.modules.encnet import Encoding
from tests.helpers import perturb_

D = torch.float64


def _enc(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(segattn.create_module("encnet", 8, num_codes=5, **kw)).double().eval()


def test_pixel_permutation_permutes_output_and_gate_is_global():
    m = _enc()
    x = torch.randn(2, 8, 5, 7, dtype=D)
    perm = torch.randperm(35)
    xp = x.flatten(2)[:, :, perm].view_as(x)
    with torch.no_grad():
        y, f = m(x, return_attention=True)
        yp, fp = m(xp, return_attention=True)
    torch.testing.assert_close(yp.flatten(2), y.flatten(2)[:, :, perm], atol=1e-12, rtol=0)
    torch.testing.assert_close(fp["gamma"], f["gamma"], atol=1e-12, rtol=0)
    # y = relu(x (1 + gamma)): one gate per channel, the same at every pixel
    torch.testing.assert_close(y, torch.relu(x * (1 + f["gamma"][:, :, None, None])), atol=1e-12, rtol=0)


def test_encoding_residuals_and_assignment():
    torch.manual_seed(0)
    enc = Encoding(4, 3).double()
    x = torch.randn(2, 4, 3, 2, dtype=D)
    e, a = enc(x)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 6, dtype=D))
    pix = x.flatten(2).transpose(1, 2)  # (B, N, C)
    for k in range(3):
        r = pix - enc.codewords.double()[k]
        logits = torch.stack([enc.scale[j] * ((pix - enc.codewords[j]) ** 2).sum(-1) for j in range(3)], -1)
        torch.testing.assert_close(a[:, :, k], torch.softmax(logits, -1)[:, :, k])
        torch.testing.assert_close(e[:, k], (a[:, :, k : k + 1] * r).sum(1))


def test_smoothing_factor_init_negative_and_codewords_small():
    enc = Encoding(16, 32)
    assert (enc.scale <= 0).all() and (enc.scale >= -1).all()
    assert enc.codewords.abs().max() <= (16 * 32) ** -0.5


def test_encode_returns_the_se_feature():
    m = _enc()
    x = torch.randn(3, 8, 4, 4, dtype=D)
    y, e, _ = m.encode(x)
    _, f = m(x, return_attention=True)
    torch.testing.assert_close(e, f["encoding"])
    assert e.shape == (3, 8) and (e >= 0).all()
