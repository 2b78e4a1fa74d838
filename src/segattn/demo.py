"""``segattn demo``: why context modules matter, in a few minutes on a CPU.

Trains a context model (default ``pspnet``: its pyramid pooling sees the whole image from the first
step, and it learns the rule within the budget; any registered model name works) and the ``fcn`` baseline with the same backbone, schedule
and data on the built-in synthetic dataset, where a shape's class is the colour of a marker at the
image border (far outside a local receptive field). Evaluates both on the validation split and
writes to the output folder:

- ``report.md``: a table (mIoU, aAcc, mAcc, per-class IoU, train time, parameters);
- ``report.json``: the same numbers plus the configs;
- ``predictions.png``: validation images, ground truth and both models' predictions;
- ``attention/``: ``segattn.viz`` pictures of the context model (where a pixel looks, per module family)
  and ``attention/report.html``, a self-contained page where clicking a pixel shows its weights;
- ``runs/<model>/``: each run's checkpoints and ``metrics.jsonl``.

``quick=True`` shrinks everything (32x32 images, 16-channel heads, a few iterations) to a
seconds-long smoke test of the whole path.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from segattn.data.palette import colorize
from segattn.engine import build
from segattn.engine.config import Config, load_config, resolve_config_path
from segattn.engine.metrics import json_safe
from segattn.engine.train import train
from segattn.errors import SegattnError
from segattn.io import atomic_write, atomic_write_json, atomic_write_text, check_writable_dir
from segattn.models import list_models
from segattn.viz.run import Item, visualize

QUICK = [
    "schedule.iters=4", "schedule.warmup_iters=0", "data.batch_size=2", "data.val_batch_size=4",
    "model.kwargs.channels=16", "train.log_interval=2", "train.ckpt_interval=0",
    "data.dataset_kwargs={size: [32, 32], num_classes: 3, blob_size: [8, 10], margin: 8, cue_size: 6, num_blobs: [1, 2]}",
    "data.train_kwargs.num_samples=8", "data.val_kwargs.num_samples=4",
]


def demo_config(model: str, out_dir: str, quick: bool, iters: Optional[int], threads: Optional[int]) -> Config:
    """The shipped synthetic config of ``model`` (or the FCN one with the model swapped)."""
    name = f"synthetic/{model}_r18_synthetic.yaml"
    overrides: List[str] = []
    try:
        resolve_config_path(name)
    except FileNotFoundError:
        name = "synthetic/fcn_r18_synthetic.yaml"
        overrides.append(f"model.name={model}")
    overrides += [f"name={model}_demo", f"train.work_dir={os.path.join(out_dir, 'runs', model)}",
                  "train.progress=false", "train.tensorboard=false", "train.overwrite=true"]
    if quick:
        overrides += QUICK
    if iters is not None:
        overrides.append(f"schedule.iters={iters}")
    if threads:
        overrides.append(f"train.threads={threads}")
    return load_config(name, overrides)


def _predictions(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(images).argmax(1).cpu().numpy()


def _grid_png(path: str, columns: Dict[str, np.ndarray], palette: List[List[int]]) -> None:
    """Rows = samples; columns = image, ground truth, one per model (matplotlib if installed, else PIL)."""
    names = list(columns)
    tiles = []
    for name in names:
        arr = columns[name]
        if arr.ndim == 4:  # images (N, H, W, 3) uint8
            tiles.append(list(arr))
        else:
            tiles.append([colorize(m, palette, ignore_color=(255, 255, 255)) for m in arr])
    rows = len(tiles[0])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from PIL import Image

        pad = 4
        h, w = tiles[0][0].shape[:2]
        canvas = np.full((rows * (h + pad) + pad, len(names) * (w + pad) + pad, 3), 255, np.uint8)
        for c, col in enumerate(tiles):
            for r, tile in enumerate(col):
                y, x = pad + r * (h + pad), pad + c * (w + pad)
                canvas[y:y + h, x:x + w] = tile
        big = Image.fromarray(canvas).resize((canvas.shape[1] * 3, canvas.shape[0] * 3), Image.NEAREST)
        atomic_write(path, lambda f: big.save(f, format="PNG"))
        return
    fig, axes = plt.subplots(rows, len(names), figsize=(1.8 * len(names), 1.8 * rows), squeeze=False)
    for c, col in enumerate(tiles):
        for r, tile in enumerate(col):
            ax = axes[r][c]
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(names[c], fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    plt.close(fig)


def _markdown(rows: List[Dict[str, Any]], classes: List[str]) -> str:
    def pct(v: Any) -> str:
        return "n/a" if v is None or v != v else f"{100 * v:.1f}"

    head = ["model", "mIoU", "aAcc", "mAcc"] + [f"IoU {c}" for c in classes] + ["iters", "train s", "params (M)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["metrics"]
        cells = [r["model"], pct(m["mIoU"]), pct(m["aAcc"]), pct(m["mAcc"])]
        cells += [pct(m["IoU"][c]) for c in classes]
        cells += [str(r["iters"]), f"{r['train_s']:.0f}", f"{r['params_m']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _attention_pictures(model: torch.nn.Module, images: torch.Tensor, columns: Dict[str, np.ndarray], context: str,
                        palette: Any, out_dir: str, count: int = 2) -> str:
    """``segattn.viz`` pictures and page of the context model for the first validation images (markdown line)."""
    items = [Item(f"val{i}", images[i:i + 1], columns["image"][i], columns[context][i], columns["ground truth"][i])
             for i in range(min(count, len(images)))]
    try:
        visualize(model, items, [list(c) for c in palette], os.path.join(out_dir, "attention"),
                  f"segattn demo: where the {context} model looks")
    except ValueError as exc:  # a context module without weights to show (e.g. ASPP)
        return f"\n(no attention pictures: {exc})\n"
    return (f"\nWhere the {context} model looks, per query pixel: [attention/report.html](attention/report.html) "
            f"(click a pixel); pictures in `attention/`.\n")


def check_demo_args(context: str, iters: Optional[int], threads: Optional[int]) -> None:
    """``ValueError`` naming the value when the demo would compare fcn with itself or get a count < 1."""
    if context == "fcn":
        raise ValueError("--context fcn: the demo compares a context model with the fcn baseline, so it must name "
                         "another model (e.g. pspnet, emanet, danet; see `segattn models`)")
    if context not in list_models():
        raise ValueError(f"--context {context!r} is not a registered model; expected one of {', '.join(list_models())}")
    for flag, value in (("--iters", iters), ("--threads", threads)):
        if value is not None and (isinstance(value, bool) or int(value) < 1):
            raise ValueError(f"{flag} must be at least 1, got {value}")


REPORT_FILES = ("report.md", "report.json", "predictions.png", "attention", "runs")


def check_no_earlier_report(out_dir: str, overwrite: bool) -> None:
    """``SegattnError`` when ``out_dir`` already holds a demo's files and ``overwrite`` is not given."""
    found = [f for f in REPORT_FILES if os.path.exists(os.path.join(out_dir, f))]
    if found and not overwrite:
        raise SegattnError(f"demo --out {out_dir} already holds a demo report ({', '.join(found)}); pass --overwrite "
                           "to replace it, or --out DIR for another folder")


def run_demo(out_dir: str = "outputs/demo", quick: bool = False, context: str = "pspnet", iters: Optional[int] = None,
             threads: Optional[int] = 1, samples: int = 6, overwrite: bool = False) -> Dict[str, Any]:
    """Train ``context`` and ``fcn``, evaluate both, write the report; returns numbers, markdown and paths.

    ``out_dir`` is checked to be writable, and to hold no earlier demo report unless ``overwrite``, before
    training starts; every report file is written atomically.
    ``context`` must be another model than ``fcn`` (the baseline); ``iters`` and ``threads`` are >= 1
    (``None``: the config's schedule, torch's default thread count).
    """
    check_demo_args(context, iters, threads)
    check_writable_dir(out_dir, "demo --out")
    check_no_earlier_report(out_dir, overwrite)
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    rows: List[Dict[str, Any]] = []
    models = {}
    val_set = None
    for name in (context, "fcn"):
        cfg = demo_config(name, out_dir, quick, iters, threads)
        train_set, val_set = build.build_datasets(cfg)
        model = build.build_model(cfg.model, train_set.num_classes)
        t0 = time.time()
        summary = train(cfg, model=model, train_set=train_set, val_set=val_set)
        rows.append({
            "model": name, "backbone": cfg.model.backbone, "metrics": summary["metrics"], "iters": summary["iteration"],
            "train_s": time.time() - t0, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "config": cfg.to_dict(),
        })
        models[name] = model
    assert val_set is not None
    classes = list(val_set.classes)
    n = min(samples, len(val_set))
    images = torch.stack([val_set[i][0] for i in range(n)])
    columns: Dict[str, np.ndarray] = {
        "image": (images.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8),
        "ground truth": torch.stack([val_set[i][1] for i in range(n)]).numpy(),
    }
    for name, model in models.items():
        columns[name] = _predictions(model, images)
    paths = {k: os.path.join(out_dir, f) for k, f in
             (("markdown", "report.md"), ("json", "report.json"), ("image", "predictions.png"))}
    _grid_png(paths["image"], columns, [list(c) for c in val_set.palette])
    viz_note = _attention_pictures(models[context], images, columns, context, val_set.palette, out_dir)
    table = _markdown(rows, classes)
    gain = rows[0]["metrics"]["mIoU"] - rows[1]["metrics"]["mIoU"]
    text = (f"# segattn demo: {context} vs fcn on the synthetic context dataset\n\n"
            f"Each shape's class is the colour of a marker at the image border, so it can only be read with "
            f"long-range context. Same backbone, data and schedule for both models; validation split "
            f"({len(val_set)} images).\n\n{table}\n\n"
            f"mIoU gain of {context} over fcn: {100 * gain:+.1f} points. Total time {time.time() - start:.0f} s.\n\n"
            f"![predictions](predictions.png)\n{viz_note}")
    atomic_write_text(paths["markdown"], text)
    report = {"rows": rows, "classes": classes, "gain_mIoU": gain, "total_s": time.time() - start,
              "quick": quick, "torch_threads": torch.get_num_threads()}
    atomic_write_json(paths["json"], json_safe(report))
    return {**report, "markdown": text, "paths": paths}
