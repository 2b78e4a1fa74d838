"""SGR: supplied knowledge graph and embeddings are used (a hand-computed case), switches, errors."""

from __future__ import annotations

import math

import pytest
import torch

import segattn
from segattn.modules.sgr import normalized_adjacency
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

D = torch.float64


def tiny(embeddings, adjacency):
    """C = 2, D = 1, K = 2 nodes, E = 1; weights set so the forward can be followed by hand."""
    m = segattn.create_module("sgr", 2, reduction=2, node_embeddings=embeddings, adjacency=adjacency).double()
    vote, reverse = m.block.mapper.proj[0], m.block.reverse
    with torch.no_grad():
        vote.weight.zero_()  # votes softmax([0, 0]) = [1/2, 1/2]
        vote.bias.zero_()
        m.value.weight.copy_(torch.tensor([[1.0, 0.0]]).view(1, 2, 1, 1))  # W_ps x = x_0
        m.reasoner.weight.weight.copy_(torch.tensor([[1.0, 1.0]]).view(1, 2, 1))  # W_g [h ; s] = h + s
        reverse.query.weight.zero_()  # uniform compatibility over the nodes
        reverse.value.weight.copy_(torch.tensor([[1.0], [2.0]]).view(2, 1, 1))  # W_sp h = (h, 2h)
    return m.eval()


def run(m, x=(2.0, 3.0)):
    return m(torch.tensor(x, dtype=D).view(1, 2, 1, 1)).flatten().tolist()


def test_hand_computed_case_uses_embeddings_and_adjacency():
    # one pixel x = (2, 3): H_ps = 1/2 * 2 = 1 on both nodes; B W_g = 1 + s_n
    s = torch.tensor([[1.0], [-1.0]])
    a = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # A + I = ones, degrees 2: A_hat = ones / 2
    # B W_g = (2, 0) -> A_hat -> (1, 1) -> y = W_sp mean = (1, 2) -> out = (3, 5)
    assert run(tiny(s, a)) == pytest.approx([3.0, 5.0], abs=1e-12)
    # other embeddings: B W_g = (3, 0) -> (1.5, 1.5) -> out = (3.5, 6)
    assert run(tiny(torch.tensor([[2.0], [-1.0]]), a)) == pytest.approx([3.5, 6.0], abs=1e-12)
    # directed edge 1 -> 0 only: A + I = [[1, 0], [1, 1]], degrees (1, 2):
    # A_hat = [[1, 0], [1/sqrt2, 1/2]] -> H_g = (2, sqrt2) -> mean (1 + 1/sqrt2) -> out = x + (1, 2) * mean
    mean = 1 + 1 / math.sqrt(2)
    assert run(tiny(s, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))) == pytest.approx([2 + mean, 3 + 2 * mean], abs=1e-12)


def test_normalized_adjacency():
    a = torch.tensor([[0.0, 2.0, 0.0], [2.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=D)
    a_hat = normalized_adjacency(a)
    deg = (a + torch.eye(3, dtype=D)).sum(1)
    torch.testing.assert_close(a_hat, (a + torch.eye(3, dtype=D)) / (deg.sqrt().unsqueeze(1) * deg.sqrt()))
    assert torch.linalg.eigvalsh(a_hat).abs().max() <= 1 + 1e-12  # spectral radius of the normalised graph


def test_supplied_tensors_are_stored_and_change_the_output():
    torch.manual_seed(0)
    emb, adj = torch.randn(5, 7), torch.rand(5, 5)
    m = perturb_(segattn.create_module("sgr", 16, node_embeddings=emb, adjacency=adj)).double().eval()
    assert m.num_nodes == 5 and m.reasoner.embedding_dim == 7
    torch.testing.assert_close(m.reasoner.embeddings.float(), emb)
    torch.testing.assert_close(m.reasoner.adjacency.float(), adj)
    x = torch.randn(2, 16, 4, 5, dtype=D)
    y = m(x)
    with torch.no_grad():
        m.reasoner.embeddings.add_(1.0)
    y_emb = m(x)
    with torch.no_grad():
        m.reasoner.adjacency.copy_(torch.eye(5))
    y_adj = m(x)
    assert (y - y_emb).abs().max() > 1e-4 and (y_emb - y_adj).abs().max() > 1e-4


def test_fixed_prior_is_a_buffer():
    m = segattn.create_module("sgr", 16, node_embeddings=torch.randn(4, 3), adjacency=torch.ones(4, 4),
                              learn_embeddings=False, learn_adjacency=False)
    names = dict(m.named_parameters())
    assert "block.reasoner.embeddings" not in names and "block.reasoner.adjacency" not in names
    assert {"block.reasoner.embeddings", "block.reasoner.adjacency"} <= set(m.state_dict())


def test_defaults_run_without_assets():
    m = segattn.create_module("sgr", 16)
    assert m.num_nodes == 64 and m.reasoner.embeddings.shape == (64, 300)
    torch.testing.assert_close(m.reasoner.adjacency, m.reasoner.adjacency.T)


def test_concat_compatibility_is_pixel_independent():
    torch.manual_seed(0)
    m = perturb_(segattn.create_module("sgr", 16, num_nodes=6, embedding_dim=5, compatibility="concat")).double().eval()
    _, f = m(torch.randn(1, 16, 4, 5, dtype=D), return_attention=True)
    rev = f["reverse"][0]  # (N, K)
    torch.testing.assert_close(rev, rev[:1].expand_as(rev), atol=1e-12, rtol=0)
    mb = perturb_(segattn.create_module("sgr", 16, num_nodes=6, embedding_dim=5)).double().eval()
    _, fb = mb(torch.randn(1, 16, 4, 5, dtype=D), return_attention=True)
    assert (fb["reverse"][0] - fb["reverse"][0][:1]).abs().max() > 1e-3
    torch.testing.assert_close(fb["reverse"].sum(-1), torch.ones(1, 20, dtype=D))


@pytest.mark.parametrize("kw", [{"compatibility": "concat"}, {"normalize_voting": True}])
def test_variants_gradcheck_and_flops(kw):
    torch.manual_seed(0)
    m = perturb_(segattn.create_module("sgr", 16, num_nodes=6, embedding_dim=5, **kw)).double().eval()
    x = torch.randn(1, 16, 3, 4, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,), fast_mode=True)
    assert m.flops(7, 9) == count_macs(m.float(), torch.randn(1, 16, 7, 9))


def test_normalize_voting_scales_nodes():
    torch.manual_seed(0)
    kw = {"num_nodes": 4, "embedding_dim": 3}
    a = segattn.create_module("sgr", 16, **kw).double()
    b = segattn.create_module("sgr", 16, normalize_voting=True, **kw).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 16, 5, 6, dtype=D)
    _, fa = a(x, return_attention=True)
    _, fb = b(x, return_attention=True)
    torch.testing.assert_close(fb["nodes"], fa["nodes"] / 30)


def test_compile_and_export():
    m = perturb_(segattn.create_module("sgr", 16, num_nodes=8, embedding_dim=4)).eval()
    x = torch.randn(2, 16, 5, 7)
    ref = m(x)
    torch.testing.assert_close(torch.compile(m, fullgraph=True, backend="eager")(x), ref)
    torch.testing.assert_close(torch.export.export(m, (x,)).module()(x), ref)


def test_bad_graphs():
    with pytest.raises(ValueError, match="non-negative"):
        segattn.create_module("sgr", 16, adjacency=-torch.ones(3, 3))
    with pytest.raises(ValueError, match="square"):
        segattn.create_module("sgr", 16, adjacency=torch.ones(3, 4))
    with pytest.raises(ValueError, match="disagree"):
        segattn.create_module("sgr", 16, node_embeddings=torch.ones(3, 2), adjacency=torch.ones(4, 4))
    with pytest.raises(ValueError, match="num_nodes"):
        segattn.create_module("sgr", 16, num_nodes=5, adjacency=torch.ones(4, 4))
    with pytest.raises(ValueError, match="compatibility"):
        segattn.create_module("sgr", 16, compatibility="dot")


def test_random_graph_is_explicit_and_a_graph_file_is_used(tmp_path):
    import numpy as np
    import pytest

    with pytest.warns(UserWarning, match="not the paper's SGR"):
        random_graph = segattn.create_module("sgr", 8)
    assert random_graph.graph_source == "random" and "graph=random" in repr(random_graph)
    emb, adj = torch.randn(5, 7), torch.rand(5, 5)
    torch.save({"node_embeddings": emb, "adjacency": adj}, tmp_path / "graph.pt")
    np.savez(tmp_path / "graph.npz", node_embeddings=emb.numpy(), adjacency=adj.numpy())
    for name in ("graph.pt", "graph.npz"):
        m = segattn.create_module("sgr", 8, graph_file=str(tmp_path / name), learn_adjacency=False)
        assert m.graph_source == name and m.num_nodes == 5
        torch.testing.assert_close(m.reasoner.embeddings, emb)
        torch.testing.assert_close(m.reasoner.adjacency, adj)
    torch.save({"adjacency": adj}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="lacks \\['node_embeddings'\\]"):
        segattn.create_module("sgr", 8, graph_file=str(tmp_path / "bad.pt"))
    with pytest.raises(ValueError, match="does not exist"):
        segattn.create_module("sgr", 8, graph_file=str(tmp_path / "missing.pt"))
