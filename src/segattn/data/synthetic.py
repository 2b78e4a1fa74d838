"""A procedurally generated dataset whose labels can only be read with long-range context."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from segattn.checks import NON_NEGATIVE, checked
from segattn.data.datasets.base import Transform, to_tensor
from segattn.errors import ArgumentError
from segattn.registry import DATASETS

Color = Tuple[int, int, int]

CUE_COLORS: Tuple[Color, ...] = (
    (230, 40, 40), (40, 200, 60), (50, 90, 235), (240, 210, 30),
    (200, 60, 220), (30, 210, 210), (250, 130, 20), (130, 70, 30),
)  # fmt: skip
CUE_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "brown")
TEXTURE_LOW, TEXTURE_HIGH = 70, 185
TASKS = ("context", "relational", "small-objects", "clean-background", "patchy")
PATCH = 8  # the patchy task's shading block: one 8x8 cell of a stride-8 backbone, anchored to the grid
PATCH_JITTER = 40  # its brightness offsets are uniform in [-40, 40] grey levels, one per block
PATTERNS = ("checker", "hstripes", "vstripes", "dots")  # the small-objects task's own-pixel attribute


@DATASETS.register("synthetic", paper="segattn (procedural)", classes=5, folder=None)
class SyntheticContext(Dataset):
    """Shapes whose class is decided by a colour cue far away: a test bed for context modules.

    Rule, for image ``index`` (everything drawn from ``numpy.random.default_rng([seed, index])``, so an
    item is a pure function of ``(seed, index)`` and the constructor arguments):

    * background (class 0): grey pixel noise, every pixel an independent uniform grey level;
    * one cue colour ``k`` in ``0..K-1`` is drawn (``K = num_classes - 1``, default 4: red, green,
      blue, yellow); a ``cue_size`` x ``cue_size`` square of that colour is painted touching a randomly
      chosen image border (the marker itself is labelled background);
    * ``num_blobs`` axis-aligned rectangles are painted in the interior, at least ``margin`` pixels
      away from every border, all with **the same** grey checkerboard texture (2x2-pixel cells, levels
      70 and 185) anchored to the image grid, so their pixels are identical whatever their class;
    * every rectangle pixel is labelled ``1 + k``: the class is the colour of the distant marker.

    A pixel's label therefore cannot be read from any patch that misses the marker: two rectangles in
    two images can be pixel-identical over a large window and differ in label. A classifier with a
    receptive field smaller than the distance to the marker (up to about the image size) is at chance
    among the K foreground classes, while a context module that aggregates over the whole image (global
    pooling, attention) can solve it exactly. Default size 64 x 64, 5 classes, ignore_index 255 (unused).

    ``task`` picks the rule (``data.dataset_kwargs.task`` in a config; default ``"context"``, the rule
    above). The other tasks (issue 30: tasks on which the survey's mechanisms differ):

    * ``"relational"``: two cue **bars** of two different colours ``a != b`` (the ordered pair uniform),
      ``cue_size`` wide and full height, along the left and the right border; every rectangle lies in
      one half of the image and is labelled ``1 + `` the colour of the bar on **its** side. Repainting
      the left bar with b and the right bar with a gives an image exactly as probable, with the same
      multiset of pixel values (so the same global mean, histogram and average of any per-pixel
      feature) and the shape pixels' own patches unchanged, but every shape label swapped: anything
      that sees only a position-free global summary plus a pixel's own patch is at chance between the
      two colours present. A module must bind *where* each colour is (pooled grids, positions) to solve it.
    * ``"small-objects"``: the cue square as in ``"context"``, but with ``K = (num_classes - 1) / T``
      cue colours, ``T = textures`` (default 2). The rectangles do not overlap (each is placed at
      least 2 px from the others; one that finds no room after 30 tries is left out); every other one
      is small (``small_size`` pixels a side, default 6-10, about one 8x8 cell of a stride-8 backbone),
      the others ``blob_size``. Each carries its own texture ``t`` in ``0..T-1`` (:data:`PATTERNS`,
      drawn per rectangle) and is labelled ``1 + t * K + k`` under cue colour ``k``
      (:meth:`small_objects_label`): the class is the *product* of an attribute of its own pixels
      and one of the far cue, so a classifier can score it as ``f_t(own pixels) + g_k(context)``
      (a mod-sum of the two, the first design, is XOR-like and not linearly separable from features
      that carry them separately). ``num_classes`` must be ``1 + T * K`` with ``K >= 1``.
    * ``"clean-background"``: the ``"context"`` rule on a smooth background (one grey level per image
      plus a gentle linear ramp) instead of pixel noise, so added noise is the only noise there is.
    * ``"patchy"``: the ``"context"`` rule on the clean background, with a patchy shading: every
      8x8 block of the image grid (one cell of a stride-8 backbone) gets its own brightness offset,
      uniform in +-40 grey levels, added to the background and to the shapes' texture alike (the cue
      square is painted over it, unshaded). The features of one class then vary from one cell to the
      next (the background is smooth inside a cell, the shapes keep their texture): within-class
      variation at the scale of a backbone cell and no pixel noise, what an edge-preserving smoother
      (a within-class average over a window of cells) has something to remove from (issue 30,
      explanation 3).
    """

    @checked(seed=NON_NEGATIVE, cue_size=NON_NEGATIVE, margin=NON_NEGATIVE, split=("train", "val", "test"))
    def __init__(
        self,
        num_samples: int = 1000,
        size: Sequence[int] = (64, 64),
        seed: int = 0,
        *,
        num_classes: int = 5,
        num_blobs: Tuple[int, int] = (2, 4),
        blob_size: Tuple[int, int] = (10, 22),
        cue_size: int = 6,
        margin: int = 10,
        task: str = "context",
        small_size: Tuple[int, int] = (6, 10),
        textures: int = 2,
        transform: Optional[Transform] = None,
        root: Optional[str] = None,
        split: str = "train",
    ) -> None:
        h, w = int(size[0]), int(size[1])
        if not 2 <= num_classes <= len(CUE_COLORS) + 1:
            raise ValueError(f"num_classes must be in 2..{len(CUE_COLORS) + 1}, got {num_classes}")
        if min(h, w) < 2 * margin + blob_size[0] or cue_size > margin:
            raise ValueError(
                f"size {h}x{w} too small for margin {margin} and blob size {blob_size}, or cue {cue_size} > margin"
            )
        if task not in TASKS:
            raise ValueError(f"synthetic task must be one of {', '.join(TASKS)}, got {task!r}")
        if task == "small-objects" and not (1 <= textures <= len(PATTERNS) and (num_classes - 1) % textures == 0):
            raise ArgumentError(f"task small-objects labels 1 + t * K + k: num_classes must be 1 + textures x "
                                f"cue colours with textures in 1..{len(PATTERNS)}, got num_classes {num_classes}, "
                                f"textures {textures} (e.g. 5 = 1 + 2 x 2)")
        if task == "small-objects" and not 1 <= small_size[0] <= small_size[1]:
            raise ArgumentError(f"small_size must be (low, high) with 1 <= low <= high, got {tuple(small_size)}")
        if task == "relational" and (num_classes < 3 or w < 4 * margin):
            raise ValueError(f"task relational needs num_classes >= 3 (two different bar colours) and a width of "
                             f"at least 4 x margin, got {num_classes} classes, width {w}, margin {margin}")
        self.task, self.small_size = task, (int(small_size[0]), int(small_size[1]))
        self.textures = int(textures) if task == "small-objects" else 1
        self.cues = (num_classes - 1) // self.textures  # K: the number of cue colours
        self.num_samples, self.size, self.seed = int(num_samples), (h, w), int(seed)
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        self.split = split
        self._stream = {"train": 0, "val": 1, "test": 2}[split]
        self.num_blobs, self.blob_size, self.cue_size, self.margin = num_blobs, blob_size, cue_size, margin
        self.transform = transform
        self.num_classes = int(num_classes)
        self.classes: List[str] = ["background"] + [f"{n} cue" for n in CUE_NAMES[: num_classes - 1]]
        self.palette: List[Color] = [(0, 0, 0)] + list(CUE_COLORS[: num_classes - 1])
        if task == "small-objects":  # class 1 + t * K + k: texture t under cue colour k, darker for larger t
            self.classes = ["background"] + [f"{PATTERNS[j // self.cues]} under {CUE_NAMES[j % self.cues]} cue"
                                             for j in range(num_classes - 1)]
            shade = [1.0 - 0.5 * t / max(1, self.textures - 1) for t in range(self.textures)]
            self.palette = [(0, 0, 0)] + [tuple(int(c * shade[j // self.cues]) for c in CUE_COLORS[j % self.cues])
                                          for j in range(num_classes - 1)]
        self.ignore_index = 255
        self.files = None
        self.root = root

    def __len__(self) -> int:
        return self.num_samples

    def _texture(self) -> np.ndarray:
        h, w = self.size
        yy, xx = np.mgrid[0:h, 0:w]
        return np.where(((yy // 2) + (xx // 2)) % 2 == 0, TEXTURE_LOW, TEXTURE_HIGH).astype(np.uint8)

    def _paint_cue(self, rng: np.random.Generator, image: np.ndarray, color: Color) -> None:
        h, w = self.size
        s = self.cue_size
        side = int(rng.integers(4))
        if side in (0, 1):  # top or bottom edge
            top, left = (0 if side == 0 else h - s), int(rng.integers(0, w - s + 1))
        else:  # left or right edge
            top, left = int(rng.integers(0, h - s + 1)), (0 if side == 2 else w - s)
        image[top : top + s, left : left + s] = color

    def _pattern(self, t: int) -> np.ndarray:
        """Own texture ``t`` of the small-objects task, anchored to the image grid (levels 70 / 185)."""
        h, w = self.size
        yy, xx = np.mgrid[0:h, 0:w]
        on = [((yy // 2) + (xx // 2)) % 2 == 0, (yy // 2) % 2 == 0, (xx // 2) % 2 == 0,
              (yy % 3 == 0) & (xx % 3 == 0)][t]
        return np.where(on, TEXTURE_LOW, TEXTURE_HIGH).astype(np.uint8)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.size
        if self.task not in ("clean-background", "patchy"):
            return rng.integers(0, 256, size=(h, w), dtype=np.uint8)
        level, gy, gx = float(rng.uniform(60, 196)), float(rng.uniform(-20, 20)), float(rng.uniform(-20, 20))
        yy, xx = np.mgrid[0:h, 0:w]
        return np.clip(level + gy * (yy / h - 0.5) + gx * (xx / w - 0.5), 0, 255).round().astype(np.uint8)

    def _generate_relational(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        h, w = self.size
        grey = self._background(rng)
        image = np.repeat(grey[..., None], 3, axis=2)
        mask = np.zeros((h, w), dtype=np.int64)
        k = self.num_classes - 1
        a = int(rng.integers(k))
        b = (a + 1 + int(rng.integers(k - 1))) % k  # the ordered pair (a, b), a != b, uniform
        texture = self._texture()
        half = w // 2
        for _ in range(int(rng.integers(self.num_blobs[0], self.num_blobs[1] + 1))):
            side = int(rng.integers(2))
            lo, hi = (self.margin, half) if side == 0 else (half, w - self.margin)
            bh = min(int(rng.integers(self.blob_size[0], self.blob_size[1] + 1)), h - 2 * self.margin)
            bw = min(int(rng.integers(self.blob_size[0], self.blob_size[1] + 1)), hi - lo)
            top = int(rng.integers(self.margin, h - self.margin - bh + 1))
            left = int(rng.integers(lo, hi - bw + 1))
            region = (slice(top, top + bh), slice(left, left + bw))
            image[region] = texture[region][..., None]
            mask[region] = 1 + (a if side == 0 else b)
        image[:, : self.cue_size] = CUE_COLORS[a]
        image[:, w - self.cue_size:] = CUE_COLORS[b]
        return image, mask

    def small_objects_label(self, texture: int, cue: int) -> int:
        """The small-objects task's class of a rectangle with own texture ``texture`` under cue colour ``cue``."""
        return 1 + texture * self.cues + cue

    def _generate_small_objects(self, rng: np.random.Generator,
                                cue: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        h, w = self.size
        image = np.repeat(self._background(rng)[..., None], 3, axis=2)
        mask = np.zeros((h, w), dtype=np.int64)
        taken = np.zeros((h, w), dtype=bool)  # painted rectangles grown by the 2 px gap
        k = int(rng.integers(self.cues))
        k = k if cue is None else cue  # drawn either way: the rest of the item is the same
        for i in range(int(rng.integers(self.num_blobs[0], self.num_blobs[1] + 1))):
            size = self.small_size if i % 2 == 1 else self.blob_size
            bh, bw = (min(int(rng.integers(size[0], size[1] + 1)), n - 2 * self.margin) for n in (h, w))
            t = int(rng.integers(self.textures))
            for _ in range(30):
                top = int(rng.integers(self.margin, h - self.margin - bh + 1))
                left = int(rng.integers(self.margin, w - self.margin - bw + 1))
                if not taken[top: top + bh, left: left + bw].any():
                    break
            else:
                continue
            region = (slice(top, top + bh), slice(left, left + bw))
            image[region] = self._pattern(t)[region][..., None]
            mask[region] = self.small_objects_label(t, k)
            taken[max(0, top - 2): top + bh + 2, max(0, left - 2): left + bw + 2] = True
        self._paint_cue(rng, image, CUE_COLORS[k])
        return image, mask

    def generate_with_cue(self, index: int, cue: int) -> Tuple[np.ndarray, np.ndarray]:
        """Small-objects item ``index`` with its cue colour replaced by ``cue`` (``0..K-1``): the same
        background, rectangles, textures and cue position; only the cue's pixels and the labels' cue
        part ``k`` change (a counterfactual of :meth:`generate`)."""
        if self.task != "small-objects":
            raise ArgumentError(f"generate_with_cue is for task small-objects, this dataset's task is {self.task!r}")
        if not 0 <= cue < self.cues:
            raise ArgumentError(f"cue must be a cue colour in 0..{self.cues - 1}, got {cue}")
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return self._generate_small_objects(np.random.default_rng([self.seed, self._stream, index]), int(cue))

    def generate(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """The raw item ``index``: (image uint8 (H, W, 3), mask int64 (H, W))."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, self._stream, index])
        if self.task == "relational":
            return self._generate_relational(rng)
        if self.task == "small-objects":
            return self._generate_small_objects(rng)
        h, w = self.size
        grey = self._background(rng)
        image = np.repeat(grey[..., None], 3, axis=2)
        mask = np.zeros((h, w), dtype=np.int64)
        k = int(rng.integers(self.num_classes - 1))
        texture = self._texture()
        for _ in range(int(rng.integers(self.num_blobs[0], self.num_blobs[1] + 1))):
            bh, bw = (int(rng.integers(self.blob_size[0], self.blob_size[1] + 1)) for _ in range(2))
            bh, bw = min(bh, h - 2 * self.margin), min(bw, w - 2 * self.margin)
            top = int(rng.integers(self.margin, h - self.margin - bh + 1))
            left = int(rng.integers(self.margin, w - self.margin - bw + 1))
            region = (slice(top, top + bh), slice(left, left + bw))
            image[region] = texture[region][..., None]
            mask[region] = 1 + k
        if self.task == "patchy":
            image = self._shade(rng, image)
        self._paint_cue(rng, image, CUE_COLORS[k])
        return image, mask

    def _shade(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        """The patchy task's shading: one offset in ``[-PATCH_JITTER, PATCH_JITTER]`` per ``PATCH`` block."""
        h, w = self.size
        blocks = rng.integers(-PATCH_JITTER, PATCH_JITTER + 1, size=(-(-h // PATCH), -(-w // PATCH)))
        offset = np.kron(blocks, np.ones((PATCH, PATCH), dtype=np.int64))[:h, :w]
        return np.clip(image.astype(np.int64) + offset[..., None], 0, 255).astype(np.uint8)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        if index < 0:
            index += self.num_samples
        image, mask = self.generate(index)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return to_tensor(image, mask)

    def __repr__(self) -> str:
        task = "" if self.task == "context" else f", task={self.task!r}"
        return (f"SyntheticContext(num_samples={self.num_samples}, size={self.size}, seed={self.seed}, "
                f"split={self.split!r}{task})")
