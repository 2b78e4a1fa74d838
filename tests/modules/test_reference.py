"""Every registered module equals its independent float64 reference (``tests/modules/reference``).

The references share no code with the modules (no token layout helpers, no ``softmax_attention``,
nothing from ``segattn``): a layout, axis, scale or normalisation slip in a module or in a helper it
shares with others shows up here. Random weights everywhere (zero-initialised gates, outputs and BN
parameters are replaced by ``perturb_``; BN running statistics are randomised too), eval mode, odd sizes.
"""

from __future__ import annotations

import pytest
import torch

import segattn
from tests.helpers import perturb_
from tests.modules.reference import REFERENCES

C = 16
UPSAMPLER = "upsampler:"
NAMES = segattn.list_modules() + [UPSAMPLER + n for n in segattn.list_upsamplers()]
# small, non-default settings that exercise switches the defaults leave off
VARIANTS = {
    "nonlocal": [{"sub_sample": True}, {"shared_qk": True, "use_scale": False}],
    "nonlocal_gaussian": [{"use_scale": True, "sub_sample": True}],
    "danet_cam": [{"cam_mode": "paper"}],
    "ocnet_base": [{"pool_scale": 2}, {"pool_scale": 2, "ceil_mode": True}],
    "ocnet_asp": [{"ceil_mode": True}],
    "ocnet_pyramid": [{"sizes": (1, 2, 3)}],
    "psanet": [{"psa_type": "collect", "mask_size": (3, 5), "mask_fill": "-inf"}, {"mask_size": (5, 3)}],
    "isa": [{"down_factor": (2, 3)}],
    "local_relation": [{"kernel_size": 3, "channel_sharing": 2}],
    "dgmn": [{"dilations": (1, 2), "groups": 2}, {"block": "after3x3"}, {"block": "after3x3", "dilations": (1, 3), "groups": 2},
             {"block": "after3x3", "affinity": False, "dilations": (2,)}, {"block": "after3x3", "deformable": False}],
    "cgnl": [{"kernel": "gaussian", "groups": 2, "use_scale": True}, {"kernel": "gaussian", "exact_beta": True}],
    "a2": [{"gather_log_softmax": True}],
    "glore": [{"normalize": True}],
    "latentgnn": [{"mode": "symmetric", "latent_dims": (3, 5), "graph_conv": True}],
    "sgr": [{"normalize_voting": True, "compatibility": "concat", "num_nodes": 5}],
    "apcnet": [{"bottleneck": False, "fusion": False}],
    "ema": [{"num_bases": 5, "num_stages": 2, "kernel_scale": 2.0}],
    "hamburger": [{"method": "vq", "num_bases": 5, "eval_steps": 3, "inv_t": 2.0},
                  {"method": "cd", "num_bases": 5, "eval_steps": 2, "inv_t": 3.0, "beta": 0.5},
                  {"channels": 8, "num_bases": 3, "eval_steps": 1, "init": "stored"},
                  {"norm": "gn", "num_bases": 3, "eval_steps": 2}],
    "encnet": [{"num_codes": 5}],
    "dmnet": [{"filter_sizes": (2, 4), "fusion": True, "bottleneck": False}],
    "dnl": [{"whiten": False, "unary": False, "temperature": 1.0}, {"use_scale": False, "temperature": 0.5},
            {"use_out": False, "norm": False}, {"use_out": False, "norm": True, "unary": False}],
    "gcnet": [{"pooling": "avg", "fusion": ("channel_mul",)}, {"fusion": ("channel_add", "channel_mul"), "ratio": 0.5}],
    "ocr": [{"key_channels": 5, "out_channels": 7, "gather_scale": 2.0, "num_regions": 3}, {"act": "leaky_relu"}],
    "upsampler:carafe": [{"scale_factor": 3, "up_kernel": 3, "up_group": 2}],
}
CASES = [(n, {}) for n in NAMES] + [(n, kw) for n in NAMES for kw in VARIANTS.get(n, [])]


def build(name: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith(UPSAMPLER):
        module = segattn.create_upsampler(name[len(UPSAMPLER):], C, **kwargs)
    elif name == "sgr":
        with pytest.warns(UserWarning, match="not the paper's SGR"):
            module = segattn.create_module(name, C, **kwargs)
    else:
        module = segattn.create_module(name, C, **kwargs)
    perturb_(module)
    g = torch.Generator().manual_seed(1)
    for sub in module.modules():
        if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
            sub.running_mean.copy_(torch.randn(sub.running_mean.shape, generator=g) * 0.3)
            sub.running_var.copy_(torch.rand(sub.running_var.shape, generator=g) + 0.5)
    return module.double().eval()


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_module_has_a_reference(name):
    assert name in REFERENCES, f"{name} has no independent reference in tests/modules/reference"


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_module_equals_independent_reference(name, kwargs):
    module = build(name, kwargs)
    x = torch.randn(2, C, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = module(x)
        ref = REFERENCES[name](module, x)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, atol=1e-10, rtol=1e-9)
