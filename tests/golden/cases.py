"""The golden cases: seeded tiny instances and inputs (shared by scripts/make_golden.py and the test)."""

from __future__ import annotations

import os
from typing import Callable, Dict, Tuple

import torch

import segattn
from tests.helpers import perturb_

GOLDEN_DIR = os.path.dirname(os.path.abspath(__file__))
C = 16
Case = Tuple[Callable[[], torch.nn.Module], Tuple[int, ...]]


def _module(name: str) -> Callable[[], torch.nn.Module]:
    def make() -> torch.nn.Module:
        torch.manual_seed(0)
        if name.startswith("upsampler:"):
            return perturb_(segattn.create_upsampler(name.split(":", 1)[1], C))
        return perturb_(segattn.create_module(name, C))
    return make


def _model(name: str) -> Callable[[], torch.nn.Module]:
    def make() -> torch.nn.Module:
        torch.manual_seed(0)
        return perturb_(segattn.create_model(name, 3, backbone="resnet18", channels=16, pretrained=None))
    return make


def module_cases() -> Dict[str, Case]:
    names = segattn.list_modules() + ["upsampler:" + n for n in segattn.list_upsamplers()]
    return {n: (_module(n), (1, C, 5, 7)) for n in names}


def model_cases() -> Dict[str, Case]:
    return {n: (_model(n), (1, 3, 29, 37)) for n in segattn.list_models()}


def run_case(case: Case) -> torch.Tensor:
    """The eval-mode float32 output (a model's ``out`` logits) on the seeded input."""
    make, shape = case
    module = make().eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        y = module(x)
    if isinstance(y, dict):
        y = y["out"]
    return y.detach().float().contiguous()
