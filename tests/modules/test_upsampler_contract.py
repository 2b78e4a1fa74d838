"""The upsampler contract, run for every registered upsampler (mirrors tests/modules/test_contract.py).

An upsampler maps (B, C, H, W) to (B, C, sH, sW) with ``s = module.scale_factor``; ``flops(H, W)`` takes
the input size. Everything else is the context-module contract.
"""

from __future__ import annotations

import pytest
import torch

import segattn
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

C = 16
NAMES = segattn.list_upsamplers()


def build(name: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(segattn.create_upsampler(name, C)).to(dtype)


def output(result):
    return result[0] if isinstance(result, tuple) else result


def scaled(module, h, w):
    s = module.scale_factor
    return (module.out_channels, s * h, s * w)


def test_registered():
    assert NAMES, "no upsampler registered"


@pytest.mark.parametrize("name", NAMES)
def test_registry_metadata(name):
    entry = segattn.registry.UPSAMPLERS.entry(name)
    for key in ("paper", "family", "order"):
        assert entry.meta.get(key), f"{name} lacks registry metadata {key!r}"
    module = segattn.create_upsampler(name, C)
    assert module.__doc__ and len(module.__doc__) > 200
    assert module.in_channels == C and module.out_channels == C
    assert isinstance(module.scale_factor, int) and module.scale_factor >= 1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(1, 1), (7, 13), (65, 97)])
def test_shapes_train_and_eval(name, size):
    module = build(name)
    x = torch.randn(2, C, *size)
    for train in (True, False):
        module.train(train)
        with torch.no_grad():
            y = module(x)
        assert y.shape == (2, *scaled(module, *size))
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [1, 3])
def test_other_scale_factors(name, scale):
    module = perturb_(segattn.create_upsampler(name, C, scale_factor=scale)).eval()
    with torch.no_grad():
        y = module(torch.randn(1, C, 5, 4))
    assert y.shape == (1, C, 5 * scale, 4 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_batch_one_train(name):
    module = build(name).train()
    y = module(torch.randn(1, C, 5, 6))
    assert y.shape == (1, *scaled(module, 5, 6))


@pytest.mark.parametrize("name", NAMES)
def test_batch_independence_eval(name):
    module = build(name).eval()
    x = torch.randn(3, C, 9, 11)
    with torch.no_grad():
        full = module(x)
        single = module(x[1:2])
    torch.testing.assert_close(full[1:2], single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_input_unchanged_and_deterministic(name):
    module = build(name)
    x = torch.randn(2, C, 8, 10)
    x0 = x.clone()
    module.train()
    module(x)
    module.eval()
    with torch.no_grad():
        a, b = module(x), module(x)
    assert torch.equal(x, x0), "forward modified its input"
    assert torch.equal(a, b), "eval forward is not deterministic"


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_gradient(name):
    module = build(name).train()
    x = torch.randn(2, C, 7, 9, requires_grad=True)
    y = module(x)
    (y * torch.randn_like(y)).sum().backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(name, dtype):
    module = build(name).eval()
    x = torch.randn(2, C, 9, 7)
    with torch.no_grad():
        ref = module(x)
        module.to(dtype)
        y = module(x.to(dtype))
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    err = (y.float() - ref).abs().max().item()
    assert err <= 0.05 * ref.abs().max().item() + 0.05, f"{dtype} output differs from float32 by {err}"


@pytest.mark.parametrize("name", NAMES)
def test_channels_last(name):
    module = build(name).eval()
    x = torch.randn(2, C, 9, 7)
    with torch.no_grad():
        a = module(x)
        b = module(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    module = build(name, torch.float64).eval()
    x = torch.randn(1, C, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: output(module(t)), (x,), fast_mode=True, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_return_attention(name):
    module = build(name).eval()
    x = torch.randn(2, C, 6, 5)
    with torch.no_grad():
        y = module(x)
        y2, factors = module(x, return_attention=True)
    torch.testing.assert_close(y, y2, atol=1e-5, rtol=1e-4)
    assert isinstance(factors, dict) and factors
    assert all(isinstance(t, torch.Tensor) for t in factors.values())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(8, 8), (7, 13)])
def test_flops_match_counter(name, size):
    module = build(name).eval()
    counted = count_macs(module, torch.randn(1, C, *size))
    assert module.flops(*size) == counted


@pytest.mark.parametrize("name", NAMES)
def test_compile_fullgraph(name):
    module = build(name).eval()
    x = torch.randn(1, C, 5, 6)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x))


@pytest.mark.parametrize("name", NAMES)
def test_clear_errors(name):
    module = build(name)
    with pytest.raises(ValueError, match="4-D input"):
        module(torch.randn(C, 5, 5))
    with pytest.raises(ValueError, match=f"expects {C} input channels, got {C + 1}"):
        module(torch.randn(1, C + 1, 5, 5))
    with pytest.raises(TypeError, match="floating-point"):
        module(torch.ones(1, C, 5, 5, dtype=torch.long))


@pytest.mark.parametrize("name", NAMES)
def test_export(name):
    module = build(name).eval()
    x = torch.randn(1, C, 5, 6)
    exported = torch.export.export(module, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), module(x))
