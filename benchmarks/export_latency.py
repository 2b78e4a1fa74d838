"""CPU inference latency: ONNX Runtime vs PyTorch eager vs ``torch.compile``, in one run.

The CamVid CPU recipe's models (ResNet-18 V1c, output stride 16, 128-channel heads, 11 classes) on a
1x3x360x480 image, batch 1, float32, eval mode, no grad. For each model:

- eager: ``model(x)`` under ``torch.inference_mode()``;
- compile: ``torch.compile(model)`` (Inductor, default mode, static shapes), compiled before timing;
- ORT: the file ``segattn.export`` writes (opset 20, fixed 360x480, verified against eager) on
  ONNX Runtime's CPU provider with ``intra_op_num_threads`` = ``--threads``.

Each figure is the median of ``--repeat`` timed calls after ``--warmup`` calls; the three runtimes of
one model are measured back to back, interleaved per round, so a busy machine slows them alike. Ratios
to eager are what to compare across machines.

    .venv/bin/python benchmarks/export_latency.py --threads 2 --out outputs/export_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List

import torch

MODELS = ("fcn", "emanet", "nonlocal", "ccnet")
KW = {"backbone": "resnet18c", "output_stride": 16, "channels": 128}


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_model(name: str, size: List[int], threads: int, warmup: int, repeat: int, tmp: str) -> Dict[str, object]:
    import onnxruntime as ort

    import segattn

    torch.manual_seed(0)
    model = segattn.create_model(name, 11, **KW).eval()
    x = torch.randn(1, 3, *size)
    path = os.path.join(tmp, f"{name}.onnx")
    t0 = time.perf_counter()
    result = segattn.export(model, path, size=tuple(size), overwrite=True)
    export_s = time.perf_counter() - t0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    with torch.inference_mode():
        compiled(x)
    compile_s = time.perf_counter() - t0
    runs = {
        "eager": lambda: model(x),
        "compile": lambda: compiled(x),
        "ort": lambda: session.run(None, feed),
    }
    times: Dict[str, List[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in runs.values():
                fn()
        for _ in range(repeat):
            for key, fn in runs.items():
                times[key].append(_timed(fn))
        diff = (compiled(x) - model(x)).abs().max().item()
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    return {"model": name, "ms": med, "ratio_to_eager": {k: med[k] / med["eager"] for k in med},
            "spread_ms": {k: [min(v) * 1000, max(v) * 1000] for k, v in times.items()},
            "ort_max_abs_err": result.checks[0].max_abs_err, "compile_max_abs_err": diff,
            "export_s": export_s, "compile_s": compile_s}


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--size", nargs=2, type=int, default=[360, 480], metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            row = bench_model(name, args.size, args.threads, args.warmup, args.repeat, tmp)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    import onnxruntime

    print(f"{args.size[0]}x{args.size[1]}, batch 1, {args.threads} threads, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}; median of {args.repeat}")
    print("| model | eager ms | compile ms | ORT ms | compile / eager | ORT / eager |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ms, ratio = r["ms"], r["ratio_to_eager"]
        print(f"| {r['model']} | {ms['eager']:.0f} | {ms['compile']:.0f} | {ms['ort']:.0f} | "
              f"{ratio['compile']:.2f} | {ratio['ort']:.2f} |")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"size": args.size, "threads": args.threads, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
