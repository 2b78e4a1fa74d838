"""Tensor recorders: the largest tensor a computation materialises, and the peak of what it keeps alive.

``LargestTensorRecorder`` is a ``TorchDispatchMode`` that sees the output of every aten op of the
forward *and* the backward, plus ``saved_tensors_hooks`` that see every tensor autograd keeps for the
backward. Views count with their full numel (an ``expand`` counts as large), so the figure is an upper
bound of what is materialised. Kernels' internal scratch (e.g. the tiles of fused attention) is not
seen, which is the point: fused kernels never hold the N x N matrix.

``PeakLiveRecorder`` adds up the bytes of every storage an op creates until it is freed, so its
``peak`` is the most the computation held at once (forward and backward). Unlike the peak resident
set it is exact and independent of the allocator and of other processes, so a test can pin it.
"""

from __future__ import annotations

import weakref
from typing import Any, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LargestTensorRecorder(TorchDispatchMode):
    """Record the largest numel of any op output and of any tensor saved for backward.

    Use as a context manager around forward and backward::

        with LargestTensorRecorder() as rec:
            module(x).sum().backward()
        rec.largest, rec.largest_op, rec.attention_ops

    ``attention_ops`` names the scaled-dot-product-attention kernels that ran (e.g.
    ``_scaled_dot_product_flash_attention_for_cpu``, ``_scaled_dot_product_efficient_attention`` on
    CUDA; the math kernel shows as its matmuls and as ``_scaled_dot_product_attention_math``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.largest_op = ""
        self.largest_saved = 0
        self.attention_ops: set = set()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _note(self, numel: int, what: str) -> None:
        if numel > self.largest:
            self.largest, self.largest_op = numel, what

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.largest_saved = max(self.largest_saved, t.numel())
        self._note(t.numel(), "saved for backward")
        return t

    def __torch_dispatch__(self, func: Any, types: Any, args: Tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.__name__ if hasattr(func, "__name__") else str(func)
        if "scaled_dot_product" in name:
            self.attention_ops.add(name.split(".")[0])
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._note(t.numel(), f"{func}{tuple(t.shape)}")
        return out

    def __enter__(self) -> LargestTensorRecorder:
        self._hooks.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._hooks.__exit__(*exc)


class PeakLiveRecorder(TorchDispatchMode):
    """Peak bytes of the storages created inside the block and alive at the same time.

    Every op output whose storage is new is counted from its creation until it is freed (a weakref
    finalizer on the storage); views add nothing. Tensors created before the block (inputs,
    parameters) are not counted, nor is a kernel's internal scratch::

        with PeakLiveRecorder() as rec:
            module(x).sum().backward()
        rec.peak, rec.peak_op
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self.peak_op = ""
        self._live: dict = {}

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in self._live or key in inputs:  # a view or an in-place result
                continue
            self._live[key] = nbytes
            self.current += nbytes
            weakref.finalize(storage, self._free, key)
            if self.current > self.peak:
                self.peak, self.peak_op = self.current, str(func)
        return out


def forward_backward(module: torch.nn.Module, x: torch.Tensor) -> None:
    """One training-mode forward and backward to the input and every parameter."""
    y = module(x)
    y.backward(torch.ones_like(y))


def largest_tensor(module: torch.nn.Module, x: torch.Tensor) -> LargestTensorRecorder:
    """Run ``forward_backward`` under the recorder and return it."""
    with LargestTensorRecorder() as rec:
        forward_backward(module, x)
    return rec
