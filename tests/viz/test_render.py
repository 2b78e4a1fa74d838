"""Picture helpers: normalisation (linear and log), overlays, error maps."""

from __future__ import annotations

import numpy as np
import torch

from segattn.viz import render


def test_normalized_linear_and_log():
    w = torch.tensor([1.0, 0.1, 0.001, 0.0])
    torch.testing.assert_close(render.normalized(w), w)
    torch.testing.assert_close(render.normalized(w, decades=3), torch.tensor([1.0, 2 / 3, 0.0, 0.0]))
    assert render.normalized(torch.zeros(3)).sum() == 0
    torch.testing.assert_close(render.normalized(torch.tensor([-2.0, 1.0])), torch.tensor([1.0, 0.5]))


def test_heat_overlay_keeps_the_image_where_weights_vanish():
    image = np.full((8, 12, 3), 200, np.uint8)
    weights = torch.zeros(2, 3)
    weights[0, 0] = 1.0
    out = render.heat_overlay(image, weights, smooth=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    # zero weight: 85 % image + 15 % of inferno's black; full weight: mostly the bright end of the map
    assert np.abs(out[7, 11].astype(int) - 170).max() <= 1
    assert out[0, 0].astype(int).sum() > out[7, 11].astype(int).sum()


def test_error_map_colours_and_accuracy():
    image = np.zeros((2, 2, 3), np.uint8)
    pred = np.array([[0, 1], [1, 1]])
    gt = np.array([[0, 0], [255, 1]])
    tiles = dict(render.prediction_tiles(image, pred, [(255, 0, 0), (0, 255, 0)], gt))
    err = tiles["errors (pixel acc 66.7 %)"]
    assert tuple(err[0, 0]) == (40, 170, 60) and tuple(err[0, 1]) == (220, 40, 40) and tuple(err[1, 0]) == (0, 0, 0)
