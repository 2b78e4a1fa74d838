"""Pictures and page for a list of images: shared by ``segattn viz`` and ``segattn demo``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from segattn.viz import render
from segattn.viz.model import Analysis, analyse
from segattn.viz.report import write_page

Pair = Tuple[int, int]


@dataclass
class Item:
    """One image: network input ``x`` (1, 3, h, w), the picture ``image`` (h, w, 3) uint8 it shows,
    prediction / ground truth (h, w) at that size (ground truth optional)."""

    name: str
    x: torch.Tensor
    image: np.ndarray
    pred: np.ndarray
    gt: Optional[np.ndarray] = None
    queries: Optional[List[Pair]] = None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60]


def prediction_figure(item: Item, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    tiles = render.prediction_tiles(item.image, item.pred, palette, item.gt, ignore_index)
    return render.grid([render.caption(t, c) for c, t in tiles], len(tiles))


def visualize(model: nn.Module, items: Sequence[Item], palette: Sequence[Sequence[int]], out_dir: str,
              title: str, queries: Optional[Sequence[Pair]] = None, page: bool = True, notes: str = "",
              ignore_index: int = 255, max_bases: int = 8, compact: bool = False,
              decades: Optional[float] = None) -> List[str]:
    """Write ``<name>_predictions.png``, one PNG per figure and ``report.html`` into ``out_dir``;
    returns the written paths. ``queries``: pixels (y, x) of the shown images."""
    os.makedirs(out_dir, exist_ok=True)
    written: List[str] = []
    analyses: List[Analysis] = []
    predictions = []
    for item in items:
        pred_fig = prediction_figure(item, palette, ignore_index)
        written.append(render.save_png(os.path.join(out_dir, f"{item.name}_predictions.png"), pred_fig, compact))
        result = analyse(model, item.x, item.image, name=item.name, queries=item.queries or queries, page=page,
                         max_bases=max_bases, decades=decades)
        for i, (cap, fig) in enumerate(result.figures):
            written.append(render.save_png(os.path.join(out_dir, f"{item.name}_{i}_{slug(cap)}.png"), fig, compact))
        analyses.append(result)
        predictions.append([("prediction, ground truth and errors", pred_fig)])
    if page:
        written.append(write_page(os.path.join(out_dir, "report.html"), title, analyses, predictions, notes))
    return written
