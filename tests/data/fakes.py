"""Tiny fake dataset trees for the reader tests (PIL-written PNG/JPEG files in tmp_path)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Tuple

import numpy as np
from PIL import Image


def write_rgb(path: Path, size: Tuple[int, int] = (6, 8), seed: int = 0, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def write_mask(path: Path, values: Iterable[int], size: Tuple[int, int] = (6, 8), mode: str = "L") -> Path:
    """A mask whose pixels cycle through ``values``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    vals = np.asarray(list(values))
    arr = vals[np.arange(size[0] * size[1]) % len(vals)].reshape(size)
    if mode == "I":
        Image.fromarray(arr.astype(np.int32)).save(path)
    else:
        Image.fromarray(arr.astype(np.uint8), mode="L").save(path)
    return path


def write_pair(
    image: Path, mask: Path, values: Iterable[int], size: Tuple[int, int] = (6, 8), seed: int = 0
) -> None:
    fmt = "JPEG" if image.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    write_rgb(image, size, seed, fmt)
    write_mask(mask, values, size)


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    return path


def write_png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit PNG (grey for (H, W), RGB for (H, W, 3) arrays) written byte by byte, no extra library."""
    import struct
    import zlib

    arr = np.asarray(array, dtype=">u2")
    h, w = arr.shape[:2]
    colour = 2 if arr.ndim == 3 else 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(h))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path
