"""``segattn export`` (ONNX / torch.export / Hub-format folder) and ``segattn models`` (list, ``--info``).

    segattn export --checkpoint runs/fcn/last.pt --format onnx --size 360x480 --dynamic --out fcn.onnx
    segattn export --checkpoint runs/fcn/last.pt --format hub --out fcn-camvid/      # save_pretrained folder
    segattn export --model pspnet --num-classes 19 --format pt2 --size 512x512 --out psp.pt2
    segattn models --info fcn-camvid/          # weights metadata of a saved folder (or a model name)
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any, Dict, List, Optional

FORMATS = ("onnx", "pt2", "hub")
DEFAULT_CLASSES = 19


def _kw_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _model_from_args(args: argparse.Namespace) -> Any:
    if bool(args.checkpoint) == bool(args.model):
        raise ValueError("give exactly one of --checkpoint (trained model) and --model NAME (random weights)")
    _check_model_only(args)
    if args.model:
        import segattn

        kwargs: Dict[str, Any] = {}
        for item in args.kw:
            if "=" not in item:
                raise ValueError(f"--kw expects KEY=VALUE, got {item!r}")
            key, value = item.split("=", 1)
            kwargs[key.strip()] = _kw_value(value)
        classes = DEFAULT_CLASSES if args.num_classes is None else args.num_classes
        return segattn.create_model(args.model, classes, **kwargs)
    from segattn.engine.predict import load_model

    model, _cfg, _meta = load_model(args.checkpoint, (), "cpu")
    return model


def _check_model_only(args: argparse.Namespace) -> None:
    """``--num-classes`` and ``--kw`` build a ``--model``; a checkpoint brings its own (they were ignored)."""
    given = [flag for flag, value in (("--num-classes", args.num_classes), ("--kw", args.kw)) if value]
    if args.checkpoint and given:
        raise ValueError(f"{' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --model only; "
                         f"--checkpoint {args.checkpoint} brings its own classes and architecture")


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CPU allocator, CUDA out of memory, ``MemoryError``)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def checkpoint_to_pretrained(checkpoint: str, out: str, overwrite: bool = False) -> str:
    """A Hub-format folder (:func:`segattn.models.weights.save_pretrained`) from a ``segattn train``
    checkpoint: class names and palette from the checkpoint, normalisation, crop and eval settings
    from its run config, metrics from ``summary.json`` beside it (else the checkpoint's best)."""
    from segattn.engine.predict import load_model
    from segattn.models.weights import save_pretrained

    if os.path.isdir(checkpoint):
        raise ValueError(f"{checkpoint} is already a folder; --format hub converts a training checkpoint file")
    model, cfg, meta = load_model(checkpoint, (), "cpu")
    data, ev = cfg.data, cfg.eval
    metrics = _summary_metrics(checkpoint)
    run = cfg.to_dict() if hasattr(cfg, "to_dict") else None
    name = (run or {}).get("name") or getattr(cfg, "name", None)
    command = f"segattn train --config training_config.json  # run {name!r}" if run else None
    eval_settings = {k: getattr(ev, k) for k in ("mode", "crop_size", "stride", "scales", "flip") if hasattr(ev, k)}
    return save_pretrained(
        model, out, overwrite=overwrite, classes=list(meta["classes"]), palette=[list(c) for c in meta["palette"]],
        mean=list(data.mean) if data.transforms else None, std=list(data.std) if data.transforms else None,
        crop_size=list(data.crop_size) if getattr(data, "crop_size", None) else None, eval=eval_settings,
        dataset=getattr(data, "dataset", None), metrics=metrics, command=command, run_config=run,
        source=os.path.abspath(checkpoint))


def _summary_metrics(checkpoint: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "summary.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    metrics = dict(summary.get("metrics") or {})
    if "iteration" in summary:
        metrics["iteration"] = summary["iteration"]
    return metrics or None


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (argparse type for the verification tolerances)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format == "hub":
        if not args.checkpoint or args.model:
            raise ValueError("--format hub converts a training checkpoint: give --checkpoint (not --model)")
        if args.dynamic or args.opset or args.size or args.pooling:
            raise ValueError("--size, --dynamic, --opset and --pooling apply to --format onnx|pt2 only")
        _check_model_only(args)
        if (os.path.isfile(args.out) or os.path.isdir(args.out) and os.listdir(args.out)) and not args.overwrite:
            raise ValueError(f"output {args.out} already exists; pass --overwrite to replace it")
        folder = checkpoint_to_pretrained(args.checkpoint, args.out, overwrite=args.overwrite)
        print(f"{folder}: Hub-format folder ({', '.join(sorted(os.listdir(folder)))})")
        return 0
    from segattn.export import DEFAULT_SIZE, _parse_size, check_output_name, export

    check_output_name(args.out, args.format)  # before loading anything
    if args.size:
        _parse_size(args.size)
    if args.pooling and not args.dynamic:
        raise ValueError(f"--pooling {args.pooling} applies with --dynamic only (a fixed-size export has no "
                         "size-dependent pooling to treat)")
    if os.path.exists(args.out) and not args.overwrite:
        raise ValueError(f"output {args.out} already exists; pass --overwrite to replace it")
    model = _model_from_args(args)
    size = args.size or DEFAULT_SIZE
    try:
        result = export(model, args.out, format=args.format, size=size, dynamic=args.dynamic, opset=args.opset,
                        pooling=args.pooling or "generic", overwrite=args.overwrite, atol=args.atol, rtol=args.rtol)
    except (RuntimeError, MemoryError) as exc:
        if not _out_of_memory(exc):
            raise
        from segattn.errors import SegattnError

        raise SegattnError(f"--size {size}: the model needs more memory at this size than there is here "
                           f"({type(exc).__name__} while exporting); choose a smaller --size") from None
    print(result)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    if args.plot and (not args.zoo or args.info):
        raise ValueError("--plot draws the zoo: use it with --zoo (segattn models --zoo [FILTER] --plot FILE)")
    if args.info and (args.zoo or args.pattern != "*"):
        raise ValueError(f"--info {args.info} describes one model: give it without "
                         f"{'--zoo' if args.zoo else 'a pattern'} (`segattn models --info NAME`)")
    if args.size and not args.info:
        raise ValueError("--size sets the size of --info's MACs figure: use it with --info NAME")
    if args.info:
        for line in model_info_lines(args.info, args.size):
            print(line)
        return 0
    if args.zoo:
        from segattn.convert.zoo import table_lines, zoo_entries

        if args.plot:
            from segattn.viz.zoo_plot import check_plot_path

            check_plot_path(args.plot, args.overwrite)  # before any work
        entries = zoo_entries(args.pattern)
        if not entries:
            raise ValueError(f"no mmseg zoo entry matches {args.pattern!r}; `segattn models --zoo` lists all")
        if args.plot:
            from segattn.convert.zoo_cost import zoo_points
            from segattn.viz.zoo_plot import plot_zoo

            points = zoo_points(args.pattern)
            print(f"wrote {plot_zoo(points, args.plot, args.overwrite)} ({len(points)} Cityscapes 512x1024 / ADE20K "
                  "checkpoints: published mIoU against computed MACs and parameters)")
            return 0
        for line in table_lines(entries):
            print(line)
        print(f"({len(entries)} entries; `segattn convert mmseg NAME --out DIR` downloads and converts one)")
        return 0
    from segattn.models import list_models
    from segattn.registry import MODELS

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no registered model matches {args.pattern!r}; `segattn models` lists them all")
    print(f"{'name':<16} {'context modules':<48} paper")
    for name in names:
        meta = MODELS.meta(name)
        ctx = ", ".join(meta.get("context", ())) or ("(upsampler " + meta["upsampler"] + ")" if meta.get("upsampler")
                                                     else "-")
        print(f"{name:<16} {ctx:<48} {meta.get('paper', '')}")
    return 0


def model_info_lines(name: str, size: Optional[str] = None) -> List[str]:
    """Lines for ``segattn models --info NAME``: a saved folder / Hub id shows its :class:`WeightsInfo`;
    a registered model name shows its defaults, MACs and shipped recipes (no weights are shipped)."""
    from segattn.export import _parse_size
    from segattn.models.weights import WeightsInfo, model_macs, weights_info

    hw = list(_parse_size(size)) if size else None
    if os.path.isdir(name) or ("/" in name and not os.path.exists(name)):
        return weights_info(name, hw).lines()
    from segattn.engine.config import list_configs
    from segattn.models import list_models
    from segattn.registry import MODELS

    if os.path.isfile(name) and name not in list_models():
        raise ValueError(f"{name} is a file; --info reads a model name or a save_pretrained folder (a training "
                         "checkpoint becomes one with `segattn export --checkpoint FILE --format hub --out DIR`)")
    if name not in list_models():
        import difflib

        close = difflib.get_close_matches(name, list_models(), n=3)
        raise ValueError(f"unknown model or folder {name!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                               "; see `segattn models`"))
    hw = hw or [512, 512]
    info = WeightsInfo(model=name, source="none shipped: random init (train one with a recipe below)",
                       macs=model_macs(name, 19, hw), macs_size=hw)
    recipes = [c for c in list_configs(f"*/{name}_*")]
    meta = MODELS.meta(name)
    lines = info.lines()
    lines.insert(1, f"{'paper':<10} {meta.get('paper', '')}")
    lines.insert(2, f"{'context':<10} {', '.join(meta.get('context', ())) or '-'}")
    lines.append(f"{'defaults':<10} create_model({name!r}, 19): resnet50 backbone, output stride 8 (MACs for 19 classes)")
    lines += [f"{'recipe':<10} segattn train --config {c}" for c in recipes]
    return lines


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``export`` and ``models``."""
    p = sub.add_parser("export", help="export a model to ONNX / torch.export (verified) or a Hub-format folder")
    p.add_argument("--checkpoint", help="training checkpoint (last.pt/best.pt), save_pretrained folder or Hub repo id")
    p.add_argument("--model", help="registered model name, exported with random weights (instead of --checkpoint)")
    p.add_argument("--num-classes", type=int, default=None, help=f"classes for --model (default {DEFAULT_CLASSES})")
    p.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE",
                   help="create_model keyword for --model, JSON value (repeatable), e.g. --kw backbone=resnet18c")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="onnx (ONNX Runtime-checked), pt2 (torch.export program) or hub (save_pretrained folder)")
    p.add_argument("--size", help="export size HxW (default 512x512)")
    p.add_argument("--dynamic", action="store_true", help="symbolic height and width (checked at a second size)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 20; 23 = fused Attention op)")
    p.add_argument("--pooling", choices=("generic", "refuse"), default=None,
                   help="with --dynamic: size-generic adaptive pooling (default) or refuse models that have it")
    p.add_argument("--atol", type=non_negative_float, default=1e-4, help="verification: absolute tolerance on the logits")
    p.add_argument("--rtol", type=non_negative_float, default=1e-3, help="verification: relative tolerance on the logits")
    p.add_argument("--out", required=True, help="output file (.onnx / .pt2) or folder (hub)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("models", help="list registered segmentation models; --info NAME for weights metadata")
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--info", metavar="NAME", help="a model name, a save_pretrained folder or a Hub repo id")
    p.add_argument("--size", help="HxW for the MACs figure (default: the training crop, else 512x512)")
    p.add_argument("--zoo", action="store_true",
                   help="list mmsegmentation's published checkpoints that `segattn convert mmseg` converts")
    p.add_argument("--plot", metavar="FILE", help="with --zoo: draw published mIoU against computed cost "
                                                  "(.png or .svg; needs matplotlib, the viz extra)")
    p.add_argument("--overwrite", action="store_true", help="with --plot: replace an existing FILE")
    p.set_defaults(func=_cmd_models)
