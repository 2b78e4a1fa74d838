"""Reasoners: the node-level function ``f`` of ``Y = M_rev f(M_map X)`` (spec 1.2).

A reasoner maps node features (B, C, K) to (B, C_out, K); ``nn.Sequential`` composes them. Each has
``macs(num_nodes, channels)`` (batch 1).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from segattn.checks import checked
from segattn.layers import make_act
from segattn.ops.attention import full_precision, softmax_attention, upcast


class IdentityReasoner(nn.Module):
    """``f(V) = V`` (EMANet, A2, PPM without a branch conv). Shapes (B, C, K) -> (B, C, K)."""

    def forward(self, nodes: Tensor) -> Tensor:
        return nodes

    def macs(self, num_nodes: int, channels: int) -> int:
        return 0


class GraphConvReasoner(nn.Module):
    """One graph convolution on K nodes, node-wise then channel-wise (GloRe, spec 3.11 step 4).

    ``H = V + V A^T + b`` with ``A`` (K, K) a 1x1 Conv1d over the node axis (with bias; the residual
    ``+ V`` absorbs the paper's ``I - A_g``), then ``act`` (default ReLU), then ``Z = W H`` with ``W``
    a 1x1 Conv1d over the channel axis (C -> C_out, no bias). (B, C, K) -> (B, C_out, K).
    ``node_residual=False`` drops the ``+ V``. MACs: ``K^2 C + C C_out K``.
    """

    @checked()
    def __init__(
        self,
        num_nodes: int,
        channels: int,
        out_channels: Optional[int] = None,
        *,
        act: Optional[str] = "relu",
        node_bias: bool = True,
        node_residual: bool = True,
    ) -> None:
        super().__init__()
        self.num_nodes, self.channels = num_nodes, channels
        self.out_channels = channels if out_channels is None else out_channels
        self.node_residual = node_residual
        self.node_conv = nn.Conv1d(num_nodes, num_nodes, 1, bias=node_bias)
        self.act = make_act(act)
        self.channel_conv = nn.Conv1d(channels, self.out_channels, 1, bias=False)

    def forward(self, nodes: Tensor) -> Tensor:
        if nodes.shape[1] != self.channels or nodes.shape[2] != self.num_nodes:
            raise ValueError(
                f"GraphConvReasoner expects nodes of shape (B, {self.channels}, {self.num_nodes}), got {tuple(nodes.shape)}"
            )
        mixed = self.node_conv(nodes.transpose(1, 2)).transpose(1, 2)
        h = mixed + nodes if self.node_residual else mixed
        return self.channel_conv(self.act(h))

    def macs(self, num_nodes: int, channels: int) -> int:
        return num_nodes * num_nodes * channels + channels * self.out_channels * num_nodes

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}, channels={self.channels}, out_channels={self.out_channels}"


class NodeAttentionReasoner(nn.Module):
    """Softmax attention among the K nodes (LatentGNN latent-to-latent, spec 3.12 step 4).

    ``Zhat = l2norm_C(V)`` (each node's feature vector unit length when ``normalize``),
    ``S = softmax_K'(scale * Zhat^T Zhat)`` (K, K, each row over the nodes), ``f(V) = V S^T``.
    (B, C, K) -> (B, C, K). Uses ``segattn.ops.attention.softmax_attention``. MACs: ``2 K^2 C``.
    """

    @checked()
    def __init__(self, scale: float = 1.0, normalize: bool = True) -> None:
        super().__init__()
        self.scale, self.normalize = scale, normalize

    def forward(self, nodes: Tensor) -> Tensor:
        v = nodes.transpose(1, 2)
        # normalise in float32: F.normalize's eps (1e-12) underflows to 0 in float16 and a zero node
        # would become NaN
        with full_precision(v.device):
            q = torch.nn.functional.normalize(upcast(v), dim=2).to(v.dtype) if self.normalize else v
        return softmax_attention(q, q, v, scale=self.scale).transpose(1, 2)

    def macs(self, num_nodes: int, channels: int) -> int:
        return 2 * num_nodes * num_nodes * channels

    def extra_repr(self) -> str:
        return f"scale={self.scale}, normalize={self.normalize}"
