"""Write src/segattn/convert/mmseg_zoo_cost.json: computed MACs and parameters of every covered zoo entry.

    OMP_NUM_THREADS=1 nice -n 10 python scripts/make_zoo_cost.py          # (re)write the table
    python scripts/make_zoo_cost.py --check                               # exit 1 if an entry lacks a row

Covered: the Cityscapes 512x1024 and ADE20K entries of mmseg_zoo.json
(:func:`segattn.convert.zoo_cost.in_scope`), costed by :func:`segattn.convert.zoo_cost.architecture_cost`
at the protocol's size. Entries sharing an architecture are costed once. Rerun after the manifest
changes (``tests/convert/test_zoo_cost.py`` fails until then).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple


def main(argv: Optional[List[str]] = None) -> int:
    import torch

    from segattn.convert.mmseg import architecture_from_config
    from segattn.convert.zoo import zoo_entries
    from segattn.convert.zoo_cost import COST_TABLE, PROTOCOL_SIZE, architecture_cost, in_scope

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="only report entries without a row (exit 1 if any)")
    args = p.parse_args(argv)
    entries = [e for e in zoo_entries() if in_scope(e)]
    if args.check:
        with open(COST_TABLE, encoding="utf-8") as f:
            have = json.load(f)["costs"]
        missing = [e.name for e in entries if e.name not in have]
        for name in missing:
            print(f"missing: {name}")
        return 1 if missing else 0
    by_arch: Dict[str, Tuple[int, int]] = {}
    costs: Dict[str, Dict[str, Any]] = {}
    t0 = time.time()
    for e in entries:
        arch = architecture_from_config(e.config)
        key = json.dumps([e.dataset, arch.name, arch.num_classes, {k: v for k, v in arch.kwargs.items()
                                                                   if k != "align_corners"}],
                         sort_keys=True, default=str)
        if key not in by_arch:
            by_arch[key] = architecture_cost(e)
            print(f"{e.name}: {by_arch[key][0] / 1e9:.1f} GMACs, {by_arch[key][1] / 1e6:.1f} M params", flush=True)
        macs, params = by_arch[key]
        costs[e.name] = {"macs": macs, "params": params, "size": list(PROTOCOL_SIZE[e.dataset])}
    data = {
        "generated_by": "scripts/make_zoo_cost.py",
        "what": "one whole-image eval forward of the converted architecture (batch 1) at `size`: macs = "
                "FlopCounterMode multiply-accumulates, params = parameters that forward uses (no auxiliary head); "
                "computed on fake tensors, not measured",
        "torch": torch.__version__.split("+")[0],
        "costs": costs,
    }
    tmp = str(COST_TABLE) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, COST_TABLE)
    print(f"wrote {COST_TABLE} ({len(costs)} entries, {len(by_arch)} architectures, {time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
