"""Softmax attention over positions: one fused path and one naive reference path.

``softmax_attention(q, k, v)`` computes, for queries ``q`` (..., N, d), keys ``k`` (..., M, d) and
values ``v`` (..., M, dv)::

    out = softmax_j(scale * q k^T) v            (..., N, dv)

The fused path calls ``torch.nn.functional.scaled_dot_product_attention``. When ``d != dv`` the
smaller side is zero-padded (zeros change neither the logits nor the aggregation) because the fused
CPU/CUDA kernels need equal head sizes and otherwise fall back to the math kernel, which
materialises the N x M matrix. Inputs in float16/bfloat16 are computed in float32 on CPU so that the
logits and the softmax stay in float32 (on CUDA the fused kernels accumulate in float32 already);
on CPU that region runs with ``torch.autocast`` switched off (:func:`full_precision`), so AMP cannot
recast it.

On CUDA the call is restricted to the fused backends (flash, memory-efficient, cuDNN): where none of
them takes the shapes or dtype (e.g. float32 with a head size the kernels refuse), PyTorch would
silently run the math kernel and build N x M; here the exact chunked path runs instead, with a
warning that names the shapes (:func:`cuda_fused_attention`).

The reference path materialises the logits in float32; it is used when the attention weights are
requested, inside ``reference_attention()`` (tests, FLOP counting), and as the spec for the fused path.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

_REFERENCE = False


@contextlib.contextmanager
def reference_attention(enabled: bool = True) -> Iterator[None]:
    """Within this context every attention kernel takes its naive (materialising) path."""
    global _REFERENCE
    previous, _REFERENCE = _REFERENCE, enabled
    try:
        yield
    finally:
        _REFERENCE = previous


def use_reference() -> bool:
    """Whether kernels should take their naive reference path now."""
    return _REFERENCE


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dim() < 3 or q.dim() != k.dim() or q.dim() != v.dim():
        raise ValueError(
            f"attention expects q, k, v of equal rank >= 3 (..., positions, channels); "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"query and key channel counts differ: {q.shape[-1]} vs {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"key and value position counts differ: {k.shape[-2]} vs {v.shape[-2]}")


def upcast(t: Tensor) -> Tensor:
    """float16/bfloat16 -> float32; float32/float64 unchanged (the precision logits are kept in).

    Under ``torch.autocast`` a copy made here would be cast back down by the next matmul: use it
    inside :func:`full_precision`, which switches autocast off for the logit / softmax /
    normalisation math.
    """
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


@contextlib.contextmanager
def full_precision(device: Union[torch.device, str]) -> Iterator[None]:
    """Switch ``torch.autocast`` off for ``device`` inside the block (a no-op when it is off).

    Every logit, softmax and normalisation region of the modules runs inside it on :func:`upcast`
    inputs, so "logits and softmax in float32" holds for ``module.to(half)`` and under autocast
    (the engine's AMP) alike. Convolutions stay outside, in the autocast dtype.
    """
    device_type = device.type if isinstance(device, torch.device) else str(device)
    if _autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            yield
    else:
        yield


def attention_weights(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """``softmax_j(scale * q k^T)`` in at least float32, shape (..., N, M). Materialises N x M."""
    with full_precision(q.device):
        logits = torch.matmul(upcast(q), upcast(k).transpose(-1, -2))
        return torch.softmax(logits * scale, dim=-1)


def softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: Optional[float] = None,
    return_weights: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Softmax attention ``softmax(scale q k^T) v``; shapes (..., N, d), (..., M, d), (..., M, dv).

    ``scale`` defaults to ``1/sqrt(d)``; pass ``1.0`` for unscaled logits (DANet, CCNet).
    With ``return_weights`` the (..., N, M) weights (float32, or float64 for float64 input) are returned too (naive path).
    The output has ``v``'s dtype.
    """
    _check_qkv(q, k, v)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if return_weights or _REFERENCE or _few_keys(q, k, v):
        weights = attention_weights(q, k, scale)
        with full_precision(v.device):
            out = torch.matmul(weights, upcast(v)).to(v.dtype)
        return (out, weights) if return_weights else out
    return _fused_attention(q, k, v, scale)


def attend(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None,
           weights: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """:func:`softmax_attention` as ``(output, weights)``: the (..., N, M) weights when ``weights`` (naive
    path), else ``None`` and the fused / chunked path that never holds them."""
    if weights:
        return softmax_attention(q, k, v, scale=scale, return_weights=True)  # type: ignore[return-value]
    return softmax_attention(q, k, v, scale=scale), None  # type: ignore[return-value]


def _few_keys(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """CPU, at most as many keys as value channels (M <= dv): the (..., N, M) weights are no larger
    than the output, so the plain matmul-softmax-matmul costs no more memory than the fused kernel and
    skips its padding of q and k. ISA's groups (M = 64 or 256 keys, d = 256, dv = 512): 0.52-0.65x the
    padded fused kernel's forward time at 1 thread (``python benchmarks/attention_paths.py``; the
    chunked path: 1.15-2.9x), and the ISA head's peak 48 instead of 56 MiB at 64x64."""
    # compiling first: a shape comparison while tracing would guard the graph on the size
    return not torch.compiler.is_compiling() and q.device.type == "cpu" and k.shape[-2] <= v.shape[-1]


def _fused_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    if q.device.type == "cuda":
        return cuda_fused_attention(q, k, v, scale)
    if q.device.type == "cpu":  # CPU kernels would compute half logits: float32, autocast off
        with full_precision(q.device):
            if _use_chunked(q, k, v):
                return ChunkedAttention.apply(upcast(q), upcast(k), upcast(v), scale).to(v.dtype)
            return _fused_kernel(upcast(q), upcast(k), upcast(v), scale).to(v.dtype)
    return _fused_kernel(q, k, v, scale)


def _fused_backends() -> Optional[List[object]]:
    """The SDPA backends that never build N x M (None where torch lacks ``torch.nn.attention``)."""
    try:
        from torch.nn.attention import SDPBackend
    except ImportError:  # torch < 2.3
        return None
    return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]


_WARNED: set = set()


def cuda_fused_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """SDPA restricted to the fused backends (their kernels accumulate in float32); where none of them
    accepts the inputs, the exact :class:`ChunkedAttention` (O(chunk) memory) instead of the math
    kernel, with one warning per (shapes, dtype)."""
    backends = _fused_backends()
    if backends is None or torch.compiler.is_compiling():
        return _fused_kernel(q, k, v, scale)
    from torch.nn.attention import sdpa_kernel

    try:
        with sdpa_kernel(backends):
            return _fused_kernel(q, k, v, scale)
    except RuntimeError as exc:  # "No available kernel": no fused backend for these inputs
        key = (tuple(q.shape), tuple(k.shape), tuple(v.shape), q.dtype)
        if key not in _WARNED:
            _WARNED.add(key)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.warn(f"no fused attention kernel for q {tuple(q.shape)}, k {tuple(k.shape)}, "
                          f"v {tuple(v.shape)} in {q.dtype} ({reason}); using the exact chunked path "
                          "(never the math kernel, which would build the N x M matrix)", stacklevel=3)
        dtype = v.dtype
        with full_precision(q.device):
            return ChunkedAttention.apply(upcast(q), upcast(k), upcast(v), scale).to(dtype)


def _use_chunked(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """CPU, key width d < value width dv: chunked under autograd, and without it when dv >= 4 d (the
    padded fused kernel's forward then runs at least 1.6x the MACs; measured: chunked 0.79-0.82x its
    time at d = dv / 8). Never while compiling (the fused kernel traces as one op)."""
    d, dv = q.shape[-1], v.shape[-1]
    if d >= dv or torch.compiler.is_compiling():
        return False
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return needs_grad or 4 * d <= dv


# Largest number of logits the chunked path holds at once (all batch entries of a query chunk).
CHUNK_ELEMENTS = 1 << 22


def _chunk_rows(q: Tensor, m: int) -> int:
    """Query rows per chunk: at most ``CHUNK_ELEMENTS`` logits and at most 1/16 of the N x M map."""
    batch = q[..., 0, 0].numel()
    return max(1, min(CHUNK_ELEMENTS // max(1, batch * m), q.shape[-2] // 16))


class ChunkedAttention(torch.autograd.Function):
    """Exact softmax attention over query chunks, for key width d < value width dv under autograd (CPU).

    The fused kernels need d == dv, so the fused path pads q and k to dv: its logits cost N M dv
    instead of N M d (DANet PAM: d = dv / 8, 1.8x the algorithm's MACs), three times in its backward.
    Here, per chunk of queries: ``S = scale q_c k^T`` (N_c x M), ``P = exp(S - lse)``,
    ``out_c = P v``; saved are q, k, v, the output and the row log-sum-exp (O((N + M) dv)), and the
    backward recomputes P per chunk: ``dv += P^T g``, ``dS = P * (g v^T - rowsum(g * out))``,
    ``dq = scale dS k``, ``dk += scale dS^T q``. Cost: forward ``N M (d + dv)``, backward
    ``N M (3 d + 2 dv)``. Measured on a 2-core CPU at d = 64, dv = 512 (DANet PAM), interleaved:
    forward+backward 0.62x the padded fused kernel's time at 64x64 tokens (materialised softmax:
    0.58x), forward alone 0.82x at 64x64 and 0.79x at 90x90 (materialised: 0.84x, 0.87x).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        q3, k3, v3 = batch_3d(q), batch_3d(k), batch_3d(v)
        batch, n, m = q3.shape[0], q3.shape[1], k3.shape[1]
        rows = _chunk_rows(q, m)
        kt = k3.transpose(1, 2)
        scratch = q3.new_empty(batch * min(rows, n) * m)  # one logits buffer for every chunk
        out = v3.new_empty(batch, n, v3.shape[-1])
        lse = q3.new_empty(batch, n, 1)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            p = torch.bmm(q3[:, start:stop], kt, out=scratch_view(scratch, batch, stop - start, m)).mul_(scale)
            row_max = p.amax(dim=-1, keepdim=True)
            total = p.sub_(row_max).exp_().sum(dim=-1, keepdim=True)
            out[:, start:stop] = torch.bmm(p.div_(total), v3)
            lse[:, start:stop] = row_max + total.log()
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out.view(*v.shape[:-2], n, v.shape[-1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        q3, k3, v3, g3 = batch_3d(q), batch_3d(k), batch_3d(v), batch_3d(grad)
        batch, n, m = q3.shape[0], q3.shape[1], k3.shape[1]
        scale, rows = ctx.scale, _chunk_rows(q, m)
        kt, vt = k3.transpose(1, 2), v3.transpose(1, 2)
        delta = (g3 * out).sum(dim=-1, keepdim=True)
        grad_q, grad_k, grad_v = torch.empty_like(q3), torch.zeros_like(k3), torch.zeros_like(v3)
        p_scratch = q3.new_empty(batch * min(rows, n) * m)
        ds_scratch = torch.empty_like(p_scratch)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            qc, gc = q3[:, start:stop], g3[:, start:stop]
            p = torch.bmm(qc, kt, out=scratch_view(p_scratch, batch, stop - start, m))
            p.mul_(scale).sub_(lse[:, start:stop]).exp_()
            grad_v.baddbmm_(p.transpose(1, 2), gc)
            ds = torch.bmm(gc, vt, out=scratch_view(ds_scratch, batch, stop - start, m))
            ds.sub_(delta[:, start:stop]).mul_(p).mul_(scale)
            grad_q[:, start:stop] = torch.bmm(ds, k3)
            grad_k.baddbmm_(ds.transpose(1, 2), qc)
        return grad_q.view(q.shape), grad_k.view(k.shape), grad_v.view(v.shape), None


def batch_3d(t: Tensor) -> Tensor:
    """(..., S, C) -> (prod(...), S, C), a view where the layout allows."""
    return t.reshape(-1, t.shape[-2], t.shape[-1])


def scratch_view(scratch: Tensor, batch: int, rows: int, m: int) -> Tensor:
    """The first ``batch * rows * m`` elements of a flat buffer as a contiguous (batch, rows, m) tensor.

    Reusing one buffer for every chunk matters on CPU: a fresh multi-MiB allocation per chunk let
    glibc keep each freed block (resident memory grew by the whole N x M map at N = 32768, now and
    then), and every fresh block costs its page faults again."""
    return scratch[: batch * rows * m].view(batch, rows, m)


def _fused_kernel(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    out_dtype = v.dtype
    d, dv = q.shape[-1], v.shape[-1]
    if d < dv:
        q, k = F.pad(q, (0, dv - d)), F.pad(k, (0, dv - d))
    elif dv < d:
        v = F.pad(v, (0, d - dv))
    # The fused CPU kernel needs unit stride along channels (tokens from x.flatten(2).transpose(1, 2)
    # have not) and a head axis; otherwise SDPA silently takes the math path, which builds N x M.
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if q.dim() == 3:
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=scale).squeeze(1)
    else:
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out[..., :dv].to(out_dtype)


def linear_attention(q: Tensor, k: Tensor, v: Tensor, normaliser: Optional[float] = None) -> Tensor:
    """Dot-product attention without softmax, ``(q k^T / M) v``, computed as ``q (k^T v) / M``.

    O(N d dv) time and O(d dv) extra memory instead of O(N M). ``normaliser`` defaults to M
    (the number of key positions, as the Non-local paper's dot-product form). Both products are
    plain matmuls, so FlopCounterMode sees the true (linear) cost on every path; the quadratic form
    it equals is checked in the tests. Computed in at least float32 (autocast off); the result has
    that dtype.
    """
    _check_qkv(q, k, v)
    norm = float(k.shape[-2]) if normaliser is None else float(normaliser)
    with full_precision(q.device):
        return torch.matmul(upcast(q), torch.matmul(upcast(k).transpose(-1, -2), upcast(v))) / norm
