"""A/B of ``segattn.ops.sampling`` against its version at another commit, in one process.

Loads ``src/segattn/ops/sampling.py`` as it was at ``--commit`` (``git show``), then times one module's
forward+backward with the window kernels (``ShiftedSum`` and ``_shifted_sum_plain``) of either version,
interleaved over rounds (order alternating), and prints the medians and their ratio::

    .venv/bin/python benchmarks/sampling_ab.py --commit 8a2a6f5~1 --module local_relation --size 97
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import segattn
from segattn.ops import sampling


def load_old(commit: str):
    src = subprocess.run(["git", "show", f"{commit}:src/segattn/ops/sampling.py"], capture_output=True, text=True,
                         check=True).stdout
    path = Path(tempfile.mkdtemp()) / "sampling_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("sampling_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--commit", required=True, help="the other version (e.g. a commit before a change)")
    p.add_argument("--module", default="local_relation")
    p.add_argument("--channels", type=int, default=512)
    p.add_argument("--size", type=int, default=97)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    old = load_old(args.commit)
    impls = {"old": (old.ShiftedSum, old._shifted_sum_plain), "new": (sampling.ShiftedSum, sampling._shifted_sum_plain)}
    module = segattn.create_module(args.module, args.channels)
    x = torch.randn(1, args.channels, args.size, args.size, requires_grad=True)
    times = {"old": [], "new": []}
    for rnd in range(args.rounds):
        for name in (("old", "new") if rnd % 2 == 0 else ("new", "old")):
            sampling.ShiftedSum, sampling._shifted_sum_plain = impls[name]
            module(x).mean().backward()  # warm-up
            start = time.perf_counter()
            module(x).mean().backward()
            times[name].append(time.perf_counter() - start)
    o, n = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"{args.module} 1x{args.channels}x{args.size}x{args.size} forward+backward, {args.threads} thread(s), "
          f"{args.rounds} rounds: {args.commit} {o:.2f} s, working tree {n:.2f} s, ratio {n / o:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
