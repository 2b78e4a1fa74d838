"""The shipped synthetic comparison protocol does what its config file says: the FCN baseline sees a
bounded window (LocalNet's patch plus the head's three 3x3 convs), and only a minority of the shape
pixels have the cue inside that window, so a context module has something to add."""

from __future__ import annotations

import numpy as np
import torch

from segattn.engine.build import build_dataset_split, build_model
from segattn.engine.config import load_config


def _view_side(model: torch.nn.Module, size: int) -> int:
    """Side in pixels of the input square that one output pixel in the image centre depends on."""
    model.eval()
    x = torch.randn(1, 3, size, size, requires_grad=True)
    model(x)[0, :, size // 2, size // 2].sum().backward()
    rows = torch.nonzero(x.grad.abs().sum((0, 1, 3)) > 0).flatten()
    return int(rows.max() - rows.min() + 1)


def test_fcn_sees_a_bounded_window_and_most_shapes_lie_outside_it() -> None:
    cfg = load_config("synthetic/compare_synthetic.yaml")
    torch.manual_seed(0)
    side = _view_side(build_model(cfg.model, 3), 256)
    # one 8x8 patch, 3 cells either side for the head's 3x3 convs, one more cell for bilinear upsampling
    assert 7 * 8 <= side <= 9 * 8
    ds = build_dataset_split(cfg.data, "val", train=False)
    assert ds.size == (128, 128)
    reach, near, total = side // 2, 0, 0
    for i in range(40):
        image, mask = ds.generate(i)
        cue = np.argwhere(image.max(axis=2) != image.min(axis=2))  # the only coloured pixels
        shape = np.argwhere(mask > 0)
        dist = np.abs(shape[:, None, :] - cue[None, :, :]).max(axis=2).min(axis=1)  # Chebyshev
        near += int((dist <= reach).sum())
        total += len(shape)
    assert 0.1 < near / total < 0.5, near / total
