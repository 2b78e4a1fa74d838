"""The contract every context module follows.

A context module maps ``x`` of shape (B, in_channels, H, W) to (B, out_channels, H, W) for any
B >= 1 and H, W >= 1, in float32 / bfloat16 / float16 (logits and softmax in float32), for contiguous
and channels_last input. ``forward(x, return_attention=True)`` returns ``(y, factors)`` where
``factors`` is a dict of the module's attention (or its low-rank factors) as float32 tensors, so the
identities of the specification can be tested without weight surgery. ``flops(H, W)`` returns the
multiply-accumulates of one forward for batch 1 (see ``segattn.ops.flops``); the registry entry
carries the paper, the family and the asymptotic cost order.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from segattn.checks import checked

Attention = Dict[str, Tensor]
ModuleOutput = Union[Tensor, Tuple[Tensor, Attention]]

def check_feature_map(x: Tensor, channels: Optional[int], what: str) -> None:
    """Raise a clear error unless ``x`` is a floating (B, channels, H, W) tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} expects a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{what} expects a 4-D input of shape (B, C, H, W), got a {x.dim()}-D tensor of shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{what} expects a floating-point input (float32, bfloat16 or float16), got {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{what} expects {channels} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})")
    if x.shape[0] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{what} expects B, H, W >= 1, got shape {tuple(x.shape)}")

def _is_compiling() -> bool:
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check()) if check is not None else False


def _autocast_on(device_type: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch < 2.4: no device argument
        return bool(torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled())


def check_dtype(module: nn.Module, x: Tensor, what: str) -> None:
    """``TypeError`` unless ``x`` has the dtype of ``module``'s floating parameters (any dtype under autocast)."""
    if _is_compiling():
        return
    ref = next((p for p in module.parameters() if p.is_floating_point()), None)
    if ref is not None and x.dtype != ref.dtype and not _autocast_on(x.device.type):
        raise TypeError(f"{what} has {ref.dtype} weights but got a {x.dtype} input; convert the input "
                        f"(x.to({ref.dtype})) or the module (.to({x.dtype})), or run under torch.autocast")


def check_size(height: Any, width: Any, what: str) -> None:
    """``ValueError`` naming the value unless ``height`` and ``width`` are integers >= 1."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{what} expects integer height and width >= 1, got {name}={value!r}")


def _checked_flops(flops: Callable[..., int]) -> Callable[..., int]:
    """``flops`` that refuses a size no input can have (``flops(-3, 5)`` would give a negative count)."""

    @functools.wraps(flops)
    def checked(self: nn.Module, height: int, width: int, *args: Any, **kwargs: Any) -> int:
        check_size(height, width, f"{type(self).__name__}.flops")
        return flops(self, height, width, *args, **kwargs)

    checked._checks_size = True  # type: ignore[attr-defined]
    return checked


class ContextModule(nn.Module):
    """Base class: stores channel counts, validates input, declares ``flops`` (whose size every
    subclass's override checks: height and width are integers >= 1)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("flops")
        if callable(own) and not getattr(own, "_checks_size", False):
            cls.flops = _checked_flops(own)  # type: ignore[method-assign]

    @checked()
    def __init__(self, in_channels: int, out_channels: Optional[int] = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels

    def check_input(self, x: Tensor) -> None:
        """Clear errors for a wrong shape, channel count or dtype (see :func:`check_feature_map`)."""
        check_feature_map(x, self.in_channels, type(self).__name__)
        check_dtype(self, x, type(self).__name__)

    def flops(self, height: int, width: int) -> int:
        """Multiply-accumulates of one forward at (1, in_channels, height, width)."""
        raise NotImplementedError(f"{type(self).__name__} does not report its cost")

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}"

def zero_init_(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero (the spec's zero-initialised output layers)."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module
