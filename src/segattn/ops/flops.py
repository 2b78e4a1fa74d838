"""Analytic cost helpers and FLOP counting with ``torch.utils.flop_counter.FlopCounterMode``.

Convention: every ``flops`` figure in segattn counts **multiply-accumulates (MACs)** of one forward
pass for batch 1: convolutions, linear layers and matrix products. Element-wise work (softmax,
normalisation, activations, additions, pooling, interpolation) is not counted, which is also what
FlopCounterMode counts (it reports 2 FLOPs per MAC; ``count_macs`` halves that).

Blind spots of FlopCounterMode that matter here, and what we do about them:

* the fused CPU attention kernel ``aten._scaled_dot_product_flash_attention_for_cpu`` has no formula
  and counts 0: ``install_flop_formulas()`` registers one (same formula as the CUDA flash kernel);
* aggregation written as ``unfold`` + element-wise multiply + sum counts 0: modules that aggregate
  that way state it, and tests count them under ``reference_attention()`` where they use einsum/bmm.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from segattn.ops.attention import reference_attention


def conv2d_macs(in_channels: int, out_channels: int, kernel_size: int, height: int, width: int, groups: int = 1) -> int:
    """MACs of a stride-1 'same' k x k convolution evaluated at ``height x width`` outputs."""
    return (in_channels // groups) * out_channels * kernel_size * kernel_size * height * width


def matmul_macs(n: int, m: int, p: int) -> int:
    """MACs of an (n x m) @ (m x p) product."""
    return n * m * p


def attention_macs(n: int, m: int, d: int, dv: int) -> int:
    """MACs of softmax attention with N queries, M keys, d key channels and dv value channels."""
    return n * m * d + n * m * dv


_installed = False


def install_flop_formulas() -> None:
    """Teach FlopCounterMode the fused CPU attention kernel (it counts 0 otherwise). Idempotent."""
    global _installed
    if _installed:
        return
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    register = getattr(torch.utils.flop_counter, "register_flop_formula", None)
    if op is not None and register is not None:

        @register(op)
        def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
            *batch, n, d = query_shape
            m, dv = key_shape[-2], value_shape[-1]
            b = 1
            for s in batch:
                b *= s
            return 2 * b * (n * m * d + n * m * dv)

    _installed = True


def count_macs(fn: Callable[..., Any], *args: Any, reference: bool = True, **kwargs: Any) -> int:
    """MACs that FlopCounterMode sees while running ``fn(*args, **kwargs)`` without gradients.

    With ``reference`` (default) attention kernels take their naive path so every product is a
    visible matmul.
    """
    install_flop_formulas()
    with torch.no_grad(), reference_attention(reference), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() // 2
