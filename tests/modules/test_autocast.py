"""Every registered module under ``torch.autocast`` (the engine's AMP): logits stay float32.

Two checks per module: (1) a dispatch probe (``precision.HalfMathProbe``) sees every matrix product,
softmax, normalisation, sigmoid and SDPA kernel that autocast runs, and none may run in bfloat16 —
only the convolutions may; (2) the output under ``autocast(cpu, bfloat16)`` matches float32 on
large-magnitude post-ReLU inputs (8 |N(0, 1)|, as post-ReLU features late in a network), where half
logits lose the softmax (DANet CAM: relative error 0.34 before the fix, exactly 0 after). The
remaining error is the rounding of the convolutions' bfloat16 outputs, which AMP does by design.
On a CUDA machine the same two checks also run for float16 and bfloat16 autocast on the GPU (skipped
elsewhere; not run in this project's CI, which has no GPU).
"""

from __future__ import annotations

import pytest
import torch

import segattn
from tests.helpers import perturb_
from tests.modules.precision import HalfMathProbe, relative_error

C = 16
UPSAMPLER = "upsampler:"
NAMES = segattn.list_modules() + [UPSAMPLER + n for n in segattn.list_upsamplers()]
# measured after the fix (max over modules 3.3e-2: local_relation, whose q k logits are products of two
# bfloat16 conv outputs); CAM before the fix: 0.34, DANet 0.071, CCNet 0.037 (see the helper's note)
TOLERANCE = 5e-2


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith(UPSAMPLER):
        module = segattn.create_upsampler(name[len(UPSAMPLER):], C)
    else:
        module = segattn.create_module(name, C)
    return perturb_(module).eval()


def large_input(scale: float = 8.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, C, 12, 10, generator=g).relu() * scale


@pytest.mark.parametrize("name", NAMES)
def test_autocast_runs_no_half_logits(name):
    module = build(name)
    probe = HalfMathProbe()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), probe:
        module(large_input())
    assert not probe.half_ops, f"{name}: {sorted(probe.half_ops)} ran in bfloat16 under autocast"


@pytest.mark.parametrize("name", NAMES)
def test_autocast_bf16_matches_float32_large_inputs(name):
    module = build(name)
    x = large_input()
    with torch.no_grad():
        ref = module(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(x)
    assert torch.isfinite(y).all()
    err = relative_error(y, ref)
    assert err <= TOLERANCE, f"{name}: autocast(bfloat16) differs from float32 by {err:.3g} (relative to max |y|)"


@pytest.mark.parametrize("name", NAMES)
def test_training_step_under_autocast(name):
    module = build(name).train()
    x = large_input().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x)
    y.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()


def test_danet_cam_float16_autocast_does_not_overflow():
    """CAM energies of post-ReLU features exceed the float16 range (65504): float32 keeps them finite."""
    module = build("danet_cam")
    x = torch.randn(1, C, 32, 64, generator=torch.Generator().manual_seed(2)).relu() * 30
    with torch.no_grad():
        ref = module(x)
        with torch.autocast("cpu", dtype=torch.float16):
            y = module(x)
        energy = module(x, return_attention=True)[1]["energy"]
    assert energy.max() > torch.finfo(torch.float16).max  # the case that gave inf / NaN
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, ref, atol=0, rtol=0)


def test_latentgnn_symmetric_float16_has_no_nan():
    """All-zero psi columns: F.normalize's eps underflows in float16 (0 / 0); the norm runs in float32."""
    torch.manual_seed(0)
    module = segattn.create_module("latentgnn", C, mode="symmetric", latent_dims=(4,))
    perturb_(module).eval()
    with torch.no_grad():
        psi = module.kernels[0].mapper.proj[0]  # conv -> BN -> ReLU, then the L2 norm over latents
        psi[0].weight.zero_()
        psi[1].bias.fill_(-1.0)  # ReLU(-1) = 0: every pixel's latent column is zero
        x = torch.randn(2, C, 6, 5)
        ref = module(x)
        y = module.half()(x.half())
    assert torch.isfinite(y).all()
    assert relative_error(y, ref) < 1e-2


CUDA_CASES = [(n, d) for n in NAMES for d in (torch.float16, torch.bfloat16)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name,dtype", CUDA_CASES, ids=[f"{n}-{str(d)[6:]}" for n, d in CUDA_CASES])
def test_cuda_autocast_matches_float32_and_keeps_logits_float32(name, dtype):
    module = build(name).cuda()
    x = large_input().cuda()
    probe = HalfMathProbe()
    with torch.no_grad():
        ref = module(x)
        with torch.autocast("cuda", dtype=dtype), probe:
            y = module(x)
    assert torch.isfinite(y).all()
    assert relative_error(y, ref) <= TOLERANCE
    # on CUDA the fused SDPA kernels take half inputs by design (they accumulate in float32)
    assert not {op for op in probe.half_ops if "scaled_dot_product" not in op}, sorted(probe.half_ops)
