"""Prove that the sparse attention modules never hold an N x N tensor; time them on CPU.

For each module (default: ``ccnet`` and ``isa``, in_channels 512, input 1 x 512 x 128 x 128, so
N = 16384 and N^2 = 268,435,456) one forward + backward runs under ``LargestTensorRecorder``: a
``TorchDispatchMode`` that sees the output of every aten op of the forward *and* the backward, plus
``saved_tensors_hooks`` that see every tensor autograd keeps for the backward. It reports the largest
numel and the op that produced it, against N^2. Then one plain forward + backward is timed. Every
module runs in its own subprocess so that the peak RSS (``ru_maxrss``) is its own.

    .venv/bin/python benchmarks/sparse_memory.py                    # ccnet and isa at 1x512x128x128
    .venv/bin/python benchmarks/sparse_memory.py --modules ccnet --size 64 64 --channels 64

The views an op returns count with their full numel (an ``expand`` counts as large), so the figure
is an upper bound of what is materialised.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any, Dict, List

import torch

from segattn.bench.tensors import LargestTensorRecorder, forward_backward, largest_tensor  # noqa: F401


def measure(name: str, channels: int, height: int, width: int) -> Dict[str, Any]:
    """Largest tensor, then wall time of one plain forward + backward, in this process."""
    import segattn

    torch.manual_seed(0)
    module = segattn.create_module(name, channels).train()
    x = torch.randn(1, channels, height, width, requires_grad=True)
    rec = largest_tensor(module, x)
    module.zero_grad(set_to_none=True)
    x.grad = None
    start = time.perf_counter()
    forward_backward(module, x)
    wall = time.perf_counter() - start
    n = height * width
    return {
        "module": name,
        "input": [1, channels, height, width],
        "N": n,
        "N2": n * n,
        "largest_numel": rec.largest,
        "largest_op": rec.largest_op,
        "largest_saved_numel": rec.largest_saved,
        "largest_over_N2": rec.largest / (n * n),
        "wall_s_fwd_bwd": round(wall, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
    }


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=["ccnet", "isa"])
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--single", action="store_true", help="measure --modules[0] in this process")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.single:
        print(json.dumps(measure(args.modules[0], args.channels, *args.size)))
        return 0
    ok = True
    for name in args.modules:
        cmd = [sys.executable, __file__, "--single", "--modules", name, "--channels", str(args.channels)]
        cmd += ["--size", *map(str, args.size), "--threads", str(args.threads)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        ok &= result["largest_numel"] < result["N2"]
        print(
            f"{name:6s} input {'x'.join(map(str, result['input']))}  fwd+bwd {result['wall_s_fwd_bwd']:.2f} s "
            f"({result['threads']} threads)  peak RSS {result['peak_rss_mib']:.0f} MiB  largest tensor "
            f"{result['largest_numel']:,} = {result['largest_over_N2']:.4f} x N^2 (N^2 = {result['N2']:,}; "
            f"by {result['largest_op']}; largest saved {result['largest_saved_numel']:,})"
        )
    print("no N x N tensor" if ok else "AN N x N TENSOR WAS CREATED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
