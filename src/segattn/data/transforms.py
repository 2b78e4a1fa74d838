"""Joint image/mask transforms on numpy arrays (mmseg semantics).

Every transform is a callable ``(image, mask) -> (image, mask)`` with ``image`` an (H, W, 3) array
(uint8 before ``Normalize``, float32 after) and ``mask`` an (H, W) int64 label map. Geometric transforms
move image and mask together; masks are always resized by nearest neighbour (pixel-centre sampling),
never interpolated. Randomness comes from torch's global generator, so ``torch.manual_seed`` fixes it
and every DataLoader worker draws a different stream without a ``worker_init_fn``.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from segattn.data.datasets.base import to_tensor

Pair = Tuple[Any, Any]
Size = Tuple[int, int]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _randint(n: int) -> int:
    """Uniform integer in [0, n)."""
    return int(torch.randint(0, max(n, 1), ()))


def _chance(prob: float) -> bool:
    return float(torch.rand(())) < prob


def _pair(size: Union[int, Sequence[int]], what: str = "size") -> Size:
    """``n`` -> ``(n, n)``; ``(h, w)`` kept; ``ValueError`` naming ``what`` unless both are integers >= 1."""
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
                                 for v in pair):
        raise ValueError(f"{what} must be an integer >= 1 or a pair (h, w) of them, got {size!r}")
    return int(pair[0]), int(pair[1])


def nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index of each of ``dst`` output pixels under pixel-centre nearest sampling."""
    idx = np.floor((np.arange(dst) + 0.5) * (src / dst)).astype(np.int64)
    return np.minimum(idx, src - 1)


def resize_nearest(array: np.ndarray, size: Size) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W[, C]) array to ``size`` = (h, w); values are copied, never mixed."""
    rows = nearest_indices(array.shape[0], size[0])
    cols = nearest_indices(array.shape[1], size[1])
    return array[rows[:, None], cols[None, :]]


def resize_image(image: np.ndarray, size: Size, interpolation: str = "bilinear") -> np.ndarray:
    """Resize an (H, W, 3) image to ``size`` = (h, w); bilinear via Pillow (uint8) or nearest."""
    if image.shape[:2] == tuple(size):
        return image
    if interpolation == "nearest":
        return resize_nearest(image, size)
    if interpolation != "bilinear":
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    if image.dtype == np.uint8:
        out = Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(out)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32)).resize(
                (size[1], size[0]), Image.BILINEAR
            )
        )
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=-1).astype(image.dtype)


def fit_scale(shape: Tuple[int, int], scale: Size) -> float:
    """mmcv keep-ratio rule: the factor that fits (h, w) inside the long/short sides of ``scale``."""
    long_side, short_side = max(scale), min(scale)
    return min(long_side / max(shape), short_side / min(shape))


def _scaled_size(shape: Tuple[int, int], factor: float) -> Size:
    return max(1, int(shape[0] * factor + 0.5)), max(1, int(shape[1] * factor + 0.5))


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Any, Any], Pair]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any, mask: Any) -> Pair:
        for t in self.transforms:
            image, mask = t(image, mask)
        return image, mask

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class Resize:
    """Resize to ``size`` = (h, w); with ``keep_ratio`` fit inside its long/short sides (mmcv rule).

    The mask follows by nearest neighbour; ``resize_mask=False`` leaves it at the original size
    (evaluation at the annotation's resolution).
    """

    def __init__(
        self, size: Union[int, Sequence[int]], keep_ratio: bool = False, interpolation: str = "bilinear",
        resize_mask: bool = True,
    ) -> None:  # fmt: skip
        self.size, self.keep_ratio = _pair(size, "Resize size"), keep_ratio
        self.interpolation, self.resize_mask = interpolation, resize_mask

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        shape = image.shape[:2]
        target = _scaled_size(shape, fit_scale(shape, self.size)) if self.keep_ratio else self.size
        image = resize_image(image, target, self.interpolation)
        if self.resize_mask:
            mask = resize_nearest(mask, target)
        return image, mask

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, keep_ratio={self.keep_ratio})"


class RandomScale:
    """Resize by a factor drawn uniformly from ``scale_range`` (mmseg RandomResize with ratio_range).

    Without ``base_size`` the factor multiplies the current size; with ``base_size`` = (h, w) it
    multiplies the keep-ratio fit into ``base_size`` (mmseg's ``scale=(2048, 512), ratio_range``).
    """

    def __init__(
        self, scale_range: Tuple[float, float] = (0.5, 2.0), base_size: Optional[Sequence[int]] = None,
        interpolation: str = "bilinear",
    ) -> None:  # fmt: skip
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(low), float(high))
        self.base_size = _pair(base_size, "RandomScale base_size") if base_size is not None else None
        self.interpolation = interpolation

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        shape = image.shape[:2]
        factor = _uniform(*self.scale_range)
        if self.base_size is not None:
            factor *= fit_scale(shape, self.base_size)
        target = _scaled_size(shape, factor)
        return resize_image(image, target, self.interpolation), resize_nearest(mask, target)

    def __repr__(self) -> str:
        return f"RandomScale(scale_range={self.scale_range}, base_size={self.base_size})"


def pad_to(image: np.ndarray, mask: np.ndarray, size: Size, pad_value: float, ignore_index: int) -> Pair:
    """Pad bottom/right to at least ``size``: image with ``pad_value``, mask with ``ignore_index``."""
    ph, pw = max(size[0] - image.shape[0], 0), max(size[1] - image.shape[1], 0)
    if ph == 0 and pw == 0:
        return image, mask
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=pad_value)
    mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=ignore_index)
    return image, mask


class RandomCrop:
    """Random ``crop_size`` window; smaller inputs are first padded (mask with ``ignore_index``).

    Category-max-ratio rule (mmseg): if ``cat_max_ratio < 1``, draw up to 10 windows and keep the first
    in which more than one class is present and no class covers ``cat_max_ratio`` or more of the
    non-ignored pixels; if none qualifies the 11th draw is used.
    """

    def __init__(
        self, crop_size: Union[int, Sequence[int]], cat_max_ratio: float = 1.0, ignore_index: int = 255,
        pad_value: float = 0.0,
    ) -> None:  # fmt: skip
        self.crop_size = _pair(crop_size, "RandomCrop crop_size")
        self.cat_max_ratio, self.ignore_index, self.pad_value = (
            float(cat_max_ratio),
            int(ignore_index),
            pad_value,
        )

    def _window(self, shape: Tuple[int, int]) -> Tuple[int, int]:
        return _randint(shape[0] - self.crop_size[0] + 1), _randint(shape[1] - self.crop_size[1] + 1)

    def _balanced(self, crop: np.ndarray) -> bool:
        labels, counts = np.unique(crop, return_counts=True)
        counts = counts[labels != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        image, mask = pad_to(image, mask, self.crop_size, self.pad_value, self.ignore_index)
        ch, cw = self.crop_size
        top, left = self._window(mask.shape)
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                if self._balanced(mask[top : top + ch, left : left + cw]):
                    break
                top, left = self._window(mask.shape)
        return image[top : top + ch, left : left + cw], mask[top : top + ch, left : left + cw]

    def __repr__(self) -> str:
        return f"RandomCrop(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio})"


class RandomFlip:
    """Horizontal flip of image and mask with probability ``prob``."""

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = prob

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        if _chance(self.prob):
            return image[:, ::-1].copy(), mask[:, ::-1].copy()
        return image, mask

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob})"


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high, low = rgb.max(-1), rgb.min(-1)
    delta = high - low
    safe = np.where(delta > 0, delta, 1.0)
    hue = np.where(high == r, (g - b) / safe, np.where(high == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = np.where(delta > 0, (hue / 6.0) % 1.0, 0.0)
    sat = np.where(high > 0, delta / np.where(high > 0, high, 1.0), 0.0)
    return np.stack([hue, sat, high], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_hsv``."""
    h, s, v = hsv[..., 0] % 1.0, hsv[..., 1], hsv[..., 2]
    sector = np.floor(h * 6.0)
    frac = h * 6.0 - sector
    p, q, t = v * (1 - s), v * (1 - s * frac), v * (1 - s * (1 - frac))
    sector = sector.astype(np.int64) % 6
    choices_r = [v, q, p, p, t, v]
    choices_g = [t, v, v, q, p, p]
    choices_b = [p, p, t, v, v, q]
    out = [np.choose(sector, c) for c in (choices_r, choices_g, choices_b)]
    return np.stack(out, axis=-1)


class PhotoMetricDistortion:
    """mmseg photometric distortion of the image only; each step has probability 0.5.

    Order: brightness (add U(-32, 32)); contrast (multiply U(0.5, 1.5)) either here or last (coin flip);
    saturation (multiply S by U(0.5, 1.5)); hue (shift by U(-18, 18) in OpenCV's 0..180 units, i.e.
    +-36 degrees); then contrast if it was not applied first. Values are clipped to [0, 255] after each
    step and the result is uint8.
    """

    def __init__(
        self, brightness_delta: int = 32, contrast_range: Tuple[float, float] = (0.5, 1.5),
        saturation_range: Tuple[float, float] = (0.5, 1.5), hue_delta: int = 18,
    ) -> None:  # fmt: skip
        self.brightness_delta = brightness_delta
        self.contrast_range, self.saturation_range, self.hue_delta = (
            contrast_range,
            saturation_range,
            hue_delta,
        )

    def _contrast(self, img: np.ndarray) -> np.ndarray:
        if _chance(0.5):
            img = np.clip(img * _uniform(*self.contrast_range), 0, 255)
        return img

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        img = image.astype(np.float32)
        if _chance(0.5):
            img = np.clip(img + _uniform(-self.brightness_delta, self.brightness_delta), 0, 255)
        contrast_first = _randint(2) == 1
        if contrast_first:
            img = self._contrast(img)
        do_sat, sat = _chance(0.5), _uniform(*self.saturation_range)
        do_hue, hue = _chance(0.5), _uniform(-self.hue_delta, self.hue_delta)
        if do_sat or do_hue:
            hsv = rgb_to_hsv(img / 255.0)
            if do_sat:
                hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 1)
            if do_hue:
                hsv[..., 0] = (hsv[..., 0] + hue / 180.0) % 1.0
            img = np.clip(hsv_to_rgb(hsv) * 255.0, 0, 255)
        if not contrast_first:
            img = self._contrast(img)
        return np.rint(img).astype(np.uint8), mask

    def __repr__(self) -> str:
        return "PhotoMetricDistortion()"


class Normalize:
    """``(image - mean) / std`` per channel (0-255 scale), giving float32; the mask is untouched."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float32))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float32))
        lengths = {len(self.mean), len(self.std)} - {1}  # one value for all channels fits any length
        if self.mean.ndim != 1 or self.std.ndim != 1 or len(lengths) > 1:
            raise ValueError(f"Normalize mean and std must be one value per channel (or one for all), "
                             f"got mean={self.mean.tolist()} and std={self.std.tolist()}")
        if not (np.isfinite(self.std).all() and (self.std > 0).all() and np.isfinite(self.mean).all()):
            raise ValueError(f"Normalize std must be finite and > 0 (and mean finite), got mean={self.mean.tolist()}, "
                             f"std={self.std.tolist()}")

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        return (image.astype(np.float32) - self.mean) / self.std, mask

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class ToTensor:
    """Arrays -> float32 (3, H, W) image (uint8 scaled to [0, 1], float kept) and int64 (H, W) mask."""

    def __call__(self, image: Any, mask: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        return to_tensor(image, mask)

    def __repr__(self) -> str:
        return "ToTensor()"


def build_transforms(
    train: bool,
    crop_size: Optional[Union[int, Sequence[int]]] = None,
    scale_range: Optional[Tuple[float, float]] = (0.5, 2.0),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = 255,
    resize: Optional[Union[int, Sequence[int]]] = None,
    cat_max_ratio: float = 0.75,
    flip_prob: float = 0.5,
    photometric: bool = True,
) -> Compose:
    """The standard pipelines.

    train: RandomScale(scale_range, base_size=resize) -> RandomCrop(crop_size, cat_max_ratio, padding
    the mask with ignore_index) -> RandomFlip -> PhotoMetricDistortion -> Normalize -> ToTensor.
    eval: Resize(resize, keep_ratio=True) if ``resize`` -> Normalize -> ToTensor.
    ``None`` for ``crop_size`` or ``scale_range`` skips that step.
    """
    steps: List[Callable[[Any, Any], Pair]] = []
    if train:
        if scale_range is not None:
            steps.append(RandomScale(scale_range, base_size=resize))
        elif resize is not None:
            steps.append(Resize(resize, keep_ratio=True))
        if crop_size is not None:
            steps.append(RandomCrop(crop_size, cat_max_ratio=cat_max_ratio, ignore_index=ignore_index))
        if flip_prob > 0:
            steps.append(RandomFlip(flip_prob))
        if photometric:
            steps.append(PhotoMetricDistortion())
    elif resize is not None:
        steps.append(Resize(resize, keep_ratio=True))
    steps += [Normalize(mean, std), ToTensor()]
    return Compose(steps)
