import pytest
import torch

from segattn.bench.tensors import LargestTensorRecorder
from segattn.ops.attention import linear_attention, reference_attention, softmax_attention
from segattn.ops.flops import count_macs


@pytest.mark.parametrize("d,dv", [(8, 8), (4, 12), (12, 4)])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_fused_equals_naive(d, dv, scale):
    q, k, v = torch.randn(2, 37, d), torch.randn(2, 23, d), torch.randn(2, 23, dv)
    fused = softmax_attention(q, k, v, scale=scale)
    with reference_attention():
        naive = softmax_attention(q, k, v, scale=scale)
    out, w = softmax_attention(q, k, v, scale=scale, return_weights=True)
    torch.testing.assert_close(fused, naive, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, naive)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 37))
    # the kernel's formula, written out
    s = scale if scale is not None else d**-0.5
    torch.testing.assert_close(naive, torch.softmax(q @ k.transpose(1, 2) * s, -1) @ v, atol=1e-5, rtol=1e-5)


def test_fused_gradients_equal_naive():
    q, k, v = (torch.randn(1, 2, 30, 6, dtype=torch.float64, requires_grad=True) for _ in range(3))
    g1 = torch.autograd.grad(softmax_attention(q, k, v).sum(), (q, k, v))
    with reference_attention():
        g2 = torch.autograd.grad(softmax_attention(q, k, v).sum(), (q, k, v))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_keep_dtype(dtype):
    q, k, v = (torch.randn(1, 50, 8).to(dtype) for _ in range(3))
    out = softmax_attention(q, k, v)
    assert out.dtype == dtype
    with reference_attention():
        ref = softmax_attention(q, k, v)
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)


def test_linear_attention_equals_quadratic():
    q, k, v = (torch.randn(2, 40, 5, dtype=torch.float64) for _ in range(3))
    fast = linear_attention(q, k, v)
    torch.testing.assert_close(fast, (q @ k.transpose(1, 2) / 40) @ v)
    assert count_macs(linear_attention, q, k, v) == 2 * (40 * 5 * 5 + 40 * 5 * 5)  # batch 2, linear, not 40 x 40


def test_shape_errors():
    with pytest.raises(ValueError, match="channel counts differ"):
        softmax_attention(torch.randn(1, 4, 3), torch.randn(1, 4, 5), torch.randn(1, 4, 5))
    with pytest.raises(ValueError, match="position counts differ"):
        softmax_attention(torch.randn(1, 4, 3), torch.randn(1, 4, 3), torch.randn(1, 5, 3))


def test_flop_counter_sees_fused_cpu_kernel():
    q, k, v = torch.randn(1, 1, 64, 16), torch.randn(1, 1, 32, 16), torch.randn(1, 1, 32, 16)
    fused = count_macs(softmax_attention, q, k, v, reference=False)
    naive = count_macs(softmax_attention, q, k, v, reference=True)
    assert naive == 64 * 32 * 16 * 2
    assert fused == naive


def _largest_output_numel(fn):
    with LargestTensorRecorder() as rec:
        fn()
    return rec.largest


@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("transposed", [False, True])
def test_fused_path_never_materialises_n_by_m(rank, transposed):
    n, m = 600, 500
    shape = (1, n, 8) if rank == 3 else (1, 2, n, 8)
    q = torch.randn(shape, requires_grad=True)
    if transposed:  # tokens as x.flatten(2).transpose(1, 2) gives them: channels not contiguous
        q = torch.randn(shape[:-2] + (8, n), requires_grad=True).transpose(-1, -2)
    k = torch.randn(shape[:-2] + (m, 8), requires_grad=True)
    v = torch.randn(shape[:-2] + (m, 16), requires_grad=True)

    def step():
        softmax_attention(q, k, v).sum().backward()

    assert _largest_output_numel(step) < n * m
    with reference_attention():
        assert _largest_output_numel(step) >= n * m  # the recorder does see a materialised matrix


def _assert_equals_formula_with_gradients(out, q, k, v, scale):
    """``out`` and its gradients to q, k, v equal the materialised ``softmax(scale q k^T) v`` (float64)."""
    naive = torch.softmax(scale * q @ k.transpose(-1, -2), dim=-1) @ v
    torch.testing.assert_close(out, naive, atol=1e-12, rtol=0)
    cot = torch.randn_like(naive)
    got = torch.autograd.grad((out * cot).sum(), (q, k, v), retain_graph=True)
    want = torch.autograd.grad((naive * cot).sum(), (q, k, v), retain_graph=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    return naive


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_chunked_attention_equals_naive_with_gradients(monkeypatch, scale):
    """The exact chunked path (d < dv under autograd) against the materialised formula, several chunks."""
    from segattn.ops import attention

    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", 2 * 3 * 37)  # 3 query rows per chunk of 2 x 37 keys
    q = torch.randn(2, 50, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 37, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 37, 9, dtype=torch.float64, requires_grad=True)
    out = softmax_attention(q, k, v, scale=scale)
    assert type(out.grad_fn).__name__ == "ChunkedAttentionBackward"  # the path under test
    naive = _assert_equals_formula_with_gradients(out, q, k, v, scale)
    assert torch.autograd.gradcheck(lambda a, b, c: attention.ChunkedAttention.apply(a, b, c, scale),
                                    (q[:1, :7], k[:1, :5], v[:1, :5, :3]))
    with torch.no_grad():  # forward alone keeps the fused kernel for dv < 4 d
        torch.testing.assert_close(softmax_attention(q, k, v, scale=scale), naive, atol=1e-12, rtol=0)


def test_forward_takes_chunked_path_only_for_wide_values(monkeypatch):
    from segattn.ops import attention

    calls = []
    original = attention.ChunkedAttention.apply
    monkeypatch.setattr(attention.ChunkedAttention, "apply", lambda *a: calls.append(1) or original(*a))
    q, k = torch.randn(1, 40, 4), torch.randn(1, 30, 4)
    with torch.no_grad():
        for dv, chunked in ((16, True), (15, False), (4, False)):
            v = torch.randn(1, 30, dv)
            calls.clear()
            out = softmax_attention(q, k, v, scale=0.5)
            assert bool(calls) == chunked, dv
            with reference_attention():
                torch.testing.assert_close(out, softmax_attention(q, k, v, scale=0.5))


def test_chunked_attention_holds_a_bounded_part_of_the_map():
    q = torch.randn(1, 1, 24 * 24, 4, requires_grad=True)
    k = torch.randn(1, 1, 24 * 24, 4, requires_grad=True)
    v = torch.randn(1, 1, 24 * 24, 32, requires_grad=True)
    with LargestTensorRecorder() as rec:
        softmax_attention(q, k, v, scale=1.0).sum().backward()
    assert rec.largest <= 24**4 // 16, rec.largest_op  # at most 1/16 of N x M at a time


def _restrict(monkeypatch, *names):
    from torch.nn.attention import SDPBackend

    from segattn.ops import attention

    monkeypatch.setattr(attention, "_fused_backends", lambda: [getattr(SDPBackend, n) for n in names])
    monkeypatch.setattr(attention, "_WARNED", set())


@pytest.mark.parametrize("d, dv", [(8, 8), (4, 16)])
def test_restricted_sdpa_falls_back_to_chunked_not_math(monkeypatch, d, dv):
    """The CUDA dispatch (run here on CPU): with no fused backend for the inputs, the exact chunked path
    runs (same values and gradients as the naive formula), warns once, and never builds N x M."""
    from segattn.ops.attention import cuda_fused_attention

    _restrict(monkeypatch, "EFFICIENT_ATTENTION")  # no CPU kernel: SDPA raises "No available kernel"
    q, k = torch.randn(2, 40, d, requires_grad=True), torch.randn(2, 48, d, requires_grad=True)
    v = torch.randn(2, 48, dv, requires_grad=True)
    with pytest.warns(UserWarning, match="no fused attention kernel.*exact chunked path"):
        with LargestTensorRecorder() as rec:
            out = cuda_fused_attention(q, k, v, 0.3)
            out.sum().backward()
    assert not rec.attention_ops and rec.largest < 40 * 48
    grads = [t.grad for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    with reference_attention():
        ref = softmax_attention(q, k, v, scale=0.3)
    ref.sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for g, t in zip(grads, (q, k, v)):
        torch.testing.assert_close(g, t.grad, atol=1e-5, rtol=1e-5)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call with the same shapes stays quiet
        cuda_fused_attention(q, k, v, 0.3)


def test_restricted_sdpa_uses_the_fused_kernel_when_it_fits(monkeypatch):
    from segattn.ops.attention import cuda_fused_attention

    _restrict(monkeypatch, "FLASH_ATTENTION")  # the CPU flash kernel takes these
    q, k, v = torch.randn(1, 30, 8), torch.randn(1, 20, 8), torch.randn(1, 20, 8)
    import warnings

    with warnings.catch_warnings(), LargestTensorRecorder() as rec:
        warnings.simplefilter("error")
        out = cuda_fused_attention(q, k, v, 0.5)
    assert any("flash_attention" in op for op in rec.attention_ops)
    with reference_attention():
        torch.testing.assert_close(out, softmax_attention(q, k, v, scale=0.5), atol=1e-5, rtol=1e-5)


DENSE = ["nonlocal", "nonlocal_gaussian", "danet_pam", "danet", "ocnet_base", "ocnet_pyramid", "ocnet_asp", "isa"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", DENSE)
def test_cuda_dense_modules_never_take_the_math_kernel(name, dtype):
    """On CUDA every dense module runs a fused SDPA kernel or the chunked path, under fp32 and AMP: a
    silent fallback to the math kernel (N x N logits) fails here, naming the kernels that ran."""
    import segattn

    module = segattn.create_module(name, 64).cuda().train()
    x = torch.randn(2, 64, 32, 32, device="cuda", requires_grad=True)
    n = 32 * 32
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32), LargestTensorRecorder() as rec:
        module(x).float().sum().backward()
    assert "_scaled_dot_product_attention_math" not in rec.attention_ops, rec.attention_ops
    assert rec.largest < n * n // 4, f"{rec.largest_op} ({rec.largest} elements, N x N = {n * n}); kernels {rec.attention_ops}"


def test_few_keys_take_the_plain_product_on_cpu():
    """M <= dv: the (N, M) weights are no larger than the output, so the plain matmul-softmax-matmul
    runs (no SDPA call, no padded q / k); one key more and the fused kernel runs again."""
    q = torch.randn(1, 3, 40, 16, dtype=torch.float64, requires_grad=True)  # d = dv: else the chunked path
    for m, plain in ((16, True), (17, False)):
        k = torch.randn(1, 3, m, 16, dtype=torch.float64, requires_grad=True)
        v = torch.randn(1, 3, m, 16, dtype=torch.float64, requires_grad=True)
        with LargestTensorRecorder() as rec:
            out = softmax_attention(q, k, v, scale=0.7)
        assert (not rec.attention_ops) == plain, (m, rec.attention_ops)
        _assert_equals_formula_with_gradients(out, q, k, v, 0.7)


def test_chunked_attention_reuses_its_logits_buffers(monkeypatch):
    """Every chunk's logits go into flat buffers made once per pass, instead of a fresh N_c x M block per
    chunk, which glibc could keep resident (the whole N x M map's worth, seen at N = 32768): no product
    or element-wise op allocates a chunk-sized tensor."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from segattn.ops import attention

    chunk = 2 * 4 * 40  # 4 query rows x 40 keys x batch 2
    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", chunk)
    fresh = []

    class FreshChunks(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.numel() == chunk and (kwargs or {}).get("out") is not out:
                if not any(isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() ==
                           out.untyped_storage().data_ptr() for a in args):
                    fresh.append(str(func))
            return out

    q = torch.randn(2, 64, 3, requires_grad=True)  # 16 chunks; no input or gradient has the chunk's size
    k = torch.randn(2, 40, 3, requires_grad=True)
    v = torch.randn(2, 40, 16, requires_grad=True)
    with FreshChunks():
        attention.ChunkedAttention.apply(q, k, v, 0.5).sum().backward()
    assert not [name for name in fresh if "empty" not in name], fresh


def test_attend_returns_weights_only_when_asked():
    from segattn.ops.attention import attend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    y, w = attend(q, k, v, 0.5, weights=True)
    ref_w = torch.softmax(0.5 * q @ k.transpose(-1, -2), dim=-1)
    torch.testing.assert_close(w, ref_w)
    torch.testing.assert_close(y, ref_w @ v)
    y2, none = attend(q, k, v, 0.5)
    assert none is None
    torch.testing.assert_close(y2, y)
