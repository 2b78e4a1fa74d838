"""From a segmentation model and an image to the pictures of its context module(s).

:func:`context_modules` finds the registered modules inside a model (the outermost ones: DANet's dual
module, not its PAM inside); :func:`capture_inputs` records what each receives in one eval forward;
:func:`analyse` turns that into pixel-weight maps for a grid of queries (the page's click data), the
static pictures for a few chosen queries, and the family pictures (EM responsibilities, base
similarity, node assignments, channel attention).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.registry import MODULES, UPSAMPLERS
from segattn.viz import render
from segattn.viz.weights import (
    ASSIGNMENT_KEYS,
    base_similarity,
    channel_attention,
    check_query,
    em_responsibilities,
    extra_inputs,
    pixel_weights,
    registered_name,
    run_with_attention,
    supports_pixel_weights,
)

Pair = Tuple[int, int]
# most queries whose full rows go into the page (beyond that the query grid is strided)
MAX_PAGE_QUERIES = 400


def context_modules(model: nn.Module) -> List[Tuple[str, str, nn.Module]]:
    """(path, registered name, module) of the outermost registered context modules / upsamplers."""
    classes = {MODULES.get(n): n for n in MODULES.list()}
    classes.update({UPSAMPLERS.get(n): n for n in UPSAMPLERS.list()})
    found: List[Tuple[str, str, nn.Module]] = []
    for path, module in model.named_modules():
        name = classes.get(type(module))
        if name is None or any(path.startswith(p + ".") for p, _, _ in found):
            continue
        found.append((path, name, module))
    return found


def require_context(model: nn.Module, what: str = "model") -> List[Tuple[str, str, nn.Module]]:
    """The model's context modules that have pictures; a one-line ValueError when there are none."""
    found = context_modules(model)
    if not found:
        label = getattr(model, "config", {}).get("name", type(model).__name__) if hasattr(model, "config") else what
        raise ValueError(f"{what} {label!r} has no context module (an FCN-style model); segattn viz needs a model "
                         f"with one of the registered modules (see `segattn modules`)")
    usable = [f for f in found if supports_pixel_weights(f[1]) or f[1] == "danet_cam"]
    if not usable:
        names = ", ".join(n for _, n, _ in found)
        raise ValueError(f"the context module(s) of this {what} ({names}) have no attention weights to show "
                         "(fixed convolutions); pick a model with an attention or low-rank module")
    return usable


@torch.no_grad()
def capture_inputs(model: nn.Module, modules: Sequence[nn.Module], x: Tensor) -> List[Tuple[tuple, dict]]:
    """Positional and keyword inputs each module receives in one eval forward of ``model`` on ``x``."""
    seen: List[Optional[Tuple[tuple, dict]]] = [None] * len(modules)

    def hook(i: int):
        def record(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            if seen[i] is None:
                seen[i] = (args, kwargs)
        return record

    handles = [m.register_forward_pre_hook(hook(i), with_kwargs=True) for i, m in enumerate(modules)]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    missing = [type(modules[i]).__name__ for i, s in enumerate(seen) if s is None]
    if missing:
        raise ValueError(f"context module(s) {missing} were not called by the model's forward")
    return [s for s in seen if s is not None]


def to_feature(point: Pair, image_size: Pair, feature_size: Pair) -> Pair:
    """Image pixel (y, x) -> the feature cell that covers it."""
    return (min(feature_size[0] - 1, point[0] * feature_size[0] // image_size[0]),
            min(feature_size[1] - 1, point[1] * feature_size[1] // image_size[1]))


def to_image(cell: Pair, image_size: Pair, feature_size: Pair) -> Tuple[float, float]:
    """Centre of feature cell (y, x) in image pixels."""
    return ((cell[0] + 0.5) * image_size[0] / feature_size[0], (cell[1] + 0.5) * image_size[1] / feature_size[1])


def default_queries(image_size: Pair, count: int = 3) -> List[Pair]:
    """``count`` query pixels across the image: centre row at 1/4, 1/2, 3/4 of the width (then more rows)."""
    h, w = image_size
    spots = [(h // 2, w // 4), (h // 2, w // 2), (h // 2, 3 * w // 4), (3 * h // 4, w // 2), (h // 4, w // 2),
             (3 * h // 4, w // 4), (3 * h // 4, 3 * w // 4), (h // 4, w // 4), (h // 4, 3 * w // 4)]
    return spots[:max(1, count)]


@dataclass
class View:
    """One clickable map kind of one module: rows of max-normalised weights (uint8) for a query grid."""

    label: str
    query_grid: Pair
    map_grid: Pair
    stride: Pair
    rows: bytes


@dataclass
class Analysis:
    """Everything the pictures and the page need for one image."""

    name: str
    image: np.ndarray
    views: List[View] = field(default_factory=list)
    figures: List[Tuple[str, np.ndarray]] = field(default_factory=list)


def _to_grid(m: Tensor, size: Pair) -> Tensor:
    if tuple(m.shape) == tuple(size):
        return m
    return F.interpolate(m.float()[None, None], size=size, mode="nearest")[0, 0]


def _stride(grid: Pair, budget: int = MAX_PAGE_QUERIES) -> Pair:
    s = 1
    while -(-grid[0] // s) * -(-grid[1] // s) > budget:
        s += 1
    return s, s


def module_views(path: str, module: nn.Module, inputs: Tuple[tuple, dict], decades: Optional[float] = None
                 ) -> List[View]:
    """All rows (on a strided query grid) of every map kind of ``module`` for the page."""
    args, kwargs = inputs
    x = args[0]
    size: Pair = (int(x.shape[2]), int(x.shape[3]))
    name = registered_name(module)
    if name == "danet_cam":
        return []
    extra = extra_inputs(module, args, kwargs)
    factors = run_with_attention(module, x, **extra)
    qgrid = (size[0] * module.scale_factor, size[1] * module.scale_factor) if name == "carafe" else size
    stride = _stride(qgrid)
    queries = [(y, x_) for y in range(0, qgrid[0], stride[0]) for x_ in range(0, qgrid[1], stride[1])]
    stored: Dict[str, List[np.ndarray]] = {}
    for q in queries:
        for label, m in pixel_weights(module, x, q, factors=factors, **extra).maps.items():
            row = render.normalized(_to_grid(m, size), decades)
            stored.setdefault(label, []).append((row.numpy() * 255).round().astype(np.uint8).reshape(-1))
    sgrid = (-(-qgrid[0] // stride[0]), -(-qgrid[1] // stride[1]))
    return [View(f"{path} {name}: {label}", sgrid, size, stride, np.stack(rows).tobytes())
            for label, rows in stored.items()]


def query_figure(image: np.ndarray, module: nn.Module, x: Tensor, queries_img: Sequence[Pair], qgrid: Pair,
                 extra: Dict[str, Any], decades: Optional[float] = None) -> np.ndarray:
    """Rows = the module's maps, columns = the query pixels, each over the image with the query marked."""
    size: Pair = (int(x.shape[2]), int(x.shape[3]))
    hw: Pair = (image.shape[0], image.shape[1])
    factors = run_with_attention(module, x, **extra)
    by_label: Dict[str, List[np.ndarray]] = {}
    for q_img in queries_img:
        cell = to_feature(q_img, hw, qgrid)
        centre = to_image(cell, hw, qgrid)
        pw = pixel_weights(module, x, cell, factors=factors, **extra)
        for label, m in pw.maps.items():
            tile = render.heat_overlay(image, _to_grid(m, size), centre, decades=decades)
            by_label.setdefault(label, []).append(
                render.caption(tile, f"{label}, query ({int(centre[0])}, {int(centre[1])})"))
    return render.grid([t for tiles in by_label.values() for t in tiles], len(queries_img))


def _by_area(assignment: Tensor, count: int) -> List[int]:
    """Indices of the (K, h, w) assignment's channels that are the argmax on the most pixels."""
    area = torch.bincount(assignment.argmax(0).flatten(), minlength=assignment.shape[0])
    return [int(k) for k in area.argsort(descending=True)[:count] if area[k] > 0]


def family_figures(image: np.ndarray, name: str, module: nn.Module, x: Tensor, max_bases: int = 8
                   ) -> List[Tuple[str, np.ndarray]]:
    """EMA responsibilities per iteration and base similarity; node assignments; CAM channel attention."""
    hw: Pair = (image.shape[0], image.shape[1])
    out: List[Tuple[str, np.ndarray]] = []
    if name == "ema":
        zs = em_responsibilities(module, x)
        final = zs[-1]
        top = _by_area(final, max_bases)
        tiles = []
        for t, z in enumerate(zs):
            tiles.append(render.caption(render.label_map(z, hw), f"iteration {t + 1}: argmax base"))
            for k in top:
                tiles.append(render.caption(render.heat_overlay(image, z[k]), f"it {t + 1}: base {k}"))
        out.append(("EM responsibilities Z per iteration (the bases that win the largest areas)", render.grid(tiles, len(top) + 1)))
        sim = base_similarity(module, x)
        out.append(("cosine similarity of the final bases", render.matrix_picture(sim, 4, signed=True)))
    if name in ASSIGNMENT_KEYS and name != "ema":
        rev = run_with_attention(module, x)[ASSIGNMENT_KEYS[name]][0]
        nodes = rev.transpose(0, 1).reshape(-1, x.shape[2], x.shape[3])
        top = _by_area(nodes, max_bases)
        tiles = [render.caption(render.label_map(nodes, hw), "argmax node")]
        tiles += [render.caption(render.heat_overlay(image, nodes[k]), f"node {k}") for k in top]
        out.append(("node assignment M_rev (each pixel's weights over the nodes)", render.grid(tiles, len(tiles))))
    if name in ("danet", "danet_cam"):
        att = channel_attention(module, x)
        out.append(("channel attention: row c = the channels that channel c gathers from",
                    render.matrix_picture(att, max(1, 256 // att.shape[0]))))
    return out


def analyse(model: nn.Module, x: Tensor, image: np.ndarray, name: str = "image",
            queries: Optional[Sequence[Pair]] = None, page: bool = True, max_bases: int = 8,
            decades: Optional[float] = None) -> Analysis:
    """Pictures of every context module of ``model`` for the network input ``x`` (1, 3, h, w), drawn
    over ``image`` (h, w, 3) uint8 (the input as seen). ``queries``: image pixels (y, x);
    ``decades``: show the pixel maps on a log scale over that many decades (default linear)."""
    hw: Pair = (image.shape[0], image.shape[1])
    for q in queries or ():
        check_query(q, hw, "image")
    found = require_context(model)
    inputs = capture_inputs(model, [m for _, _, m in found], x)
    result = Analysis(name, image)
    for (path, reg, module), inp in zip(found, inputs):
        args, kwargs = inp
        fx = args[0]
        extra = extra_inputs(module, args, kwargs)
        if reg != "danet_cam":
            qgrid: Pair = (int(fx.shape[2]), int(fx.shape[3]))
            if reg == "carafe":
                qgrid = (qgrid[0] * module.scale_factor, qgrid[1] * module.scale_factor)
            result.figures.append((f"{path} ({reg}): where a pixel looks",
                                   query_figure(image, module, fx, queries or default_queries(hw), qgrid, extra, decades)))
            if page:
                result.views += module_views(path, module, inp, decades)
        result.figures += [(f"{path} ({reg}): {t}", f) for t, f in family_figures(image, reg, module, fx, max_bases)]
    return result
