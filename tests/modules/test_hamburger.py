"""Hamburger: NMF decreases the reconstruction error, the two gradient modes, steps, bases init."""

from __future__ import annotations

import pytest
import torch

import segattn
from segattn.lowrank import MatrixDecompositionMapper
from segattn.lowrank.decomposition import nmf_coef_update
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

D = torch.float64


def _ham(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(segattn.create_module("hamburger", 8, num_bases=4, **kw)).double()


def _reconstruction_error(steps: int, z: torch.Tensor) -> float:
    torch.manual_seed(0)
    mapper = MatrixDecompositionMapper(6, 3, eval_steps=steps).double().eval()
    res = mapper(z)
    rec = res.nodes @ res.assignment
    return float((rec - z.flatten(2)).norm())


def test_nmf_error_decreases_with_iterations():
    z = torch.rand(2, 6, 5, 7, dtype=D)
    errors = [_reconstruction_error(t, z) for t in (0, 1, 3, 10, 30)]
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.8 * errors[0]


def test_nmf_factors_non_negative():
    m = _ham().eval()
    _, f = m(torch.randn(2, 8, 5, 6, dtype=D), return_attention=True)
    assert (f["nodes"] >= 0).all() and (f["reverse"] >= 0).all()
    assert f["nodes"].shape == (2, 8, 4) and f["reverse"].shape == (2, 30, 4)


def _grad(m: torch.nn.Module, x: torch.Tensor, seed: int = 3) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)  # the same random bases in both modes
    y = m(x)
    (y * torch.linspace(-1, 1, y.numel(), dtype=D).view_as(y)).sum().backward()
    return x.grad


def test_one_step_gradient_is_the_final_update_only():
    """Training with grad='one_step': the input gradient equals the gradient of the last coefficient
    update taken with the iterated bases and coefficients held fixed (official no_grad)."""
    torch.manual_seed(0)
    mapper = MatrixDecompositionMapper(6, 3, train_steps=4, grad="one_step", init="stored").double().train()
    z = torch.rand(2, 6, 15, dtype=D, requires_grad=True)
    res = mapper(z.view(2, 6, 3, 5))
    w = torch.randn(2, 6, 15, dtype=D)
    g_module, = torch.autograd.grad(((res.nodes @ res.assignment) * w).sum(), z)
    with torch.no_grad():
        bases = mapper.bases.unsqueeze(0).expand(2, -1, -1)
        coef = torch.softmax(z.transpose(1, 2) @ bases, dim=2)
        for _ in range(4):
            coef = nmf_coef_update(z, bases, coef, 1e-6)
            num, den = z @ coef, bases @ (coef.transpose(1, 2) @ coef)
            bases = bases * num / (den + 1e-6)
    zz = z.detach().requires_grad_(True)
    final = nmf_coef_update(zz, bases, coef, 1e-6)
    g_manual, = torch.autograd.grad(((bases @ final.transpose(1, 2)) * w).sum(), zz)
    torch.testing.assert_close(g_module, g_manual, atol=1e-12, rtol=1e-10)


def test_gradient_modes_differ_in_training_and_agree_in_eval():
    x = torch.randn(1, 8, 4, 5, dtype=D)
    one, full = _ham(grad="one_step"), _ham(grad="bptt")
    full.load_state_dict(one.state_dict())
    g1, g2 = _grad(one.train(), x), _grad(full.train(), x)
    assert (g1 - g2).abs().max() > 1e-4 * g2.abs().max()
    with torch.no_grad():
        torch.manual_seed(3)
        y1 = one(x)
        torch.manual_seed(3)
        y2 = full(x)
    torch.testing.assert_close(y1, y2)  # same forward, only the gradient differs
    torch.testing.assert_close(_grad(one.eval(), x), _grad(full.eval(), x))


def test_steps_train_and_eval():
    torch.manual_seed(0)
    mapper = MatrixDecompositionMapper(6, 3, train_steps=2, eval_steps=5, init="stored").double()
    z = torch.rand(1, 6, 4, 4, dtype=D)
    with torch.no_grad():
        train2 = mapper.train()(z).nodes
        eval5 = mapper.eval()(z).nodes
        mapper.eval_steps = 2
        eval2 = mapper(z).nodes
    torch.testing.assert_close(train2, eval2)
    assert (eval5 - eval2).abs().max() > 1e-6
    assert mapper.macs(4, 4, 6) == count_macs(mapper.float(), z.float())


def test_random_bases_per_training_forward_stored_in_eval():
    m = _ham().train()
    x = torch.randn(2, 8, 5, 5, dtype=D)
    with torch.no_grad():
        torch.manual_seed(1)
        a = m(x)
        b = m(x)
        torch.manual_seed(1)
        c = m(x)
        m.eval()
        e1, e2 = m(x), m(x)
        m.ham.random_eval = True
        r1, r2 = m(x), m(x)
    assert (a - b).abs().max() > 1e-6, "training forwards should draw fresh bases"
    torch.testing.assert_close(a, c)  # reproducible under a seed
    assert torch.equal(e1, e2), "eval must use the stored bases"
    assert (r1 - r2).abs().max() > 1e-6, "random_eval draws fresh bases in eval (official behaviour)"
    assert "block.mapper.bases" in m.state_dict()


def test_stored_init_is_deterministic_in_training():
    m = _ham(init="stored").train()
    x = torch.randn(1, 8, 4, 4, dtype=D)
    with torch.no_grad():
        assert torch.equal(m(x), m(x))


@pytest.mark.parametrize("method", ["vq", "cd"])
def test_other_decompositions_gradcheck_and_flops(method):
    m = _ham(method=method, eval_steps=2).eval()
    x = torch.randn(1, 8, 3, 4, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), fast_mode=True, atol=1e-6, rtol=1e-4)
    assert m.flops(7, 5) == count_macs(m.float(), torch.randn(1, 8, 7, 5))


def test_bad_arguments():
    for kw, match in (({"method": "svd"}, "method"), ({"grad": "none"}, "grad"), ({"init": "zeros"}, "init")):
        with pytest.raises(ValueError, match=match):
            segattn.create_module("hamburger", 8, **kw)
    with pytest.raises(ValueError, match="value"):
        MatrixDecompositionMapper(4, 2)(torch.rand(1, 4, 2, 2), torch.rand(1, 4, 2, 2))


def test_cd_ridge_solve_equals_the_official_inverse():
    """Official ``CD2D.compute_coef``: ``Z^T B (B^T B + beta I)^-1`` with ``torch.inverse``; segattn solves."""
    torch.manual_seed(0)
    m = MatrixDecompositionMapper(32, 8, method="cd", eval_steps=7).double().eval()
    x = torch.randn(2, 32, 60, dtype=D)
    bases, coef = m.decompose(x)
    ridge = bases.transpose(1, 2) @ bases + m.beta * torch.eye(8, dtype=D)
    official = x.transpose(1, 2) @ bases @ torch.inverse(ridge)
    assert (coef - official).abs().max() <= 1e-12 * official.abs().max()


def test_vq_and_cd_default_inverse_temperature_is_settings_py():
    """The official seg/HamNet/settings.py sets INV_T = 1 (100 is only the classes' fallback)."""
    for method in ("vq", "cd"):
        assert segattn.create_module("hamburger", 8, method=method).ham.inv_t == 1.0


def test_vq_forward_is_the_same_with_and_without_the_one_step_cut():
    """The pixel norm's detachment changes gradients only: eval and train (stored bases) forwards agree."""
    torch.manual_seed(0)
    m = MatrixDecompositionMapper(8, 3, method="vq", init="stored", train_steps=3, eval_steps=3).double()
    x = torch.randn(2, 8, 4, 5, dtype=D)
    train, test = m.train()(x), m.eval()(x)
    torch.testing.assert_close(train.map, test.map, rtol=0, atol=1e-13)
    torch.testing.assert_close(train.nodes, test.nodes, rtol=0, atol=1e-13)


@pytest.mark.parametrize("norm, kind", [("bn", torch.nn.BatchNorm2d), ("gn", torch.nn.GroupNorm)])
def test_upper_bread_norm(norm, kind):
    m = segattn.create_module("hamburger", 64, norm=norm)
    assert isinstance(m.ham_out[1], kind)
    if norm == "gn":
        assert m.ham_out[1].num_groups == 32 and m.ham_out[0].bias is None
    with pytest.raises(ValueError, match="'bn'.*'gn'"):
        segattn.create_module("hamburger", 8, norm="ln")
