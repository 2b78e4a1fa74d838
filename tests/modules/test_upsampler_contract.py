"""What upsamplers add to the contract (tests/modules/test_contract.py runs the shared part for them).

An upsampler maps (B, C, H, W) to (B, C, sH, sW) with ``s = module.scale_factor``; ``flops(H, W)`` takes
the input size.
"""

from __future__ import annotations

import pytest
import torch

import segattn
from tests.helpers import perturb_

C = 16
NAMES = segattn.list_upsamplers()


def build(name: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(segattn.create_upsampler(name, C)).to(dtype)


def test_registered():
    assert NAMES, "no upsampler registered"


@pytest.mark.parametrize("name", NAMES)
def test_scale_factor_attribute(name):
    module = segattn.create_upsampler(name, C)
    assert isinstance(module.scale_factor, int) and module.scale_factor >= 1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [1, 3])
def test_other_scale_factors(name, scale):
    module = perturb_(segattn.create_upsampler(name, C, scale_factor=scale)).eval()
    with torch.no_grad():
        y = module(torch.randn(1, C, 5, 4))
    assert y.shape == (1, C, 5 * scale, 4 * scale)
