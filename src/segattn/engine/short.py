"""``SEGATTN_DOCS_SHORT=1``: every training, comparison and demo shortened to a smoke run.

The documentation's command blocks run as tests (``tests/docs``); the runner sets this variable so that
``segattn train``, ``segattn compare``, ``segattn demo`` and the Python API finish in seconds while
running the very code a reader runs. It is read in one place per kind of run: every run config goes
through :func:`shorten_config` (called by ``config_from_dict``), every compare plan's seeds through
:func:`shorten_seeds` (``run_plan``), the images of an analysis
through :func:`shorten_images`, and ``segattn bench`` through :func:`shorten_bench`. Unset, ``0`` or
empty: nothing changes.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

ENV = "SEGATTN_DOCS_SHORT"
#: caps applied to a run config: (section, key) -> largest value kept
CAPS = {
    ("schedule", "iters"): 2,
    ("schedule", "warmup_iters"): 0,
    ("data", "batch_size"): 2,
    ("eval", "max_samples"): 4,
}
MAX_SEEDS = 1  # one seed: the report then says "cannot tell" where a claim needs an interval


def short_runs() -> bool:
    """True when ``SEGATTN_DOCS_SHORT`` is set to anything but ``""`` or ``"0"``."""
    return os.environ.get(ENV, "") not in ("", "0")


def shorten_config(data: Dict[str, Any]) -> Dict[str, Any]:
    """``data`` (a nested config dict) with the :data:`CAPS` applied when :func:`short_runs`, else unchanged.

    A missing key takes the cap (``eval.max_samples`` unset means every image); an explicit smaller value
    is kept. The input is not modified.
    """
    if not short_runs():
        return data
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for (section, key), cap in CAPS.items():
        node = out.setdefault(section, {})
        if not isinstance(node, dict):
            continue  # the config check reports the wrong type
        value = node.get(key)
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > cap):
            node[key] = cap
    return out


def shorten_seeds(seeds: int) -> int:
    """``seeds`` capped at :data:`MAX_SEEDS` when :func:`short_runs`."""
    return min(int(seeds), MAX_SEEDS) if short_runs() else int(seeds)


#: ``segattn bench`` under :func:`short_runs`: channels, feature-map side and timing rounds capped
BENCH_CAPS = {"channels": 64, "side": 32, "rounds": 1}


def shorten_bench(channels: int, size: Tuple[int, int], rounds: int) -> Tuple[int, Tuple[int, int], int]:
    """``(channels, (h, w), rounds)`` capped by :data:`BENCH_CAPS` when :func:`short_runs`, else unchanged."""
    if not short_runs():
        return channels, size, rounds
    side = BENCH_CAPS["side"]
    return (min(channels, BENCH_CAPS["channels"]), (min(size[0], side), min(size[1], side)),
            min(rounds, BENCH_CAPS["rounds"]))


MAX_IMAGES = 4  # images an analysis measures (as eval.max_samples for evaluation)


def shorten_images(n: int) -> int:
    """A number of images to measure, capped at :data:`MAX_IMAGES` under :func:`short_runs`."""
    return min(int(n), MAX_IMAGES) if short_runs() else int(n)
