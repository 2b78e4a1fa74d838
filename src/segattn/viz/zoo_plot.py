"""``segattn models --zoo [FILTER] --plot FILE``: published mIoU against computed cost, Pareto front marked.

One row of panels per dataset (Cityscapes 512x1024 at 1024x2048, ADE20K at 512x512), MACs on the left
and parameters on the right, one point per checkpoint: colour = decode head, marker = backbone. The
front (no cheaper checkpoint scores higher) is drawn as a step line with its points circled.
Needs matplotlib (the ``viz`` extra); PNG or SVG by the file's extension; written atomically.
"""

from __future__ import annotations

import importlib.util
import io
import os
from typing import Dict, List, Sequence, Union

from segattn.convert.zoo_cost import PROTOCOL_SIZE, ZooPoint, pareto_front
from segattn.errors import SegattnError
from segattn.io import atomic_write_bytes

MISSING = "--plot needs matplotlib, which is not installed: pip install 'segattn[viz]'"
FORMATS = {".png": "png", ".svg": "svg"}
MARKERS = {"R-18": "v", "R-50": "o", "R-101": "s", "HRNetV2p-W18-Small": "<", "HRNetV2p-W18": "^",
           "HRNetV2p-W48": "D"}


def backbone_family(backbone: str) -> str:
    """The marker group of a manifest backbone label (``R-101b-D16-MG124`` -> ``R-101``)."""
    if backbone.startswith("HRNet"):
        return backbone
    return backbone.split("-D")[0].rstrip("b")


def check_plot_path(path: Union[str, os.PathLike], overwrite: bool = False) -> str:
    """The matplotlib format of ``path`` (``png`` / ``svg``); :class:`SegattnError` for another
    extension or an existing file without ``overwrite``."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in FORMATS:
        raise SegattnError(f"--plot {path}: unknown picture format {ext or '(none)'!r}; expected a .png or .svg file")
    if os.path.exists(path) and not overwrite:
        raise SegattnError(f"--plot {path} already exists; pass --overwrite to replace it")
    if importlib.util.find_spec("matplotlib") is None:
        raise SegattnError(MISSING)
    return FORMATS[ext]


def _pyplot() -> object:
    try:
        import matplotlib
    except ImportError:
        raise SegattnError(MISSING) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _tick(value: float, _pos: object = None) -> str:
    """Log-axis labels at 1, 2 and 5 times a power of ten, as plain numbers (``20``, ``500``, ``2000``)."""
    if value <= 0:
        return ""
    lead = f"{value:.0e}"[0]
    return f"{value:g}" if lead in "125" else ""


def plot_zoo(points: Sequence[ZooPoint], path: Union[str, os.PathLike], overwrite: bool = False) -> str:
    """Draw ``points`` (from :func:`segattn.convert.zoo_cost.zoo_points`) into ``path``; returns the path."""
    fmt = check_plot_path(path, overwrite)
    if not points:
        raise SegattnError("nothing to plot: no Cityscapes 512x1024 or ADE20K entry matches")
    plt = _pyplot()
    from matplotlib import ticker
    datasets = [d for d in PROTOCOL_SIZE if any(p.dataset == d for p in points)]
    models = sorted({p.model for p in points})
    cmap = plt.get_cmap("tab20")  # type: ignore[attr-defined]
    colour: Dict[str, object] = {m: cmap(i % 20) for i, m in enumerate(models)}
    fig, axes = plt.subplots(len(datasets), 2, figsize=(13, 4.6 * len(datasets)), squeeze=False)  # type: ignore[attr-defined]
    for row, dataset in zip(axes, datasets):
        pts: List[ZooPoint] = [p for p in points if p.dataset == dataset]
        h, w = PROTOCOL_SIZE[dataset]
        for ax, key, label in ((row[0], "macs", "GMACs"), (row[1], "params", "parameters (M)")):
            scale = 1e9 if key == "macs" else 1e6
            xs = [getattr(p, key) / scale for p in pts]
            for p, x in zip(pts, xs):
                ax.scatter(x, p.miou, color=colour[p.model], marker=MARKERS.get(backbone_family(p.backbone), "x"),
                           s=28, alpha=0.85, edgecolors="none")
            front = pareto_front([(x, p.miou) for x, p in zip(xs, pts)])
            fx, fy = [xs[i] for i in front], [pts[i].miou for i in front]
            ax.step(fx, fy, where="post", color="black", linewidth=1, alpha=0.7)
            ax.scatter(fx, fy, facecolors="none", edgecolors="black", s=90, linewidths=1.2)
            best = front[-1]
            ax.annotate(f"{pts[best].model} {pts[best].backbone}", (xs[best], pts[best].miou), fontsize=7,
                        xytext=(-8, 2), textcoords="offset points", ha="right", va="bottom")
            ax.set_xscale("log")
            for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
                axis(ticker.FuncFormatter(_tick))
            ax.margins(y=0.08)
            ax.set_xlabel(f"{label}, whole image {h}x{w} (computed)")
            ax.set_ylabel("published mIoU (%)")
            ax.set_title(f"{dataset} ({len(pts)} checkpoints)", fontsize=10)
            ax.grid(True, which="both", alpha=0.25)
    handles = [plt.Line2D([], [], color=colour[m], marker="o", linestyle="", label=m) for m in models]  # type: ignore[attr-defined]
    fams = sorted({backbone_family(p.backbone) for p in points}, key=list(MARKERS).index)
    handles += [plt.Line2D([], [], color="grey", marker=MARKERS[f], linestyle="", label=f) for f in fams]  # type: ignore[attr-defined]
    handles.append(plt.Line2D([], [], color="black", marker="o", markerfacecolor="none", label="Pareto front"))  # type: ignore[attr-defined]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle("mmseg zoo checkpoints segattn converts: published mIoU against cost", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.86, 0.97))
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110)
    plt.close(fig)  # type: ignore[attr-defined]
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


__all__ = ["backbone_family", "check_plot_path", "plot_zoo"]
