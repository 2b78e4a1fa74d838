"""Where a pixel looks: a query pixel's effective weights over the input pixels, per module family.

Every context module re-estimates a pixel as a weighted combination of others. For a module and an
input ``x`` (1, C, H, W), :func:`pixel_weights` runs ``module(x, return_attention=True)`` and turns
the returned factors into, for the query pixel ``(y, x)`` of the H x W map, one or more maps of
weights over the *value* positions (the value path: attention frozen, values varied). Each map
lives on its own grid that spans the whole feature map (the pooled grid of sub-sampled keys, the
shrunk PSANet grid, ...) and is upsampled only for display. The tests check every map against a
Jacobian probe of the real forward (attention frozen, gradient w.r.t. the values).

Each module family reads its own weights off: a ``weight_maps(factors, size, query)`` method beside
its forward (contract in :mod:`segattn.ops.weightmaps`); this file holds only the generic parts
(which modules have maps, the checks, one eval forward, the result type). ``PixelWeights.convex`` is
True when each map is a convex combination (weights >= 0 summing to 1 over the pixels it covers;
zero-padded windows lose the mass that falls outside the map). Composed maps (CCNet R = 2, ISA long
then short) compose the frozen aggregation operators; low-rank maps are the row of ``M_rev M_map``
(the reasoner ``f`` left out, it acts on node features, not on positions).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from segattn.modules.base import Attention
from segattn.modules.ccnet import criss_cross_transpose
from segattn.registry import MODULES, UPSAMPLERS

Pair = Tuple[int, int]


class NoAttentionError(ValueError):
    """The module has no per-pixel weights to show (or a kind of picture it does not support)."""


@dataclass
class PixelWeights:
    """Effective weights of one query pixel.

    ``maps``: label -> (h, w) float tensor on a grid spanning the feature map; ``convex``: each map
    is >= 0 and sums to 1 over the pixels it covers; ``query`` (y, x) on the module's input grid
    (CARAFE: its output grid); ``size`` the module's input (H, W); ``name`` the registered name.
    """

    name: str
    query: Pair
    size: Pair
    maps: Dict[str, Tensor] = field(default_factory=dict)
    convex: bool = True


def registered_name(module: nn.Module) -> str:
    """The registry name of a context module or upsampler instance (ValueError if unregistered)."""
    for registry in (MODULES, UPSAMPLERS):
        for name in registry.list():
            if type(module) is registry.get(name):
                return name
    raise ValueError(f"{type(module).__name__} is not a registered context module or upsampler (see `segattn modules`)")


def check_query(query: Pair, size: Pair, what: str = "feature map") -> Tuple[int, int]:
    """``query`` as two ints inside ``size``; a one-line ValueError otherwise."""
    try:
        y, x = (int(v) for v in query)
    except (TypeError, ValueError):
        raise ValueError(f"query must be two integers (y, x), got {query!r}") from None
    if not (0 <= y < size[0] and 0 <= x < size[1]):
        raise ValueError(f"query pixel (y={y}, x={x}) is outside the {size[0]}x{size[1]} {what}; "
                         f"expected 0 <= y < {size[0]} and 0 <= x < {size[1]}")
    return y, x


def _registered_class(name: str) -> Optional[type]:
    registry = MODULES if name in MODULES else UPSAMPLERS if name in UPSAMPLERS else None
    return registry.get(name) if registry is not None else None


def own_weight_maps(name: str) -> bool:
    """Whether the registered module ``name`` reads its own weights off (a ``weight_maps`` method beside it)."""
    return callable(getattr(_registered_class(name), "weight_maps", None))


def supports_pixel_weights(name: str) -> bool:
    """Whether ``pixel_weights`` can draw the registered module (or upsampler) ``name``."""
    return own_weight_maps(name)


def with_weights() -> List[str]:
    """Registered modules (and upsamplers) that have per-pixel weight maps."""
    return sorted(n for n in set(MODULES.list()) | set(UPSAMPLERS.list()) if supports_pixel_weights(n))


def extra_inputs(module: nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """The inputs a module's forward received beyond the feature map, by name (ANN AFNB's ``low``, OCR's
    ``regions``), from the positional and keyword arguments of one call."""
    bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
    return {k: v for k, v in list(bound.arguments.items())[1:] if k != "return_attention" and v is not None}


def run_with_attention(module: nn.Module, x: Tensor, **kwargs: Any) -> Attention:
    """Eval-mode, no-grad ``module(x, return_attention=True)`` factors (training flag restored)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(x, return_attention=True, **kwargs)
    finally:
        module.train(was_training)
    return out[1]


def pixel_weights(module: nn.Module, x: Tensor, query: Pair, factors: Mapping[str, Tensor] | None = None,
                  **kwargs: Any) -> PixelWeights:
    """Effective weights of pixel ``query`` = (y, x) for ``module`` on ``x`` (1, C, H, W).

    ``factors``: reuse the output of :func:`run_with_attention` (several queries, one forward);
    ``kwargs`` go to the forward (ANN's AFNB ``low=``). Raises :class:`NoAttentionError` for modules
    without per-pixel weights (ASPP, DANet CAM) and ValueError for a query outside the map.
    """
    name = registered_name(module)
    hint = getattr(type(module), "no_pixel_weights", None)  # why not, and what to use instead (DANet CAM)
    if not own_weight_maps(name) and not hint:
        raise NoAttentionError(f"{name} has no per-pixel attention weights to show (fixed convolutions / pooling); "
                               f"modules with weights: {', '.join(with_weights())}")
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"pixel_weights expects one feature map of shape (1, C, H, W), got {tuple(x.shape)}")
    size: Pair = (int(x.shape[2]), int(x.shape[3]))
    query_size = getattr(module, "weight_query_size", None)  # CARAFE: queries on its upsampled output
    qsize: Pair = tuple(query_size(size)) if query_size is not None else size  # type: ignore[assignment]
    query = check_query(query, qsize, "upsampled map" if qsize != size else "feature map")
    if not own_weight_maps(name):
        raise NoAttentionError(f"{name} {hint}")
    found = dict(factors) if factors is not None else run_with_attention(module, x, **kwargs)
    accepted = inspect.signature(module.weight_maps).parameters
    inputs = {k: v for k, v in kwargs.items() if k in accepted}  # e.g. ANN AFNB's ``low``
    maps, convex = module.weight_maps(found, size, query, **inputs)
    return PixelWeights(name, query, size, dict(maps), bool(convex))


# ----- other pictures ---------------------------------------------------------------------------
def channel_attention(module: nn.Module, x: Tensor) -> Tensor:
    """DANet CAM (alone or in ``danet``): the (C, C) channel attention, row c = the channels that
    channel c gathers from (softmax rows)."""
    name = registered_name(module)
    if name not in ("danet_cam", "danet"):
        raise NoAttentionError(f"{name} has no channel attention (only danet_cam and danet do)")
    factors = run_with_attention(module, x)
    return factors["channel_attention" if name == "danet" else "attention"][0]


def em_responsibilities(module: nn.Module, x: Tensor) -> List[Tensor]:
    """EMANet: the responsibilities Z (K, H, W) after each of the T EM iterations (E-steps), from the
    module's bases buffer, as the forward runs them (``segattn.lowrank`` ``em_step``)."""
    from segattn.lowrank.functional import flatten
    from segattn.lowrank.mappers import em_step
    from segattn.ops.attention import upcast

    if registered_name(module) != "ema":
        raise NoAttentionError(f"EM responsibilities exist only for ema, not {registered_name(module)}")
    mapper = module.block.mapper
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            h = upcast(flatten(module.conv_in(x)))
            mu = upcast(mapper.bases).to(h.dtype).unsqueeze(0).expand(h.shape[0], -1, -1)
            out = []
            for _ in range(mapper.num_stages):
                z, _, mu = em_step(h, mu, mapper.kernel_scale, mapper.l2norm, mapper.eps)
                out.append(z[0].transpose(0, 1).reshape(-1, x.shape[2], x.shape[3]))
    finally:
        module.train(was_training)
    return out


def base_similarity(module: nn.Module, x: Tensor) -> Tensor:
    """EMANet: cosine similarity (K, K) of the final bases ``mu`` for input ``x``."""
    if registered_name(module) != "ema":
        raise NoAttentionError(f"base similarity exists only for ema, not {registered_name(module)}")
    mu = run_with_attention(module, x)["nodes"][0]
    mu = mu / mu.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return mu.transpose(0, 1) @ mu


ASSIGNMENT_KEYS = {"ema": "reverse", "a2": "reverse", "glore": "reverse", "graphrep": "reverse", "sgr": "reverse",
                   "latentgnn": "reverse_0"}


def node_assignments(module: nn.Module, x: Tensor) -> Tensor:
    """Low-rank modules: each pixel's weights over the K nodes / bases, ``M_rev`` as (K, H, W)
    (EMA's responsibilities Z, A2's distribution softmax, GloRe's B, SGR's compatibility, ...)."""
    name = registered_name(module)
    if name not in ASSIGNMENT_KEYS:
        raise NoAttentionError(f"{name} has no node assignment (low-rank modules: {', '.join(sorted(ASSIGNMENT_KEYS))})")
    rev = run_with_attention(module, x)[ASSIGNMENT_KEYS[name]][0]
    return rev.transpose(0, 1).reshape(-1, x.shape[2], x.shape[3])


__all__ = [
    "PixelWeights", "NoAttentionError", "pixel_weights", "run_with_attention", "registered_name", "check_query",
    "channel_attention", "em_responsibilities", "base_similarity", "node_assignments", "supports_pixel_weights",
    "criss_cross_transpose", "own_weight_maps", "with_weights", "extra_inputs",
]
