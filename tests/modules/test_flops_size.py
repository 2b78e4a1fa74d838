"""``flops(H, W)`` of every registered module and upsampler refuses a size no input can have."""

from __future__ import annotations

import warnings

import pytest

import segattn


def _every_block():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SGR's note about its random graph
        blocks = [segattn.create_module(n, 16) for n in segattn.list_modules()]
        blocks += [segattn.create_upsampler(n, 16) for n in segattn.list_upsamplers()]
    return blocks


@pytest.mark.parametrize("size, shown", [((-3, 5), "height=-3"), ((7, 0), "width=0"), ((7.5, 9), "height=7.5"),
                                         ((True, 9), "height=True")])
def test_flops_refuses_sizes_no_input_has(size, shown):
    for block in _every_block():
        name = type(block).__name__
        with pytest.raises(ValueError, match=rf"{name}\.flops expects integer height and width >= 1, got {shown}"):
            block.flops(*size)
        assert block.flops(7, 13) > 0, name
