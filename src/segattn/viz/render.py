"""Pictures from weight maps: heat overlays with the query marked, captions, grids, label maps.

Everything is uint8 RGB numpy arrays (H, W, 3) drawn with Pillow, so the pictures need no plotting
library; matplotlib's ``inferno`` colour map is used when installed (the ``viz`` extra), a built-in
approximation otherwise.
"""

from __future__ import annotations

import io
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from segattn.data.palette import bit_palette, colorize, overlay
from segattn.io import atomic_write_bytes

Array = np.ndarray
# inferno at 8 stops (matplotlib), interpolated when matplotlib is absent
_STOPS = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                   [250, 193, 39], [252, 255, 164]], dtype=np.float64)


def _lut() -> Array:
    try:
        from matplotlib import colormaps

        return (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    except ImportError:
        pos = np.linspace(0, 1, len(_STOPS))
        t = np.linspace(0, 1, 256)
        return np.stack([np.interp(t, pos, _STOPS[:, c]) for c in range(3)], 1).round().astype(np.uint8)


LUT = _lut()


def normalized(weights: torch.Tensor, decades: Optional[float] = None) -> torch.Tensor:
    """Weights scaled to [0, 1] by their maximum (negative weights, e.g. GloRe's, by the largest
    magnitude); with ``decades`` on a log scale, ``1 + log10(w / max) / decades`` clipped at 0, so
    small but non-zero weights (CCNet's two-step reach) stay visible."""
    w = weights.detach().float()
    if bool((w < 0).any()):
        w = w.abs()
    top = float(w.max()) if w.numel() else 0.0
    if top <= 0:
        return torch.zeros_like(w)
    if decades is None:
        return w / top
    return (1.0 + torch.log10((w / top).clamp_min(1e-30)) / decades).clamp(0.0, 1.0)


def resize_map(weights: torch.Tensor, size: Tuple[int, int], smooth: bool = True) -> torch.Tensor:
    """(h, w) -> size; bilinear (as the models upsample) or nearest."""
    t = weights.detach().float()[None, None]
    if smooth:
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0]
    return F.interpolate(t, size=size, mode="nearest")[0, 0]


def heat(values: torch.Tensor) -> Array:
    """[0, 1] map (H, W) -> inferno RGB uint8 (NaN, from a non-finite input, shows as 0)."""
    idx = (values.nan_to_num(0.0).clamp(0, 1).numpy() * 255).round().astype(np.int64)
    return LUT[idx]


def heat_overlay(image: Array, weights: torch.Tensor, query: Optional[Tuple[float, float]] = None,
                 floor: float = 0.15, smooth: bool = True, decades: Optional[float] = None) -> Array:
    """The weight map (max-normalised, upsampled) in inferno over the image, query marked: a pixel
    of normalised weight v is ``(1 - a) image + a colour(v)`` with ``a = floor + (0.9 - floor) v``,
    so the image stays readable where the weights are small."""
    h, w = image.shape[:2]
    values = resize_map(normalized(weights, decades), (h, w), smooth)
    colour = heat(values).astype(np.float32)
    a = (floor + (0.9 - floor) * values.clamp(0, 1).numpy())[..., None]
    out = (image.astype(np.float32) * (1.0 - a) + colour * a).round().clip(0, 255).astype(np.uint8)
    return mark(out, query) if query is not None else out


def mark(image: Array, query: Tuple[float, float], radius: int = 5) -> Array:
    """A cyan ring with a dark outline at ``query`` = (y, x) in image pixels."""
    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    y, x = query
    draw.ellipse([x - radius - 1, y - radius - 1, x + radius + 1, y + radius + 1], outline=(0, 0, 0), width=4)
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=(0, 255, 255), width=2)
    return np.asarray(img)


def caption(image: Array, text: str, height: int = 14) -> Array:
    """``image`` with a white strip above it holding ``text``."""
    strip = Image.new("RGB", (image.shape[1], height), (255, 255, 255))
    ImageDraw.Draw(strip).text((2, 1), text, fill=(0, 0, 0))
    return np.concatenate([np.asarray(strip), image], axis=0)


def grid(tiles: Sequence[Array], columns: int, pad: int = 4) -> Array:
    """Tiles (same height; widths may differ per column) in rows of ``columns`` on white."""
    rows = [list(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    th = max(t.shape[0] for t in tiles)
    widths = [max(row[c].shape[1] for row in rows if c < len(row)) for c in range(columns)]
    canvas = np.full((len(rows) * (th + pad) + pad, sum(widths) + pad * (columns + 1), 3), 255, np.uint8)
    for r, row in enumerate(rows):
        x = pad
        for c, tile in enumerate(row):
            y = pad + r * (th + pad)
            canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
            x += widths[c] + pad
    return canvas


def label_map(labels: torch.Tensor, size: Tuple[int, int]) -> Array:
    """(K, h, w) soft assignment -> argmax colours (VOC bit palette, class 0 black) at ``size``."""
    k = labels.shape[0]
    up = F.interpolate(labels.detach().float()[None], size=size, mode="bilinear", align_corners=False)[0]
    return colorize(up.argmax(0).numpy(), bit_palette(max(k, 2) + 1)[1:])


def matrix_picture(matrix: torch.Tensor, cell: int = 4, signed: bool = False) -> Array:
    """A (K, K) matrix as a heat map of ``cell`` x ``cell`` pixels per entry."""
    m = matrix.detach().float()
    values = (m + 1) / 2 if signed else normalized(m)
    img = heat(values)
    return np.kron(img, np.ones((cell, cell, 1), dtype=np.uint8))


def prediction_tiles(image: Array, pred: Array, palette: Sequence[Sequence[int]], gt: Optional[Array] = None,
                     ignore_index: int = 255) -> List[Tuple[str, Array]]:
    """Overlay, colourised prediction, and with ``gt`` the ground truth and the error map
    (green = right, red = wrong, black = ignored)."""
    tiles = [("prediction overlay", overlay(image, pred, palette, 0.5)), ("prediction", colorize(pred, palette))]
    if gt is not None:
        ignored = (gt == ignore_index) | (gt >= len(palette))
        tiles.append(("ground truth", colorize(np.where(ignored, 0, gt), palette)))
        err = np.zeros(image.shape, np.uint8)
        err[(pred == gt) & ~ignored] = (40, 170, 60)
        err[(pred != gt) & ~ignored] = (220, 40, 40)
        acc = float(((pred == gt) & ~ignored).sum()) / max(1, int((~ignored).sum()))
        tiles.append((f"errors (pixel acc {100 * acc:.1f} %)", err))
    return tiles


def png_bytes(image: Array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_png(path: str, image: Array, compact: bool = False) -> str:
    """Write ``image`` as a PNG atomically (``compact``: 256 colours, a third of the size); returns the path."""
    if compact:
        buf = io.BytesIO()
        Image.fromarray(image).quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
        atomic_write_bytes(path, buf.getvalue())
    else:
        atomic_write_bytes(path, png_bytes(image))
    return path


__all__ = ["heat_overlay", "heat", "mark", "caption", "grid", "label_map", "matrix_picture", "prediction_tiles",
           "png_bytes", "save_png", "normalized", "resize_map"]
