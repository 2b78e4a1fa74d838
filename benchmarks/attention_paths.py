"""Time the three exact CPU attention paths side by side: the fused SDPA kernel (q / k padded to the
value width), ``ChunkedAttention`` and the plain matmul-softmax-matmul, forward, interleaved rounds.

The rules in ``segattn.ops.attention`` (``_use_chunked``, ``_few_keys``) rest on these ratios::

    python benchmarks/attention_paths.py                       # ISA's groups and a global map, 1 thread
    python benchmarks/attention_paths.py --shape 1 64 64 256 --dv 512 --threads 2 --rounds 30

A shape is (B, G, N, d) with as many keys as queries; values have ``--dv`` channels.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List, Sequence

import torch

from segattn.ops import attention

DEFAULT_SHAPES = [(1, 64, 64, 256), (1, 16, 64, 256), (1, 64, 256, 256), (1, 1, 4096, 256)]


def paths(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Dict[str, Callable[[], torch.Tensor]]:
    scale = q.shape[-1] ** -0.5

    def plain() -> torch.Tensor:
        return torch.matmul(attention.attention_weights(q, k, scale), v)

    return {
        "fused": lambda: attention._fused_kernel(q, k, v, scale),
        "chunked": lambda: attention.ChunkedAttention.apply(q, k, v, scale),
        "plain": plain,
    }


def time_shape(shape: Sequence[int], dv: int, rounds: int) -> Dict[str, float]:
    q, k = torch.randn(*shape), torch.randn(*shape)
    v = torch.randn(*shape[:-1], dv)
    fns = paths(q, k, v)
    with torch.no_grad():
        ref = fns["plain"]()
        for name, fn in fns.items():
            torch.testing.assert_close(fn(), ref, atol=1e-4, rtol=1e-4, msg=f"{name} differs")
        times: Dict[str, List[float]] = {name: [] for name in fns}
        for r in range(rounds):
            order = list(fns) if r % 2 == 0 else list(reversed(fns))
            for name in order:
                start = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", type=int, nargs=4, action="append", metavar=("B", "G", "N", "D"),
                   help="(repeatable) default: ISA's groups at 64x64 and 128x128 and a 64x64 global map")
    p.add_argument("--dv", type=int, default=512)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s), median of {args.rounds} interleaved rounds, forward, float32")
    print("| (B, G, N, d) | dv | fused ms | chunked / fused | plain / fused |")
    print("|---|---:|---:|---:|---:|")
    for shape in args.shape or DEFAULT_SHAPES:
        t = time_shape(shape, args.dv, args.rounds)
        print(f"| {tuple(shape)} | {args.dv} | {t['fused'] * 1e3:.1f} | {t['chunked'] / t['fused']:.2f}x "
              f"| {t['plain'] / t['fused']:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
