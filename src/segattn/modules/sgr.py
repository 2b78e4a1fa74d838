"""SGR: symbolic graph reasoning (Liang, Hu, Zhang, Lin, Xing, NeurIPS 2018), spec section 3.9.

Built from ``segattn.lowrank`` parts: a ``ProjectionMapper`` (local-to-semantic voting) and two
parts written here because the library has no equivalent yet: ``SymbolicGraphReasoner`` (graph
convolution over a given knowledge graph with concatenated node embeddings) and
``NodeCompatibilityReverse`` (semantic-to-local mapping whose weights depend on the node features).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import checked
from segattn.lowrank import LowRankBlock, MapResult, ProjectionMapper
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import attend, full_precision, upcast
from segattn.ops.weightmaps import operator_row
from segattn.registry import MODULES

COMPATIBILITIES = ("bilinear", "concat")


def normalized_adjacency(adjacency: Tensor) -> Tensor:
    """``D^-1/2 (relu(A) + I) D^-1/2`` with ``D = diag(rowsum(relu(A) + I))`` (K, K); degrees >= 1."""
    a = F.relu(adjacency) + torch.eye(adjacency.shape[0], dtype=adjacency.dtype, device=adjacency.device)
    inv_sqrt = a.sum(dim=1).rsqrt()
    return inv_sqrt.unsqueeze(1) * a * inv_sqrt.unsqueeze(0)


class NodeSoftmax(nn.Module):
    """Softmax over the node axis (dim 1) of the voting logits, in float32 (autocast off)."""

    def forward(self, logits: Tensor) -> Tensor:
        with full_precision(logits.device):
            return torch.softmax(upcast(logits), dim=1)


class SymbolicGraphReasoner(nn.Module):
    """Graph reasoning over a knowledge graph: ``H_g = ReLU(A_hat [H ; S] W_g)`` (spec 3.9 step 2).

    Nodes ``H`` (B, D, K) are concatenated with the node embeddings ``S`` (K, E) (linguistic prior),
    mixed over channels by ``W_g`` (1x1 Conv1d, D + E -> D_out, no bias), propagated over the graph
    with ``A_hat = normalized_adjacency(A)`` and passed through ReLU. (B, D, K) -> (B, D_out, K).
    ``adjacency`` (K, K, non-negative) and ``embeddings`` (K, E) are parameters when learnable,
    buffers otherwise. MACs: ``(D + E) D_out K + K^2 D_out``.
    """

    def __init__(
        self,
        channels: int,
        adjacency: Tensor,
        embeddings: Tensor,
        out_channels: Optional[int] = None,
        *,
        learn_adjacency: bool = True,
        learn_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.num_nodes, self.embedding_dim = embeddings.shape
        self.channels = channels
        self.out_channels = channels if out_channels is None else out_channels
        _store(self, "adjacency", adjacency, learn_adjacency)
        _store(self, "embeddings", embeddings, learn_embeddings)
        self.weight = nn.Conv1d(channels + self.embedding_dim, self.out_channels, 1, bias=False)

    def forward(self, nodes: Tensor) -> Tensor:
        b = nodes.shape[0]
        prior = self.embeddings.to(nodes.dtype).t().unsqueeze(0).expand(b, -1, -1)
        h = self.weight(torch.cat([nodes, prior], dim=1))  # (B, D_out, K)
        with full_precision(h.device):
            adj = normalized_adjacency(upcast(self.adjacency).to(upcast(h).dtype))
            return F.relu(torch.matmul(upcast(h), adj.t())).to(h.dtype)

    def macs(self, num_nodes: int, channels: int) -> int:
        return (channels + self.embedding_dim) * self.out_channels * num_nodes + num_nodes * num_nodes * self.out_channels


def _store(module: nn.Module, name: str, value: Tensor, learnable: bool) -> None:
    data = value.detach().clone().float()
    if learnable:
        module.register_parameter(name, nn.Parameter(data))
    else:
        module.register_buffer(name, data)


class NodeCompatibilityReverse(nn.Module):
    """Semantic-to-local mapping: ``y_i = sum_n a_{n->i} W_sp h_n`` (spec 3.9 step 3), (B, C_out, H, W).

    ``bilinear`` (default): ``a_{.->i} = softmax_n((W_q x_i)^T (W_k h_n) / sqrt(D))``, computed with
    ``segattn.ops.attention.softmax_attention``. ``concat``: the paper's ``softmax_n(w^T [h_n ; x_i] + b)``;
    there the pixel term is constant over n and cancels in the softmax, so every pixel gets the same
    weights (kept as a switch for faithfulness). ``M_rev`` = the weights (B, N, K).
    MACs: bilinear ``C D N + D D K + D C_out K + N K (D + C_out)``; concat ``C N + D K + D C_out K + N K C_out``.
    """

    def __init__(self, in_channels: int, node_channels: int, out_channels: int, compatibility: str = "bilinear") -> None:
        super().__init__()
        if compatibility not in COMPATIBILITIES:
            raise ValueError(f"SGR compatibility must be one of {COMPATIBILITIES}, got {compatibility!r}")
        self.compatibility = compatibility
        self.in_channels, self.node_channels, self.out_channels = in_channels, node_channels, out_channels
        width = node_channels if compatibility == "bilinear" else 1
        self.query = nn.Conv2d(in_channels, width, 1, bias=compatibility == "concat")
        self.key = nn.Conv1d(node_channels, width, 1, bias=False)
        self.value = nn.Conv1d(node_channels, out_channels, 1, bias=False)

    def forward(self, nodes: Tensor, result: MapResult, x: Tensor, return_matrix: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        b, _, h, w = x.shape
        q = upcast(self.query(x)).flatten(2).transpose(1, 2)  # (B, N, D) or (B, N, 1)
        k = upcast(self.key(nodes)).transpose(1, 2)  # (B, K, D) or (B, K, 1)
        v = upcast(self.value(nodes)).transpose(1, 2)  # (B, K, C_out)
        if self.compatibility == "concat":
            weights = torch.softmax(q + k.transpose(1, 2), dim=2)  # (B, N, K): q is constant over K
            y = torch.matmul(weights, v)
        else:
            y, weights = attend(q, k, v, 1.0 / math.sqrt(q.shape[-1]), return_matrix)
        y = y.transpose(1, 2).reshape(b, self.out_channels, h, w)
        return y, weights

    def macs(self, height: int, width: int, num_nodes: int, channels: int) -> int:
        n, d = height * width, self.query.out_channels
        projections = self.in_channels * d * n + channels * d * num_nodes + channels * self.out_channels * num_nodes
        scores = n * num_nodes * d if self.compatibility == "bilinear" else 0
        return projections + scores + n * num_nodes * self.out_channels


def _check_graph(node_embeddings: Optional[Tensor], adjacency: Optional[Tensor]) -> None:
    for name, t in (("node_embeddings", node_embeddings), ("adjacency", adjacency)):
        if t is not None and (not isinstance(t, Tensor) or t.dim() != 2 or not t.is_floating_point()):
            raise ValueError(f"SGR {name} must be a 2-D floating-point tensor, got {t!r:.80}")
    if adjacency is not None:
        if adjacency.shape[0] != adjacency.shape[1]:
            raise ValueError(f"SGR adjacency must be square (K, K), got {tuple(adjacency.shape)}")
        if (adjacency < 0).any():
            raise ValueError("SGR adjacency must be non-negative (edge weights)")
    if node_embeddings is not None and adjacency is not None and node_embeddings.shape[0] != adjacency.shape[0]:
        raise ValueError(
            f"SGR node_embeddings (K, E) and adjacency (K, K) disagree on K: "
            f"{tuple(node_embeddings.shape)} vs {tuple(adjacency.shape)}"
        )


GRAPH_KEYS = ("node_embeddings", "adjacency")


def load_graph(path: Union[str, os.PathLike]) -> Tuple[Tensor, Tensor]:
    """Read a knowledge graph ``(node_embeddings (K, E), adjacency (K, K))`` from a ``.pt`` or ``.npz`` file.

    The file holds a mapping with the keys ``node_embeddings`` (e.g. the word vectors of the K concept
    names) and ``adjacency`` (non-negative edge weights, e.g. ConceptNet relations or label
    co-occurrence); a ``.pt`` file is read with :func:`segattn.io.safe_torch_load` (plain data only: a
    file holding objects whose loading could run code is refused). Raises ``ValueError`` naming the
    file and what is missing.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"SGR graph file {path!r} does not exist (expected a .pt or .npz with {GRAPH_KEYS})")
    if path.endswith(".npz"):
        import numpy as np

        with np.load(path) as data:
            found = {k: torch.from_numpy(data[k]).float() for k in GRAPH_KEYS if k in data.files}
    elif path.endswith(".pt") or path.endswith(".pth"):
        from segattn.io import safe_torch_load

        data = safe_torch_load(path, map_location="cpu", what="SGR graph file")
        if not isinstance(data, dict):
            raise ValueError(f"SGR graph file {path!r} must hold a dict with {GRAPH_KEYS}, got {type(data).__name__}")
        found = {k: torch.as_tensor(data[k]).float() for k in GRAPH_KEYS if k in data}
    else:
        raise ValueError(f"SGR graph file {path!r}: expected a .pt, .pth or .npz file")
    missing = [k for k in GRAPH_KEYS if k not in found]
    if missing:
        raise ValueError(f"SGR graph file {path!r} lacks {missing}; expected the keys {GRAPH_KEYS}")
    return found["node_embeddings"], found["adjacency"]


def _resolve_graph(
    num_nodes: Optional[int], embedding_dim: Optional[int], node_embeddings: Optional[Tensor], adjacency: Optional[Tensor]
) -> Tuple[Tensor, Tensor]:
    """The (K, E) embeddings and (K, K) adjacency: the given tensors, else random (seeded by torch)."""
    _check_graph(node_embeddings, adjacency)
    given_k = node_embeddings.shape[0] if node_embeddings is not None else (adjacency.shape[0] if adjacency is not None else None)
    if given_k is not None and num_nodes is not None and num_nodes != given_k:
        raise ValueError(f"SGR num_nodes={num_nodes} disagrees with the supplied graph of {given_k} nodes")
    if node_embeddings is not None and embedding_dim is not None and embedding_dim != node_embeddings.shape[1]:
        raise ValueError(f"SGR embedding_dim={embedding_dim} disagrees with node_embeddings of shape {tuple(node_embeddings.shape)}")
    k = given_k if given_k is not None else (64 if num_nodes is None else num_nodes)
    e = embedding_dim if embedding_dim is not None else 300
    if k < 1 or e < 1:
        raise ValueError(f"SGR num_nodes and embedding_dim must be >= 1, got {k}, {e}")
    if node_embeddings is None:
        node_embeddings = torch.randn(k, e) / math.sqrt(e)
    if adjacency is None:
        u = torch.rand(k, k)
        adjacency = (u + u.t()) / 2
    return node_embeddings, adjacency


@MODULES.register("sgr", paper="Liang et al., NeurIPS 2018", family="lowrank", order="O(N K D + K^2 D)")
class SGR(ContextModule):
    """Symbolic graph reasoning: vote pixels onto K concept nodes, reason on a knowledge graph, map back.

    With ``X`` (C, N), D = C / ``reduction`` node channels, K nodes, embeddings ``S`` (K, E)::

        a_{i->n} = softmax_n(W_a x_i)                 (N, K)   local-to-semantic voting
        H_ps     = (W_ps X) a          [/ N]          (D, K)   visual node features
        H_g      = ReLU(A_hat [H_ps ; S] W_g)         (D, K)   graph reasoning, A_hat = D^-1/2 (A + I) D^-1/2
        a'_{n->i} = softmax_n((W_q x_i)^T (W_k h_n) / sqrt(D))  (N, K)  semantic-to-local compatibility
        out      = X + ReLU(W_sp H_g a'^T)            (C, H, W)

    i.e. ``LowRankBlock(ProjectionMapper(C, K, proj=conv+softmax over nodes), SymbolicGraphReasoner,
    NodeCompatibilityReverse)`` applied to ``value = W_ps X``. No official code exists (spec 3.9).

    Supplying a knowledge graph: pass ``node_embeddings`` (K, E), e.g. the word vectors of the K
    concept names (``torch.stack([glove[name] for name in concepts])``), and ``adjacency`` (K, K),
    non-negative edge weights, e.g. ConceptNet relations or label co-occurrence counts; K is taken
    from them. ``learn_embeddings`` / ``learn_adjacency`` (default True) make them parameters; set
    them False to keep a fixed prior (stored as buffers, saved in the state dict). Without tensors
    the module draws random embeddings N(0, 1/E) and a random symmetric adjacency U(0, 1), so it runs
    without external assets -- **that is not the paper's SGR** (no knowledge is injected): it warns,
    ``graph_source`` is ``"random"`` and ``repr`` shows it. ``graph_file`` reads both tensors from a
    ``.pt`` / ``.npz`` file (:func:`load_graph`; ``graph_source`` = the file name), which is how a
    config supplies a real graph (``model.kwargs.context_kw.graph_file``). Negative learned edge
    weights are clipped (``relu``) in ``A_hat``.

    Defaults: ``num_nodes=64``, ``embedding_dim=300``, ``reduction=4``, ``normalize_voting=False``
    (the paper sums votes over pixels, so the node features -- and the context -- grow with N: x4.2
    from a 512x1024 crop to a 1024x2048 image; evaluate at the training crop size (slide) or set True,
    which divides by N for size-independent node features).
    Deviation: the paper's compatibility ``softmax_n(W_s [h_n ; x_i])`` does not depend on ``x_i`` (the
    pixel term cancels in the softmax over n); the default ``compatibility="bilinear"`` uses a scaled
    dot product between projected pixels and nodes; ``"concat"`` keeps the paper's form.
    ``return_attention`` gives ``map`` (B, K, N, the voting), ``reverse`` (B, N, K), ``nodes``, ``reasoned``.

    Cost (MACs, batch 1): ``N C (K + D) + N K D`` voting + ``(D + E) D K + K^2 D`` reasoning +
    ``N C D + D^2 K + D C K + N K (D + C)`` mapping; order O(N K D + N C (K + D) + K^2 D), linear in N.
    """

    @checked(compatibility=COMPATIBILITIES)
    def __init__(
        self,
        in_channels: int,
        *,
        num_nodes: Optional[int] = None,
        embedding_dim: Optional[int] = None,
        reduction: int = 4,
        node_embeddings: Optional[Tensor] = None,
        adjacency: Optional[Tensor] = None,
        learn_embeddings: bool = True,
        learn_adjacency: bool = True,
        normalize_voting: bool = False,
        compatibility: str = "bilinear",
        graph_file: Optional[str] = None,
    ) -> None:
        super().__init__(in_channels)
        if graph_file is not None:
            if node_embeddings is not None or adjacency is not None:
                raise ValueError("SGR takes graph_file or node_embeddings/adjacency tensors, not both")
            node_embeddings, adjacency = load_graph(graph_file)
            self.graph_source = os.path.basename(os.fspath(graph_file))
        elif node_embeddings is not None and adjacency is not None:
            self.graph_source = "tensors"
        else:
            self.graph_source = "random" if node_embeddings is None and adjacency is None else "partly random"
            warnings.warn(
                f"SGR without a knowledge graph ({self.graph_source} adjacency / node embeddings): this is not "
                "the paper's SGR; pass graph_file= (or node_embeddings= and adjacency=) for a real graph",
                stacklevel=2,
            )
        embeddings, adj = _resolve_graph(num_nodes, embedding_dim, node_embeddings, adjacency)
        k, d = embeddings.shape[0], max(in_channels // reduction, 1)
        self.num_nodes, self.node_channels = k, d
        self.value = nn.Conv2d(in_channels, d, 1, bias=False)
        vote = nn.Sequential(nn.Conv2d(in_channels, k, 1), NodeSoftmax())
        self.block = LowRankBlock(
            ProjectionMapper(in_channels, k, "mean" if normalize_voting else "none", proj=vote),
            SymbolicGraphReasoner(
                d, adj, embeddings, learn_adjacency=learn_adjacency, learn_embeddings=learn_embeddings
            ),
            NodeCompatibilityReverse(in_channels, d, in_channels, compatibility),
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_nodes={self.num_nodes}, graph={self.graph_source}"

    @property
    def reasoner(self) -> SymbolicGraphReasoner:
        return self.block.reasoner

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        if return_attention:
            y, factors = self.block(x, value=self.value(x), return_factors=True)
            return x + F.relu(y), factors
        return x + F.relu(self.block(x, value=self.value(x)))

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Row ``query`` of ``M_rev M_map`` (compatibility times voting; the graph reasoning left out): not convex."""
        return {"M_rev M_map": operator_row(factors["reverse"], factors["map"], size, query)}, False

    def flops(self, height: int, width: int) -> int:
        return height * width * self.in_channels * self.node_channels + self.block.macs(height, width, self.node_channels)
