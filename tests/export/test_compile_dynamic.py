"""``torch.compile(dynamic=True)``: every module and model runs at two resolutions without recompiling.

``torch._dynamo.config.error_on_recompile`` turns a recompilation (a guard on a concrete size, a
Python branch on a shape, a cache keyed by size) into an error. The backend is ``eager``: the test is
about the traced graph being size-generic, not about generated kernels. Batch 2 (size-1 dimensions
are always specialised). Every context module and upsampler runs in CI; models: the representative
set of ``tests/export/sets.py`` in CI, all of them with ``SEGATTN_EXPORT_ALL=1``.
"""

from __future__ import annotations

import pytest
import torch

import segattn
from segattn.registry import MODULES, UPSAMPLERS
from tests.export.sets import ALL_MODELS, RUN_ALL, TINY, representative_models
from tests.helpers import perturb_

C = 16
SIZES = [(13, 17), (22, 19)]


def _runs_without_recompiling(module: torch.nn.Module, inputs) -> None:
    torch._dynamo.reset()
    module.eval()
    compiled = torch.compile(module, dynamic=True, backend="eager", fullgraph=False)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        for x in inputs:
            out = compiled(x)
            ref = module(x)
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def _module_kwargs(name: str) -> dict:
    return {"in_channels": C}


@pytest.mark.parametrize("name", MODULES.list())
def test_module_runs_at_two_sizes_without_recompiling(name: str) -> None:
    block = perturb_(segattn.create_module(name, **_module_kwargs(name)))
    _runs_without_recompiling(block, [torch.randn(2, C, *s) for s in SIZES])


@pytest.mark.parametrize("name", UPSAMPLERS.list())
def test_upsampler_runs_at_two_sizes_without_recompiling(name: str) -> None:
    block = perturb_(segattn.create_upsampler(name, C, scale_factor=2))
    _runs_without_recompiling(block, [torch.randn(2, C, *s) for s in SIZES])


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_runs_at_two_sizes_without_recompiling(name: str) -> None:
    if name not in representative_models() and not RUN_ALL:
        pytest.skip("CI runs the representative set; SEGATTN_EXPORT_ALL=1 runs every model")
    model = perturb_(segattn.create_model(name, 3, **TINY))
    _runs_without_recompiling(model, [torch.randn(2, 3, 65, 97), torch.randn(2, 3, 49, 71)])


def test_a_size_specialised_module_is_caught() -> None:
    """The check can fail: a module that branches on a concrete size recompiles at the second size."""

    class SizeBranch(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.shape[-1] > 18 else x

    with pytest.raises(Exception, match="[Rr]ecompil"):
        _runs_without_recompiling(SizeBranch(), [torch.randn(2, C, *s) for s in SIZES])
