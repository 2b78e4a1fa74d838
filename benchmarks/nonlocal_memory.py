"""Peak memory and wall time of the ``nonlocal`` block, forward + backward on CPU.

Issue 2's acceptance check: ``nonlocal`` with 512 input channels on a 1x512x128x128 map (N = 16384)
must run forward and backward with a peak far below the 1 GiB one float32 N x N matrix needs.

Each measurement runs in a fresh Python subprocess; the figure is the increase of the process's peak
resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) from just before the forward to
just after the backward, so the interpreter, torch, lazy kernel set-up (a 4x4 warm-up call runs first) and the
parameters/input are not counted, but every activation, attention workspace and gradient is.

    .venv/bin/python benchmarks/nonlocal_memory.py                 # fused path (default)
    .venv/bin/python benchmarks/nonlocal_memory.py --size 64 --reference   # naive path, for contrast

``--reference`` runs under ``reference_attention()`` (materialises the N x N logits and softmax);
do not combine it with the default 128x128 size on a small machine (several GiB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Dict, List


def measure(args: argparse.Namespace) -> Dict[str, float]:
    """Run one forward + backward in this process and return peak-RSS delta (bytes) and seconds."""
    import contextlib

    import torch

    import segattn
    from segattn.ops.attention import reference_attention

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # zero_init=False: the BN gamma is 1, so the backward pass carries real gradients through the attention
    module = segattn.create_module("nonlocal", args.channels, zero_init=False).train()
    x = torch.randn(1, args.channels, args.size, args.size, requires_grad=True)
    grad = torch.randn_like(x)
    with reference_attention() if args.reference else contextlib.nullcontext():  # warm-up: lazy kernel/pool setup
        module(torch.randn(1, args.channels, 4, 4, requires_grad=True)).sum().backward()
    module.zero_grad(set_to_none=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    start = time.perf_counter()
    with reference_attention() if args.reference else contextlib.nullcontext():
        y = module(x)
        y.backward(grad)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert x.grad is not None and torch.isfinite(x.grad).all()
    return {"peak_delta_bytes": float(after - before), "seconds": seconds}


def child_command(args: argparse.Namespace) -> List[str]:
    cmd = [sys.executable, __file__, "--child", "--size", str(args.size), "--channels", str(args.channels)]
    cmd += ["--threads", str(args.threads)] + (["--reference"] if args.reference else [])
    return cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="H = W of the input map (default 128)")
    parser.add_argument("--channels", type=int, default=512, help="input channels (default 512)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--reference", action="store_true", help="naive path (materialises N x N)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    out = subprocess.run(child_command(args), check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    n = args.size * args.size
    nxn = 4 * n * n
    peak = result["peak_delta_bytes"]
    path = "reference (naive)" if args.reference else "fused (SDPA)"
    print(f"nonlocal, input 1x{args.channels}x{args.size}x{args.size} (N = {n}), {path}, "
          f"forward+backward on CPU, {args.threads} thread(s)")
    print(f"peak RSS increase : {peak / 2**20:9.1f} MiB")
    print(f"float32 N x N     : {nxn / 2**20:9.1f} MiB  (peak = {peak / nxn:.3f} x N x N)")
    print(f"wall time         : {result['seconds']:9.2f} s")


if __name__ == "__main__":
    main()
