"""One prepared check of segattn's CUDA paths, for the few minutes a GPU machine is lent.

    python scripts/gpu_check.py --out DIR          # meant to fit a few minutes; not yet run on a GPU

Sections (each one catches its own failure and goes on, so one broken path does not hide the rest):

1. ``sdpa``: every dense module (1 x 512 x 64 x 64, N = 4096) forward + backward in float32 and under
   AMP fp16 / bf16: which scaled-dot-product-attention kernels ran (``LargestTensorRecorder``), the
   largest tensor against N x N, peak CUDA memory, whether the chunked fallback warned, and the time.
2. ``amp``: every registered module's forward under AMP fp16 / bf16 against float32 on the same GPU
   (max |y - y32| / max |y32|), and non-finite outputs.
3. ``pytest``: the CUDA-only tests (``-k cuda``: autocast, SDPA kernels), their summary line.
4. ``train``: ``segattn train`` on the synthetic set for 20 iterations on CUDA in float32, AMP bf16
   and AMP fp16 (GradScaler), then the same under ``torchrun --nproc_per_node 1`` (DDP, NCCL).

Nothing is downloaded; the machine needs only this checkout (with ``pip install -e .``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

DENSE = ["nonlocal", "nonlocal_gaussian", "nonlocal_concat", "danet_pam", "danet", "ocnet_base", "ocnet_pyramid",
         "ocnet_asp", "isa", "ann_apnb", "ann_afnb"]
AMP = {"float32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def section(name: str, fn: Callable[[], Any], results: Dict[str, Any]) -> None:
    print(f"== {name}", flush=True)
    t = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # report and go on: one broken path must not hide the others
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        print(results[name]["error"], flush=True)
    print(f"   {time.perf_counter() - t:.1f} s", flush=True)


def check_sdpa() -> List[Dict[str, Any]]:
    import segattn
    from segattn.bench.tensors import LargestTensorRecorder

    rows = []
    n = 64 * 64
    for name in DENSE:
        for amp, dtype in AMP.items():
            torch.manual_seed(0)
            module = segattn.create_module(name, 512).cuda().train()
            x = torch.randn(1, 512, 64, 64, device="cuda", requires_grad=True)
            row: Dict[str, Any] = {"module": name, "amp": amp}
            try:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    t = time.perf_counter()
                    with torch.autocast("cuda", dtype=dtype or torch.float16, enabled=dtype is not None), \
                            LargestTensorRecorder() as rec:
                        module(x).float().sum().backward()
                    torch.cuda.synchronize()
                row.update(kernels=sorted(rec.attention_ops), largest_over_nn=rec.largest / (n * n),
                           largest_op=rec.largest_op, peak_mib=(torch.cuda.max_memory_allocated() - base) / 2**20,
                           ms_with_recorder=1e3 * (time.perf_counter() - t),
                           fallback_warnings=[str(w.message) for w in caught if "fused attention" in str(w.message)])
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
            print("  ", json.dumps(row)[:400], flush=True)
            rows.append(row)
    return rows


def check_amp() -> List[Dict[str, Any]]:
    import segattn

    rows = []
    for name in segattn.list_modules():
        try:
            torch.manual_seed(0)
            module = segattn.create_module(name, 64).cuda().eval()
        except Exception as exc:  # modules that need extra keywords are covered by the pytest section
            rows.append({"module": name, "error": f"build: {exc}"})
            continue
        x = 4 * torch.randn(2, 64, 33, 47, device="cuda").relu()
        with torch.no_grad():
            ref = module(x).float()
            row: Dict[str, Any] = {"module": name}
            for amp in ("fp16", "bf16"):
                with torch.autocast("cuda", dtype=AMP[amp]):
                    y = module(x).float()
                row[amp] = {"finite": bool(torch.isfinite(y).all()),
                            "rel_err": float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-12))}
        print("  ", json.dumps(row), flush=True)
        rows.append(row)
    return rows


def run(cmd: List[str], timeout: int, env: Dict[str, str]) -> Dict[str, Any]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
    print(f"   $ {' '.join(cmd)}\n   exit {proc.returncode}; " + "\n   ".join(tail), flush=True)
    return {"cmd": " ".join(cmd), "exit": proc.returncode, "tail": tail, "s": time.perf_counter() - t}


def check_pytest(env: Dict[str, str]) -> Dict[str, Any]:
    return run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-k", "cuda", "tests/modules/test_autocast.py",
                "tests/ops/test_attention.py"], 900, env)


def check_train(out: Path, env: Dict[str, str], device: str = "cuda") -> List[Dict[str, Any]]:
    def sets(*pairs: str) -> List[str]:
        return [a for kv in pairs for a in ("--set", kv)]

    common = ["--config", "synthetic/compare_synthetic.yaml", *sets(
        "schedule.iters=20", f"train.device={device}", "train.log_interval=10", "train.ckpt_interval=20",
        "train.eval_interval=20", "eval.max_samples=16")]
    rows = []
    for amp in ("none", "bf16", "fp16"):
        extra = [] if amp == "none" else sets("train.amp=true", f"train.amp_dtype={amp}")
        rows.append(run([sys.executable, "-m", "segattn", "train", *common, *extra, "--work-dir",
                         str(out / f"train_{amp}"), "--overwrite"], 600, env))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    rows.append(run([*torchrun, "-m", "segattn", "train", *common, "--work-dir", str(out / "train_ddp"), "--overwrite"],
                    600, env))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json and the training work dirs")
    p.add_argument("--skip", nargs="*", default=[], choices=["sdpa", "amp", "pytest", "train"])
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device visible to torch", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SEGATTN_DATA=os.environ.get("SEGATTN_DATA", ""))
    results: Dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                               "device": torch.cuda.get_device_name(), "capability": torch.cuda.get_device_capability()}
    print(json.dumps(results), flush=True)
    steps = {"sdpa": check_sdpa, "amp": check_amp, "pytest": lambda: check_pytest(env),
             "train": lambda: check_train(out, env)}
    for name, fn in steps.items():
        if name not in args.skip:
            section(name, fn, results)
            (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
