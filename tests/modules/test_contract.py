"""The context-module contract, run for every registered module and upsampler.

Registering a module is enough for it to be tested here: shapes at odd sizes, batch independence,
input left unchanged, gradients for every parameter, dtypes, channels_last, eval determinism,
gradcheck in float64, analytic FLOPs against FlopCounterMode, returned attention, clear errors.
Upsamplers (ids ``upsampler:<name>``) follow the same contract with the output scaled by
``module.scale_factor``; their own extra checks are in test_upsampler_contract.py.
"""

from __future__ import annotations

import pytest
import torch

import segattn
from segattn.ops.flops import count_macs
from segattn.registry import MODULES, UPSAMPLERS
from tests.helpers import perturb_
from tests.modules.precision import HalfMathProbe, relative_error

C = 16
UPSAMPLER = "upsampler:"
# structural forms of a registered module (options that build other layers) run through the whole contract
FORMS = {
    "dnl[use_out=False]": ("dnl", {"use_out": False, "norm": False}),
    "ocr[leaky_relu]": ("ocr", {"act": "leaky_relu"}),
    "hamburger[gn]": ("hamburger", {"norm": "gn"}),
    "dgmn[after3x3]": ("dgmn", {"block": "after3x3"}),
}
NAMES = segattn.list_modules() + [UPSAMPLER + n for n in segattn.list_upsamplers()] + list(FORMS)


def create(name: str) -> torch.nn.Module:
    if name in FORMS:
        return segattn.create_module(FORMS[name][0], C, **FORMS[name][1])
    if name.startswith(UPSAMPLER):
        return segattn.create_upsampler(name[len(UPSAMPLER):], C)
    return segattn.create_module(name, C)


def build(name: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(create(name)).to(dtype)


def out_shape(module: torch.nn.Module, batch: int, height: int, width: int) -> tuple:
    s = getattr(module, "scale_factor", 1)  # 1 for context modules
    return (batch, module.out_channels, s * height, s * width)


def output(result):
    return result[0] if isinstance(result, tuple) else result


@pytest.mark.parametrize("name", NAMES)
def test_registry_metadata(name):
    registry = UPSAMPLERS if name.startswith(UPSAMPLER) else MODULES
    info = registry.meta(FORMS.get(name, (name,))[0].removeprefix(UPSAMPLER))
    for key in ("paper", "family", "order"):
        assert info.get(key), f"{name} lacks registry metadata {key!r}"
    module = create(name)
    assert module.__doc__ and len(module.__doc__) > 200, f"{name} needs a docstring with equation and shapes"
    assert module.in_channels == C and isinstance(module.out_channels, int)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(1, 1), (7, 13), (65, 97)])
def test_shapes_train_and_eval(name, size):
    module = build(name)
    x = torch.randn(2, C, *size)
    for train in (True, False):
        module.train(train)
        with torch.no_grad():
            y = module(x)
        assert y.shape == out_shape(module, 2, *size)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_batch_one_train(name):
    module = build(name).train()
    y = module(torch.randn(1, C, 5, 6))
    assert y.shape == out_shape(module, 1, 5, 6)


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
    # measured: at most 1.6e-2 (bfloat16) and 9.1e-4 (float16) relative to max |y|: the rounding of
    # half weights, inputs and conv outputs
    err = relative_error(y, ref)
    assert err <= (3e-2 if dtype == torch.bfloat16 else 2.5e-3), f"{dtype} output differs from float32 by {err:.3g}"
    # logits, softmax and normalisations in float32: no matmul / softmax / norm kernel may run in half
    # (an identity ``upcast`` fails here for every module that has logits)
    probe = HalfMathProbe()
    with torch.no_grad(), probe:
        module(x.to(dtype))
    assert not probe.half_ops, f"{sorted(probe.half_ops)} ran in {dtype}"


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
def test_clear_errors(name):
    module = build(name)
    with pytest.raises(ValueError, match="4-D input"):
        module(torch.randn(C, 5, 5))
    with pytest.raises(ValueError, match=f"expects {C} input channels, got {C + 1}"):
        module(torch.randn(1, C + 1, 5, 5))
    with pytest.raises(TypeError, match="floating-point"):
        module(torch.ones(1, C, 5, 5, dtype=torch.long))


@pytest.mark.parametrize("name", NAMES)
def test_compile_fullgraph_and_export(name):
    module = build(name).eval()
    x = torch.randn(2, C, 5, 7)
    with torch.no_grad():
        ref = module(x)
        compiled = torch.compile(module, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), ref, atol=1e-5, rtol=1e-5)
        exported = torch.export.export(module, (x,)).module()
        torch.testing.assert_close(exported(x), ref, atol=1e-5, rtol=1e-5)
