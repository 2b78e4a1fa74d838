"""``segattn viz``: pictures of what a trained model's context module does, and a report page.

    segattn viz --checkpoint runs/ema/last.pt IMAGE... --out viz/ [--labels FOLDER] [--query Y,X ...]

Every input is checked before the model runs: the images exist, the queries are inside them, the
checkpoint holds a model with a context module that has weights to show, and the output folder
holds no earlier report (``--force`` replaces it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

Pair = Tuple[int, int]


def parse_query(text: str) -> Pair:
    """'120,200' -> (120, 200): a pixel (y, x) of the input image."""
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a query is 'Y,X' (two integers, row then column), got {text!r}") from None
    return y, x


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("viz", help="pictures of what the context module does + a self-contained HTML report")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("--checkpoint", required=True, help="training checkpoint (last.pt / best.pt) or save_pretrained folder")
    p.add_argument("--out", required=True, help="output folder (PNGs + report.html)")
    p.add_argument("--labels", action="append", default=[], metavar="PATH",
                   help="ground-truth masks, a file or folder matched to the images by file name (repeatable): "
                        "adds the ground truth and the error map; read as --dataset's reader reads them")
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help="dataset whose mask convention --labels follows (CamVid void 11 -> ignore, ADE20K "
                        "reduce-zero-label, Cityscapes label ids; default: the checkpoint's training dataset)")
    p.add_argument("--query", type=parse_query, action="append", default=[], metavar="Y,X",
                   help="query pixel (row, column) of the input image; repeatable (default: 3 across the middle row)")
    p.add_argument("--max-images", type=int, default=8, help="use at most this many images (default 8)")
    p.add_argument("--bases", type=int, default=8, help="EMA bases / low-rank nodes shown: those that win the largest areas (default 8)")
    p.add_argument("--log", type=float, default=None, metavar="DECADES",
                   help="show the pixel maps on a log scale over this many decades (e.g. 3: weights down to 1/1000 "
                        "of the maximum stay visible; default linear)")
    p.add_argument("--no-page", action="store_true", help="pictures only, no report.html")
    p.add_argument("--compact", action="store_true", help="256-colour PNGs (about a third of the size, for docs)")
    p.add_argument("--force", action="store_true", help="replace an existing report in --out")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.set_defaults(func=run)


def _labels_by_name(paths: List[str]) -> Dict[str, Path]:
    from segattn.engine.predict import list_images

    return {p.name: p for p in list_images(paths)} if paths else {}


def _load_pair(path: Path, labels: Dict[str, Path]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The image and, when ``--labels`` has one of the same name, its mask, decoded as the datasets
    and ``segattn predict`` do (16-bit scaled, floating point refused); a mask of another size is refused."""
    from segattn.data.datasets.base import check_mask_size, load_image, load_mask

    image = load_image(str(path))
    if path.name not in labels:
        return image, None
    mask = load_mask(str(labels[path.name]))
    check_mask_size(image, mask, str(path), str(labels[path.name]))
    return image, mask


def label_reader(dataset: Optional[str], cfg: Any) -> Any:
    """The mask reader of ``--dataset`` (or of the checkpoint's training dataset, with its keyword
    arguments): raw ``--labels`` values become training ids exactly as in training and evaluation."""
    from segattn.data import mask_reader

    name = dataset or cfg.data.dataset
    kwargs = dict(cfg.data.dataset_kwargs) if name == cfg.data.dataset else {}
    return mask_reader(name, **kwargs)


def _resize(arr: np.ndarray, size: Pair, nearest: bool) -> np.ndarray:
    from PIL import Image

    if arr.shape[:2] == size:
        return arr
    mode = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(arr).resize((size[1], size[0]), mode))


def _check_out(out: str, force: bool) -> None:
    from segattn.io import check_writable_dir

    check_writable_dir(out, "--out")  # a file there: named, not "File exists" after the model ran
    report = os.path.join(out, "report.html")
    if os.path.exists(report) and not force:
        raise ValueError(f"{out!r} already holds a report ({report}); pass --force to replace it or pick another --out")


def _check_options(args: argparse.Namespace) -> None:
    """The numbers and names of the options, before anything is read."""
    if args.log is not None and not args.log > 0:
        raise ValueError(f"--log takes a positive number of decades, got {args.log}")
    if args.max_images < 1:
        raise ValueError(f"--max-images must be at least 1, got {args.max_images}")
    if args.bases < 1:
        raise ValueError(f"--bases must be at least 1 (EMA bases / low-rank nodes shown), got {args.bases}")
    if args.dataset is not None:
        from segattn.data import list_datasets

        if args.dataset not in list_datasets():
            raise ValueError(f"--dataset {args.dataset!r} is not a registered dataset; expected one of "
                             f"{', '.join(list_datasets())}")


def run(args: argparse.Namespace) -> int:
    from segattn.data.datasets.base import check_label_values
    from segattn.engine.predict import inference_scales, list_images, load_model, predict_labels, preprocess
    from segattn.viz.model import require_context
    from segattn.viz.run import Item, visualize
    from segattn.viz.weights import check_query

    _check_out(args.out, args.force)
    _check_options(args)
    images = list_images(args.inputs)[: args.max_images]
    labels = _labels_by_name(args.labels)
    if labels and not any(path.name in labels for path in images):
        raise ValueError(f"--labels {', '.join(args.labels)}: no mask has the file name of an image "
                         f"({', '.join(p.name for p in images[:3])}{', ...' if len(images) > 3 else ''}); "
                         "masks are matched to the images by file name")
    pictures = []
    for path in images:
        img, raw = _load_pair(path, labels)
        for q in args.query:
            check_query(q, img.shape[:2], f"image {path.name}")
        pictures.append((path, img, raw))
    if not os.path.exists(args.checkpoint):
        raise FileNotFoundError(f"checkpoint {args.checkpoint!r} does not exist")
    model, cfg, meta = load_model(args.checkpoint, list(args.set))
    found = require_context(model, "checkpoint's model")
    num_classes, palette = int(meta["num_classes"]), meta["palette"]
    ignore = int(meta.get("ignore_index", 255))
    if labels:
        reader = label_reader(args.dataset, cfg)
        pictures = [(p, img, None if raw is None else reader.map_labels(raw)) for p, img, raw in pictures]
    for path, _, raw in pictures:
        if raw is not None:
            check_label_values(raw, num_classes, ignore, str(labels[path.name]))
    items = []
    for path, img, raw in pictures:
        scale = inference_scales(img.shape[:2], cfg)[0]
        size = (max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale)))
        shown = _resize(img, size, nearest=False)
        pred = _resize(predict_labels(model, img, cfg, num_classes, name=str(path)).astype(np.uint8), size,
                       nearest=True)
        gt = None if raw is None else _resize(np.where(raw == ignore, 255, raw).astype(np.uint8), size, nearest=True)
        queries = [(min(size[0] - 1, int(q[0] * scale)), min(size[1] - 1, int(q[1] * scale))) for q in args.query]
        items.append(Item(path.stem, preprocess(shown, cfg), shown, pred.astype(np.int64),
                          None if gt is None else gt.astype(np.int64), queries or None))
    names = ", ".join(f"{p or 'model'} ({n})" for p, n, _ in found)
    title = f"segattn viz: {Path(args.checkpoint).name}: {names}"
    notes = (f"Model input at scale {inference_scales(pictures[0][1].shape[:2], cfg)[0]:g} of the image "
             f"(the config's eval scale); weights are max-normalised per map"
             f"{'' if args.log is None else f', on a log scale over {args.log:g} decades'}. Checkpoint: {args.checkpoint}")
    from segattn.models.segmentor import finite_check_off

    with finite_check_off(model):  # non-finite images were warned about above, by name
        written = visualize(model, items, palette, args.out, title, page=not args.no_page, notes=notes,
                            max_bases=args.bases, compact=args.compact, decades=args.log)
    for w in written:
        print(w)
    print(f"{len(written)} file(s) -> {args.out}", file=sys.stderr)
    return 0
