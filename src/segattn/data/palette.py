"""Colour palettes and mask visualisation: ``colorize`` (labels -> RGB) and ``overlay`` (blend on an image)."""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import numpy as np

Color = Tuple[int, int, int]


def bit_palette(n: int) -> List[Color]:
    """``n`` distinct colours from the bit-interleaving rule PASCAL VOC uses for its label PNGs.

    Bit ``k`` of the class id's low three bits goes to the ``7 - j``-th bit of (R, G, B) for the
    ``j``-th group of three bits, so class 0 is black and neighbouring ids get very different colours.
    """
    colors: List[Color] = []
    for idx in range(n):
        rgb = [0, 0, 0]
        value, shift = idx, 7
        while value and shift >= 0:
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
        colors.append((rgb[0], rgb[1], rgb[2]))
    return colors


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor, without importing torch here
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def colorize(
    mask: Any, palette: Sequence[Sequence[int]], ignore_color: Sequence[int] = (0, 0, 0)
) -> np.ndarray:
    """Map an (H, W) integer label map (numpy or torch) to an (H, W, 3) uint8 RGB image.

    Label ``i`` gets ``palette[i]``; labels outside the palette (the ignore index 255, negatives)
    get ``ignore_color``.
    """
    labels = _to_numpy(mask)
    if labels.ndim != 2:
        raise ValueError(f"colorize expects an (H, W) label map, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"colorize expects integer labels, got dtype {labels.dtype}")
    table = np.asarray(list(palette) + [tuple(ignore_color)], dtype=np.uint8).reshape(-1, 3)
    n = len(table) - 1
    index = labels.astype(np.int64)
    index = np.where((index < 0) | (index >= n), n, index)
    return table[index]


def overlay(image: Any, mask: Any, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend ``colorize(mask)`` over an (H, W, 3) uint8 ``image``; ignored pixels keep the image."""
    img = _to_numpy(image)
    if img.shape[:2] != _to_numpy(mask).shape or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"overlay needs an (H, W, 3) image matching the mask, got {img.shape}")
    labels = _to_numpy(mask).astype(np.int64)
    colors = colorize(labels, palette).astype(np.float32)
    valid = ((labels >= 0) & (labels < len(palette)))[..., None]
    blended = np.where(valid, (1.0 - alpha) * img.astype(np.float32) + alpha * colors, img.astype(np.float32))
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
