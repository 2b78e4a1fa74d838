"""Mutation check: deliberate bugs must make the relevant tests fail.

    .venv/bin/python scripts/mutation_check.py            # all mutations, one thread
    .venv/bin/python scripts/mutation_check.py --list     # names only
    .venv/bin/python scripts/mutation_check.py -k cut     # the mutations whose name contains 'cut'

``src/`` and ``tests/`` are copied to a temporary directory; each mutation edits one line of the
*copy*, runs its test subset there with pytest (``PYTHONPATH`` = the copy, 1 thread, ``-x``) and
restores the line. The working tree is never touched. First every mutation's target line must be
in its file exactly once (a target that moved or is gone fails the script: the mutation would test
nothing), and the unmutated copy must pass every subset; then a mutation is "caught" when its subset
fails. Exit status 0 when every mutation is caught, 1 otherwise. Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Mutation:
    name: str
    path: str  # relative to the copy's root
    old: str
    new: str
    tests: Tuple[str, ...]  # pytest arguments (paths, -k expressions)


MUTATIONS: List[Mutation] = [
    Mutation(
        "softmax axis: EM E-step over pixels instead of bases",
        "src/segattn/lowrank/mappers.py",
        "z = torch.softmax(torch.matmul(x.transpose(1, 2), bases) * scale, dim=2)",
        "z = torch.softmax(torch.matmul(x.transpose(1, 2), bases) * scale, dim=1)",
        ("tests/modules/test_reference.py", "-k", "ema"),
    ),
    Mutation(
        "softmax axis: CCNet criss-cross softmax over channels of the wrong axis",
        "src/segattn/modules/ccnet.py",
        "attn = torch.softmax(criss_cross_logits(q, k), dim=-1)",
        "attn = torch.softmax(criss_cross_logits(q, k), dim=-2)",
        ("tests/modules/test_reference.py", "-k", "ccnet"),
    ),
    Mutation(
        "missing transpose: tokens reshaped back without the transpose (NL / DANet / OCNet / ANN)",
        "src/segattn/modules/nonlocal_.py",
        "return t.squeeze(1).transpose(1, 2).reshape(t.shape[0], t.shape[-1], height, width)",
        "return t.squeeze(1).reshape(t.shape[0], t.shape[-1], height, width)",
        ("tests/modules/test_reference.py", "-k", "nonlocal or danet or ocnet or ann"),
    ),
    Mutation(
        "dropped scale: OCNet/ANN unit without C_k^-1/2",
        "src/segattn/modules/ocnet.py",
        "return attend(q, k, v, self.key_channels**-0.5, return_attention)",
        "return attend(q, k, v, 1.0, return_attention)",
        ("tests/modules/test_reference.py", "-k", "ocnet_base or ann_"),
    ),
    Mutation(
        "dropped scale: CGNL Gaussian use_scale ignored (the bug fixed in issue 14)",
        "src/segattn/modules/cgnl.py",
        "        att = att / math.sqrt(theta.shape[-1])\n    y = torch.matmul(theta_pow, att)",
        "        pass\n    y = torch.matmul(theta_pow, att)",
        ("tests/modules/test_cgnl.py",),
    ),
    Mutation(
        "gradient cut removed: EM iterations back-propagate in training",
        "src/segattn/lowrank/mappers.py",
        "cut = self.training and not self.backprop",
        "cut = False",
        ("tests/modules/test_ema.py", "-k", "gradient_cut"),
    ),
    Mutation(
        "CAM sign: reference logits rowmax - E replaced by E",
        "src/segattn/modules/danet.py",
        "logits = energy.amax(dim=-1, keepdim=True).detach() - energy",
        "logits = energy",
        ("tests/modules/test_reference.py", "-k", "danet"),
    ),
    Mutation(
        "PSANet distribute without its transpose",
        "src/segattn/modules/psanet.py",
        'return buf if psa_type == "collect" else buf.transpose(1, 2)',
        "return buf",
        ("tests/modules/test_psanet.py", "-k", "meaning"),
    ),
    Mutation(
        "ISA stages swapped: long-range grouping used for the short stage",
        "src/segattn/modules/isa.py",
        "z, short_w = self._stage(self.short, z, group_short, ungroup_short, return_attention)",
        "z, short_w = self._stage(self.short, z, group_long, ungroup_long, return_attention)",
        ("tests/modules/test_reference.py", "-k", "isa"),
    ),
    Mutation(
        "identity upcast: half logits under module.to(half)",
        "src/segattn/ops/attention.py",
        "return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t",
        "return t",
        ("tests/modules/test_contract.py", "-k", "low_precision and nonlocal"),
    ),
    Mutation(
        "autocast region removed: logits recast to bfloat16 under torch.autocast",
        "src/segattn/ops/attention.py",
        "    if _autocast_enabled(device_type):\n",
        "    if False:\n",
        ("tests/modules/test_autocast.py", "-k", "danet_cam"),
    ),
    Mutation(
        "EMA bases frozen again in loops without call_step_hooks",
        "src/segattn/lowrank/mappers.py",
        "if maintain and self._pending and not self._hooked:",
        "if False:",
        ("tests/modules/test_ema.py", "-k", "without_step_hooks"),
    ),
    Mutation(
        "CARAFE phase order: sub-pixel phase and tap axes swapped",
        "src/segattn/modules/carafe.py",
        "return torch.softmax(upcast(z).reshape(b, self.up_group, kk, ss, h, w), dim=2)",
        "return torch.softmax(upcast(z).reshape(b, self.up_group, ss, kk, h, w).transpose(2, 3), dim=2)",
        ("tests/modules/test_carafe.py", "-k", "one_hot"),
    ),
    Mutation(
        "Hamburger one-step gradient cut removed: NMF iterations back-propagate in training",
        "src/segattn/lowrank/decomposition.py",
        'cut = self.training and self.grad == "one_step"',
        "cut = False",
        ("tests/modules/test_hamburger.py", "-k", "one_step or gradient_modes"),
    ),
    Mutation(
        "Hamburger eval uses the training iteration count",
        "src/segattn/lowrank/decomposition.py",
        "steps = self.train_steps if self.training else self.eval_steps",
        "steps = self.train_steps",
        ("tests/modules/test_reference.py", "-k", "hamburger"),
    ),
    Mutation(
        "EncNet soft assignment normalised over pixels instead of codewords",
        "src/segattn/modules/encnet.py",
        "assign = torch.softmax(upcast(self.scale).to(xt.dtype) * dist2, dim=2)",
        "assign = torch.softmax(upcast(self.scale).to(xt.dtype) * dist2, dim=1)",
        ("tests/modules/test_reference.py", "-k", "encnet"),
    ),
    Mutation(
        "DMNet even filter padded on the bottom/right instead of the top/left",
        "src/segattn/modules/dmnet.py",
        "padded = F.pad(x, (pad + extra, pad, pad + extra, pad))",
        "padded = F.pad(x, (pad, pad + extra, pad, pad + extra))",
        ("tests/modules/test_reference.py", "-k", "dmnet"),
    ),
    Mutation(
        "SE loss target counts void pixels as a class",
        "src/segattn/models/losses.py",
        "valid = (target >= 0) & (target < num_classes) & (target != ignore_index)",
        "valid = (target >= 0) & (target < num_classes)",
        ("tests/models/test_se_loss.py",),
    ),
    Mutation(
        "DNL queries not whitened (whitening the keys alone; the keys' mean drops out of the softmax anyway)",
        "src/segattn/modules/dnl.py",
        "q, k = whiten(q), whiten(k)",
        "q, k = upcast(q), whiten(k)",
        ("tests/modules/test_reference.py", "tests/modules/test_dnl.py", "-k", "dnl"),
    ),
    Mutation(
        "DNL unary softmax over the batch instead of the positions",
        "src/segattn/modules/dnl.py",
        "u = torch.softmax(upcast(logits).flatten(1), dim=-1)",
        "u = torch.softmax(upcast(logits).flatten(1), dim=0)",
        ("tests/modules/test_reference.py", "-k", "dnl"),
    ),
    Mutation(
        "GCNet attention pooling softmax over the batch instead of the positions",
        "src/segattn/modules/gcnet.py",
        "weights = torch.softmax(upcast(logits).flatten(1), dim=-1)",
        "weights = torch.softmax(upcast(logits).flatten(1), dim=0)",
        ("tests/modules/test_reference.py", "-k", "gcnet"),
    ),
    Mutation(
        "OCR soft regions normalised over the regions instead of the pixels",
        "src/segattn/modules/ocr.py",
        "return torch.softmax(upcast(logits).flatten(2) * scale, dim=-1)",
        "return torch.softmax(upcast(logits).flatten(2) * scale, dim=1)",
        ("tests/modules/test_reference.py", "tests/modules/test_ocr.py", "-k", "ocr"),
    ),
    Mutation(
        "OCR fusion concatenates [x, context] (official and mmseg: [context, x])",
        "src/segattn/modules/ocr.py",
        "out = self.dropout(self.bottleneck(torch.cat([context, x], dim=1)))",
        "out = self.dropout(self.bottleneck(torch.cat([x, context], dim=1)))",
        ("tests/modules/test_reference.py", "-k", "ocr"),
    ),
    Mutation(
        "OCR picture: relations read at the transposed query pixel (x, y)",
        "src/segattn/modules/ocr.py",
        'row = factors["attention"][0, query[0] * size[1] + query[1]]',
        'row = factors["attention"][0, query[1] * size[1] + query[0]]',
        ("tests/viz/test_weights.py", "-k", "ocr"),
    ),
]


def missing_targets(mutations: List[Mutation], root: str = ROOT) -> List[str]:
    """One line for every mutation whose target line is not in its file exactly once."""
    problems = []
    for m in mutations:
        path = os.path.join(root, m.path)
        count = open(path, encoding="utf-8").read().count(m.old) if os.path.isfile(path) else 0
        if count != 1:
            where = "is gone from" if count == 0 else f"occurs {count} times in"
            problems.append(f"{m.name}: the line to mutate {where} {m.path} ({m.old!r}); update the script")
    return problems


def run_tests(copy: str, args: Tuple[str, ...]) -> Tuple[int, float, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(copy, "src"), copy]), OMP_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return proc.returncode, time.perf_counter() - start, (lines[-1] if lines else proc.stderr.strip()[-200:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="run only the mutations whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.k.lower() in m.name.lower()]
    if args.list or not chosen:
        for m in MUTATIONS:
            print(m.name)
        return 0 if args.list else 2
    problems = missing_targets(chosen)
    for problem in problems:
        print(f"FAILED   {problem}")
    if problems:
        print(f"mutation_check: {len(problems)} of {len(chosen)} mutations have no target; nothing was run")
        return 1
    copy = tempfile.mkdtemp(prefix="segattn-mutation-")
    try:
        for part in ("src", "tests"):
            shutil.copytree(os.path.join(ROOT, part), os.path.join(copy, part),
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        shutil.copy(os.path.join(ROOT, "pyproject.toml"), copy)
        check = subprocess.run(
            [sys.executable, "-c", "import segattn; print(segattn.__file__)"], cwd=copy, capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=os.path.join(copy, "src")),
        )
        if not check.stdout.startswith(copy):
            print(f"mutation_check: error: the copy's segattn is not the one imported ({check.stdout.strip()})")
            return 2
        for m in chosen:  # every subset passes on the unmutated copy
            rc, secs, last = run_tests(copy, m.tests)
            if rc != 0:
                print(f"mutation_check: error: baseline fails for {' '.join(m.tests)}: {last}")
                return 2
        caught = 0
        for m in chosen:
            path = os.path.join(copy, m.path)
            with open(path) as f:
                original = f.read()
            if original.count(m.old) != 1:  # checked above; the copy is the same tree
                raise RuntimeError(f"{m.name}: target line changed while the script ran")
            with open(path, "w") as f:
                f.write(original.replace(m.old, m.new))
            try:
                rc, secs, last = run_tests(copy, m.tests)
            finally:
                with open(path, "w") as f:
                    f.write(original)
            ok = rc != 0
            caught += ok
            print(f"{'CAUGHT ' if ok else 'MISSED '} {m.name}  [{' '.join(m.tests)}] -> {last} ({secs:.0f} s)")
        print(f"{caught}/{len(chosen)} mutations caught")
        return 0 if caught == len(chosen) else 1
    finally:
        shutil.rmtree(copy, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
