"""``LowRankBlock``: ``Y = M_rev f(M_map X)`` assembled from a mapper, a reasoner and a reverse mapper."""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

from torch import Tensor, nn

from segattn.checks import checked
from segattn.errors import ArgumentError
from segattn.lowrank.reasoners import IdentityReasoner
from segattn.lowrank.reverse import TransposeReverse
from segattn.ops.attention import upcast

Factors = Dict[str, Tensor]


class LowRankBlock(nn.Module):
    """Generic low-rank reconstruction ``Y = M_rev f(M_map V)`` (spec 1.2).

    ``forward(x, value=None, query=None, return_factors=False)``: the ``mapper`` reads ``x``
    (B, C, H, W) and aggregates ``value`` (B, C_v, H, W; default ``x``) into K nodes (B, C_v, K);
    the ``reasoner`` (default identity) maps them to (B, C_out, K); the ``reverse`` mapper (default
    ``TransposeReverse()``) reads ``query`` (default ``x``) and distributes the nodes back:
    ``Y`` (B, C_out, H, W) in ``value``'s dtype (maps and products in at least float32).

    With ``return_factors`` it returns ``(Y, factors)``: ``map`` (B, K, N) = M_map, ``nodes``
    (B, C_v, K), ``reasoned`` (B, C_out, K), ``reverse`` (B, N, K) = M_rev, ``assignment`` (B, K, N).
    The explicit N x N operator (reasoner = identity) is ``reverse @ map`` (rank <= K).
    ``macs(height, width, value_channels)`` sums the parts' MACs (batch 1).
    """

    @checked()
    def __init__(self, mapper: nn.Module, reasoner: Optional[nn.Module] = None, reverse: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.mapper = mapper
        self.reasoner = reasoner if reasoner is not None else IdentityReasoner()
        self.reverse = reverse if reverse is not None else TransposeReverse()
        parts = {"mapper": self.mapper, "reasoner": self.reasoner, "reverse": self.reverse}
        counts = {role: n for role, part in parts.items() if isinstance(n := getattr(part, "num_nodes", None), int)}
        if len(set(counts.values())) > 1:
            found = ", ".join(f"{role} {type(parts[role]).__name__} has {n}" for role, n in counts.items())
            raise ArgumentError(f"LowRankBlock: the parts must agree on the node count K, got {found}")

    def _check_channels(self, x: Tensor, value: Optional[Tensor], query: Optional[Tensor]) -> None:
        """A clear error when an input's channel count differs from the part that reads it."""
        for name, tensor, part, attr in (
            ("x", x, self.mapper, ("in_channels", "channels")),
            ("value", x if value is None else value, self.reasoner, ("channels",)),
            ("query", x if query is None else query, self.reverse, ("in_channels",)),
        ):
            expected = next((getattr(part, a) for a in attr if isinstance(getattr(part, a, None), int)), None)
            if not isinstance(tensor, Tensor) or tensor.dim() != 4:
                raise ArgumentError(f"LowRankBlock: {name} must be a (B, C, H, W) tensor, got "
                                    f"{tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__}")
            if expected is not None and tensor.shape[1] != expected:
                raise ArgumentError(f"LowRankBlock: {name} must have {expected} channels (the {type(part).__name__}'s), "
                                    f"got {tensor.shape[1]} (shape {tuple(tensor.shape)})")

    def forward(
        self,
        x: Tensor,
        value: Optional[Tensor] = None,
        query: Optional[Tensor] = None,
        return_factors: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, Factors]]:
        self._check_channels(x, value, query)
        out_dtype = (x if value is None else value).dtype
        result = self.mapper(x, value)
        reasoned = self.reasoner(result.nodes.to(out_dtype))
        y, rev = self.reverse(reasoned, result, x if query is None else query, return_matrix=return_factors)
        y = y.to(out_dtype)
        if not return_factors:
            return y
        factors = {
            "map": result.map,
            "nodes": result.nodes,
            "reasoned": upcast(reasoned),
            "reverse": rev,
            "assignment": result.assignment,
        }
        return y, factors

    def macs(self, height: int, width: int, value_channels: int) -> int:
        k = self.mapper.num_nodes
        reasoned_channels = getattr(self.reasoner, "out_channels", value_channels)
        return (
            self.mapper.macs(height, width, value_channels)
            + self.reasoner.macs(k, value_channels)
            + self.reverse.macs(height, width, k, reasoned_channels)
        )
