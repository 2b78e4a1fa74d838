"""CCNet criss-cross attention: spec 1.6 identities and a naive per-pixel reference."""

from __future__ import annotations

import pytest
import torch

import segattn
from segattn.bench.tensors import LargestTensorRecorder, PeakLiveRecorder, largest_tensor
from segattn.ops.attention import softmax_attention
from tests.helpers import perturb_

C = 8


def make(recurrence: int = 1, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    module = segattn.create_module("ccnet", C, recurrence=recurrence)
    return perturb_(module).to(dtype).eval()


def naive_cca(module, x: torch.Tensor) -> torch.Tensor:
    """Per-pixel loops over the cross (self once), as in the paper."""
    q, k, v = module.query(x), module.key(x), module.value(x)
    _, _, h, w = x.shape
    out = torch.empty_like(x)
    for y in range(h):
        for xx in range(w):
            cross = [(i, xx) for i in range(h) if i != y] + [(y, j) for j in range(w)]
            keys = torch.stack([k[:, :, a, b] for a, b in cross], dim=-1)  # (B, C', H+W-1)
            vals = torch.stack([v[:, :, a, b] for a, b in cross], dim=-1)  # (B, C, H+W-1)
            attn = torch.softmax(torch.einsum("bc,bcm->bm", q[:, :, y, xx], keys), dim=-1)
            out[:, :, y, xx] = module.gamma * torch.einsum("bm,bcm->bc", attn, vals) + x[:, :, y, xx]
    return out


def test_matches_naive_loop():
    module = make()
    x = torch.randn(2, C, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(module(x), naive_cca(module, x), atol=1e-10, rtol=1e-10)


def test_attention_sums_to_one_over_cross():
    module = make()
    h, w = 5, 6
    _, maps = module(torch.randn(2, C, h, w, dtype=torch.float64), return_attention=True)
    attn = maps["attention"]
    assert attn.shape == (2, h, w, h + w)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, h, w, dtype=attn.dtype), atol=1e-12, rtol=0)
    self_col = attn[..., :h].diagonal(dim1=1, dim2=3)  # (B, W, H): entry i = y of the column branch
    assert torch.count_nonzero(self_col) == 0, "the self position must be counted once (row branch only)"
    assert torch.count_nonzero(attn) == 2 * h * w * (h + w - 1)


def test_attention_map_recovers_output():
    module = make()
    h, w = 4, 3
    x = torch.randn(1, C, h, w, dtype=torch.float64)
    y, maps = module(x, return_attention=True)
    attn, v = maps["attention"][0], module.value(x)[0]
    dense = torch.zeros(h * w, h * w, dtype=torch.float64)  # row u: weights over all N sources
    for yy in range(h):
        for xx in range(w):
            u = yy * w + xx
            for i in range(h):
                dense[u, i * w + xx] += attn[yy, xx, i]
            for j in range(w):
                dense[u, yy * w + j] += attn[yy, xx, h + j]
    expected = module.gamma * (v.reshape(C, -1) @ dense.T) + x[0].reshape(C, -1)
    torch.testing.assert_close(y[0].reshape(C, -1), expected, atol=1e-10, rtol=1e-10)


def input_grad_support(module, h: int, w: int, py: int, px: int) -> torch.Tensor:
    x = torch.randn(1, C, h, w, dtype=torch.float64, requires_grad=True)
    module(x)[0, :, py, px].sum().backward()
    return x.grad.abs().sum(1)[0] != 0


def test_one_pass_reaches_exactly_the_cross():
    module = make(recurrence=1)
    h, w, py, px = 6, 7, 2, 4
    support = input_grad_support(module, h, w, py, px)
    cross = torch.zeros(h, w, dtype=torch.bool)
    cross[py, :] = True
    cross[:, px] = True
    assert torch.equal(support, cross)


def test_two_passes_reach_every_pixel():
    module = make(recurrence=2)
    support = input_grad_support(module, 6, 7, 2, 4)
    assert bool(support.all())


def test_zero_gamma_is_identity():
    torch.manual_seed(0)
    module = segattn.create_module("ccnet", C).double().eval()
    x = torch.randn(1, C, 5, 4, dtype=torch.float64)
    assert torch.equal(module(x), x)


@pytest.mark.parametrize("size", [(7, 1), (1, 7)])
def test_degenerate_shape_equals_dense_embedded_gaussian(size):
    module = make(recurrence=1)
    x = torch.randn(2, C, *size, dtype=torch.float64)

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(2).transpose(1, 2)  # (B, N, C)

    dense = softmax_attention(flat(module.query(x)), flat(module.key(x)), flat(module.value(x)), scale=1.0)
    expected = module.gamma * dense.transpose(1, 2).reshape(x.shape) + x
    torch.testing.assert_close(module(x), expected, atol=1e-12, rtol=1e-10)


def test_weights_shared_across_recurrences():
    one = segattn.create_module("ccnet", C, recurrence=1)
    three = segattn.create_module("ccnet", C, recurrence=3)
    assert sum(p.numel() for p in one.parameters()) == sum(p.numel() for p in three.parameters())
    three.load_state_dict(perturb_(one).state_dict())
    x = torch.randn(1, C, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(three.eval()(x), one.eval()(one(one(x))))


def test_flops_formula():
    module = segattn.create_module("ccnet", 64, recurrence=2)  # C' = 8
    n, h, w = 20 * 30, 20, 30
    assert module.flops(h, w) == 2 * (n * 64 * (16 + 64) + n * (h + w) * (8 + 64))


def test_bad_arguments():
    with pytest.raises(ValueError, match="recurrence"):
        segattn.create_module("ccnet", C, recurrence=0)


def test_no_n_by_n_tensor_forward_backward():
    module = segattn.create_module("ccnet", 16).train()
    x = torch.randn(1, 16, 40, 40, requires_grad=True)
    n = 40 * 40
    rec = largest_tensor(module, x)
    assert 0 < rec.largest < n * n, rec.largest_op
    assert rec.largest <= n * 80  # the (H + W) logits per pixel
    with torch.no_grad():  # the recorder does see a dense N x N attention
        q = x.detach().flatten(2).transpose(1, 2)
        with LargestTensorRecorder() as dense:
            softmax_attention(q, q, q, return_weights=True)
    assert dense.largest >= n * n


def test_inference_frees_each_pass_weights():
    """Without ``return_attention`` a pass's (B, H, W, H + W) weights are freed before the next pass:
    at 48x48 with 16 channels they are 6 maps each, and the peak stays at 14.3 maps (20.3 if kept)."""
    module = segattn.create_module("ccnet", 16, recurrence=2).eval()
    x = torch.randn(1, 16, 48, 48)
    with torch.no_grad(), PeakLiveRecorder() as rec:
        module(x)
    assert rec.peak <= 15 * x.numel() * 4, rec.peak / (x.numel() * 4)
