"""EMANet unit: EM identities (spec 1.2-1.4), bases maintenance (spec 5.3), distributed update, compile."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import segattn
from segattn.bench.tensors import PeakLiveRecorder
from segattn.lowrank import EMMapper, call_step_hooks, em_step
from segattn.modules.ema import EMAttention
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

D = torch.float64


def make(c: int = 8, **kw) -> EMAttention:
    torch.manual_seed(0)
    return EMAttention(c, **kw)


def test_defaults_and_bases_init():
    m = segattn.create_module("ema", 16)
    assert m.bases.shape == (16, 64) and m.block.mapper.num_stages == 3
    assert "block.mapper.bases" in m.state_dict() and not any(n.endswith("bases") for n, _ in m.named_parameters())
    torch.testing.assert_close(m.bases.norm(dim=0), torch.ones(64), atol=1e-5, rtol=0)
    assert not m.conv_in.weight.requires_grad
    assert segattn.create_module("ema", 16, backprop_through_em=True).conv_in.weight.requires_grad


def test_t_stages_equal_t_repetitions_of_one_stage():
    x = torch.randn(2, 8, 5, 7, dtype=D)
    full = EMMapper(8, 6, 3).double().eval()
    one = EMMapper(8, 6, 1).double().eval()
    res = full(x)
    mu = full.bases
    for _ in range(3):
        step = one(x, bases=mu)
        mu = step.nodes
    for a, b in zip((res.map, res.nodes, res.assignment), (step.map, step.nodes, step.assignment)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    # and the explicit formula of one stage
    z, zbar, mu1 = em_step(x.reshape(2, 8, 35), full.bases.expand(2, -1, -1), 1.0, True, 1e-6)
    torch.testing.assert_close(one(x, bases=full.bases).nodes, mu1)
    torch.testing.assert_close(z.sum(2), torch.ones(2, 35, dtype=D))


@pytest.mark.parametrize("l2norm", [False, True])
def test_reconstruction_is_the_explicit_operator(l2norm):
    k, c = 5, 8
    m = make(c, num_bases=k, num_stages=3, l2norm=l2norm).double().eval()
    x = torch.randn(1, c, 6, 9, dtype=D)
    h = m.conv_in(x)
    rec, f = m.block(h, return_factors=True)
    operator = f["reverse"][0] @ f["map"][0]  # N x N
    torch.testing.assert_close(rec.reshape(c, 54), f["nodes"][0] @ f["reverse"][0].T)  # mu Z^T
    # identity value maps: aggregating I_N through the same map and reverse gives the operator
    eye = torch.eye(54, dtype=D).reshape(1, 54, 6, 9)
    op_from_eye = m.block(h, value=eye).reshape(54, 54).T
    torch.testing.assert_close(op_from_eye, operator)
    if not l2norm:  # mu_T = X map^T, so the reconstruction is X operator^T
        torch.testing.assert_close(rec.reshape(c, 54), h.reshape(c, 54) @ operator.T)


def spherical_kmeans(x: torch.Tensor, mu: torch.Tensor, iters: int):
    """x (C, N) unit columns, mu (C, K): hard assignment by max dot product, then normalised cluster sums.

    Returns the labels of every iteration, the final bases and the smallest gap between the best and
    second-best dot product seen (how far from a tie the hard assignments were).
    """
    labels, gap = [], float("inf")
    for _ in range(iters):
        dots = x.T @ mu
        top2 = dots.topk(2, dim=1).values
        gap = min(gap, (top2[:, 0] - top2[:, 1]).min().item())
        lab = dots.argmax(1)
        mu = x @ F.one_hot(lab, mu.shape[1]).to(x.dtype)
        mu = mu / (1e-6 + mu.norm(dim=0, keepdim=True))
        labels.append(lab)
    return labels, mu, gap


def run_em(x: torch.Tensor, mu: torch.Tensor, iters: int, scale: float):
    mapper = EMMapper(x.shape[0], mu.shape[1], 1, kernel_scale=scale).double().eval()
    labels = []
    for _ in range(iters):
        res = mapper(x.reshape(1, x.shape[0], 6, 10), bases=mu)
        labels.append(res.assignment[0].argmax(0))
        mu = res.nodes
    return labels, mu[0]


def test_large_scale_equals_spherical_kmeans():
    g = torch.Generator().manual_seed(0)
    centres = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=D))[0][:, :4]
    x = F.normalize(centres[:, torch.arange(60) % 4] + 0.02 * torch.randn(6, 60, generator=g, dtype=D), dim=0)
    mu0 = F.normalize(torch.randn(6, 4, generator=g, dtype=D), dim=0)
    ref_labels, ref_mu, gap = spherical_kmeans(x, mu0, 10)
    assert gap * 1e3 > 40, "test data too close to a tie for lambda = 1e3 to be hard"
    labels, mu = run_em(x, mu0, 10, 1e3)
    for a, b in zip(labels, ref_labels):
        assert torch.equal(a, b)
    torch.testing.assert_close(mu, ref_mu, atol=1e-5, rtol=0)  # eps placement differs
    assert len(set(ref_labels[-1].tolist())) > 1  # not a degenerate single cluster
    _, soft_mu = run_em(x, mu0, 10, 1.0)  # the official lambda = 1 is a soft clustering
    assert (soft_mu - ref_mu).abs().max() > 1e-3


def test_eval_forward_leaves_bases_bit_identical():
    m = make().eval()
    before = m.bases.clone()
    with torch.no_grad():
        m(torch.randn(2, 8, 5, 5))
    call_step_hooks(m)
    assert torch.equal(m.bases, before)


def test_two_train_forwards_update_once_per_step():
    m = make().train()
    call_step_hooks(m)  # a loop that calls the hooks: from here on they own the updates
    old = m.bases.clone()
    x1, x2 = torch.randn(2, 8, 5, 6), torch.randn(3, 8, 5, 6)
    m(x1)
    m(x2)
    assert torch.equal(m.bases, old), "forward must not change the bases"
    with torch.no_grad():
        mus = [m.block.mapper(m.conv_in(x)).nodes for x in (x1, x2)]
    mean = torch.cat(mus).mean(0)
    assert call_step_hooks(m) == 1
    torch.testing.assert_close(m.bases, 0.9 * old + 0.1 * mean)
    updated = m.bases.clone()
    call_step_hooks(m)  # no forward since the last step: nothing to apply
    assert torch.equal(m.bases, updated)


def test_renormalize_switch():
    m = make(renormalize_bases=True).train()
    m(torch.randn(2, 8, 4, 4))
    call_step_hooks(m)
    torch.testing.assert_close(m.bases.norm(dim=0), torch.ones(64), atol=1e-5, rtol=0)
    m2 = make().train()
    m2(torch.randn(2, 8, 4, 4))
    call_step_hooks(m2)
    assert (m2.bases.norm(dim=0) < 1 - 1e-4).any()  # official: no renormalisation, norms drift


def test_gradient_cut_by_default_and_backprop_switch():
    """With the cut, the reconstruction is a constant: the input's gradient flows only through the
    residual, ``dL/dx = g * 1[out > 0]`` exactly. Without it (backprop_through_em) it also flows
    through Z and mu and differs."""
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    m = perturb_(make()).train()
    y = m(x)
    g = torch.randn_like(y)
    y.backward(g)
    assert m.conv_in.weight.grad is None
    torch.testing.assert_close(x.grad, g * (y > 0), atol=0, rtol=0)
    xb = x.detach().clone().requires_grad_(True)
    mb = perturb_(make(backprop_through_em=True)).train()
    yb = mb(xb)
    yb.backward(g)
    assert mb.conv_in.weight.grad is not None and mb.conv_in.weight.grad.abs().sum() > 0
    assert (xb.grad - g * (yb > 0)).abs().max() > 1e-3


def test_bases_move_without_step_hooks_and_warn_once():
    """A user's own loop (forward, backward, step; no call_step_hooks): the bases still follow the data."""
    m = make().train()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.0)
    init = m.bases.clone()
    xs = [torch.randn(2, 8, 5, 6) for _ in range(3)]
    with pytest.warns(UserWarning, match="call_step_hooks") as record:
        for x in xs:
            m(x).sum().backward()
            opt.step()
    assert len([w for w in record if "call_step_hooks" in str(w.message)]) == 1  # warned once
    assert not torch.equal(m.bases, init)
    # two updates so far, applied at forwards 2 and 3, each from the forward before
    ref = make().train()
    mapper = ref.block.mapper
    with torch.no_grad():
        first = 0.9 * init + 0.1 * mapper(ref.conv_in(xs[0]), bases=init).nodes.mean(0)
        second = 0.9 * first + 0.1 * mapper(ref.conv_in(xs[1]), bases=first).nodes.mean(0)
    torch.testing.assert_close(m.bases, second, atol=1e-6, rtol=1e-5)


def test_non_finite_batch_does_not_poison_bases():
    m = make().train()
    call_step_hooks(m)
    x = torch.randn(3, 8, 5, 6)
    x[1, 0, 2, 2] = float("nan")
    m(x)
    with pytest.warns(UserWarning, match="non-finite"):
        call_step_hooks(m)
    assert torch.isfinite(m.bases).all()
    ref = make().train()
    with torch.no_grad():
        mus = ref.block.mapper(ref.conv_in(x[[0, 2]])).nodes
    torch.testing.assert_close(m.bases, 0.9 * ref.bases + 0.1 * mus.mean(0), atol=1e-6, rtol=1e-5)
    all_bad = torch.full((2, 8, 5, 6), float("nan"))
    m(all_bad)
    before = m.bases.clone()
    with pytest.warns(UserWarning, match="skipped"):
        call_step_hooks(m)
    assert torch.equal(m.bases, before)


def test_backprop_through_em_gradcheck():
    m = make(4, num_bases=3, num_stages=2, backprop_through_em=True).double().eval()
    x = torch.randn(1, 4, 3, 3, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,), fast_mode=True, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("kw", [{}, {"num_bases": 5, "num_stages": 1}, {"num_bases": 3, "num_stages": 4}])
def test_flops_odd_sizes(kw):
    m = make(6, **kw).eval()
    for size in [(1, 1), (5, 11)]:
        assert m.flops(*size) == count_macs(m, torch.randn(1, 6, *size))


def test_compile_and_export():
    m = make(4, num_bases=3).train()
    x = torch.randn(2, 4, 5, 6)
    compiled = torch.compile(m, fullgraph=True, backend="eager")
    compiled(x)
    assert m.block.mapper.stat_count.item() == 2  # accumulated inside the compiled graph
    m.eval()
    torch.testing.assert_close(compiled(x), m(x))
    exported = torch.export.export(m, (x,))
    torch.testing.assert_close(exported.module()(x), m(x))


def test_bad_bases_shape():
    with pytest.raises(ValueError, match="bases must be"):
        EMMapper(4, 3)(torch.randn(1, 4, 3, 3), bases=torch.randn(5, 3))


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        m = EMAttention(8, num_bases=4).train()
        x = torch.load(os.path.join(out_dir, "data.pt"))[2 * rank : 2 * rank + 2]
        m(x)
        call_step_hooks(m)
        torch.save(m.bases, os.path.join(out_dir, f"bases{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_gloo_two_processes(tmp_path):
    x = torch.randn(4, 8, 5, 6)
    torch.save(x, tmp_path / "data.pt")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    b0, b1 = torch.load(tmp_path / "bases0.pt"), torch.load(tmp_path / "bases1.pt")
    assert torch.equal(b0, b1)
    torch.manual_seed(0)
    single = EMAttention(8, num_bases=4).train()
    old = single.bases.clone()
    single(x)
    call_step_hooks(single)
    torch.testing.assert_close(b0, single.bases, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(b0, old)


def test_inference_peak_is_four_maps():
    """The output ReLUs run in place (nothing keeps their inputs): with 256 channels (the (N, K)
    responsibilities are small beside a map) inference peaks at 4 maps, 5 with out-of-place ReLUs."""
    module = segattn.create_module("ema", 256).eval()
    x = torch.randn(1, 256, 32, 32)
    with torch.no_grad(), PeakLiveRecorder() as rec:
        module(x)
    assert rec.peak <= 4.25 * x.numel() * 4, rec.peak / (x.numel() * 4)
