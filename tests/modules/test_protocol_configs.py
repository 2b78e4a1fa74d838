"""The shipped configs run each module under its paper's / mmseg's protocol (issue 14)."""

from __future__ import annotations

import glob
import math
import os

import pytest

from segattn.engine.config import load_config
from segattn.modules.psanet import shrunk_size

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "src", "segattn", "configs")


def configs(prefix: str):
    found = sorted(glob.glob(os.path.join(CONFIGS, "*", f"{prefix}_*.yaml")))
    assert found, prefix
    return [load_config(f) for f in found if "_base_" not in f]


def test_psanet_mask_as_the_protocol():
    for cfg in configs("psanet"):
        mask = tuple(cfg.model.kwargs["context_kw"]["mask_size"])
        if cfg.data.dataset == "camvid":  # semseg: the over-complete mask of the crop
            for size in (cfg.data.crop_size, cfg.data.resize):
                h, w = shrunk_size(tuple(math.ceil(s / cfg.model.output_stride) for s in size), 2)
                assert mask[0] >= 2 * h - 1 and mask[1] >= 2 * w - 1, (cfg.name, size, mask)
        else:  # mmseg: (66, 66) for ADE20K (configs/psanet/*ade20k*.py), (97, 97) for Cityscapes and VOC
            assert mask == ((66, 66) if cfg.data.dataset == "ade20k" else (97, 97)), cfg.name


@pytest.mark.parametrize("module", ["glore", "sgr", "latentgnn"])
def test_size_dependent_context_is_evaluated_at_the_training_size(module):
    """GloRe / SGR (context ~ N) and LatentGNN (~ sqrt N): test windows of the training crop."""
    for cfg in configs(module):
        if cfg.data.dataset == "camvid":  # 176x240 crops vs a 180x240 eval: N differs by 2 %
            train_n = math.prod(cfg.data.crop_size)
            eval_n = math.prod(cfg.data.resize)
            assert cfg.eval.mode == "whole" and abs(eval_n / train_n - 1) < 0.05
        else:
            assert cfg.eval.mode == "slide" and list(cfg.eval.crop_size) == list(cfg.data.crop_size), cfg.name


def test_sgr_random_graph_is_named():
    for cfg in configs("sgr"):
        graph = cfg.model.kwargs.get("context_kw", {}).get("graph_file")
        assert graph is not None or "randomgraph" in cfg.name, cfg.name
