"""Accuracy against cost for the mmseg zoo: computed MACs / parameters per entry and the Pareto front.

``mmseg_zoo_cost.json`` beside this file (written by ``scripts/make_zoo_cost.py``; do not edit) holds,
for every Cityscapes 512x1024 and ADE20K entry of ``mmseg_zoo.json``, the cost of one whole-image
eval forward of the converted architecture at the protocol's size (:data:`PROTOCOL_SIZE`):
multiply-accumulates counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, linear
layers and matrix products; see :mod:`segattn.ops.flops`) and the parameters that forward uses
(the auxiliary head, dropped at inference, is not counted). Both are computed on fake tensors from
the architecture alone; no weights are downloaded. Published mIoU comes from the zoo manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from segattn.convert.zoo import ZooEntry, zoo_entries
from segattn.errors import SegattnError

COST_TABLE = Path(__file__).resolve().parent / "mmseg_zoo_cost.json"
#: whole-image evaluation size per dataset (mmseg's test protocol: Cityscapes at full resolution)
PROTOCOL_SIZE: Dict[str, Tuple[int, int]] = {"Cityscapes": (1024, 2048), "ADE20K": (512, 512)}


def in_scope(entry: ZooEntry) -> bool:
    """Whether ``entry`` is one the cost table covers: Cityscapes trained at 512x1024, or ADE20K."""
    if entry.dataset == "Cityscapes":
        return list(entry.crop_size) == [512, 1024]
    return entry.dataset == "ADE20K"


@dataclass(frozen=True)
class ZooPoint:
    """One checkpoint on the accuracy-vs-cost picture."""

    name: str
    model: str
    backbone: str
    dataset: str
    miou: float
    macs: int
    params: int


def architecture_cost(entry: ZooEntry) -> Tuple[int, int]:
    """``(macs, params)`` of ``entry``'s converted architecture: one eval forward at the protocol's size,
    built and run on fake tensors (seconds, no memory for activations)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from segattn.convert.mmseg import architecture_from_config

    h, w = PROTOCOL_SIZE[entry.dataset]
    arch = architecture_from_config(entry.config)
    with FakeTensorMode():
        model = arch.build().eval()
        model.check_finite = False  # the NaN / inf input check reads values, which fake tensors do not have
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, h, w))
        params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux_head."))
    return int(counter.get_total_flops() // 2), int(params)


@lru_cache(maxsize=1)
def _costs() -> Dict[str, Dict[str, Any]]:
    with open(COST_TABLE, encoding="utf-8") as f:
        return dict(json.load(f)["costs"])


def zoo_points(pattern: str = "*") -> List[ZooPoint]:
    """The covered entries matching ``pattern`` with their published mIoU and computed cost; a
    :class:`SegattnError` if an entry in scope has no row in the cost table (rerun the script)."""
    costs = _costs()
    points = []
    for e in zoo_entries(pattern):
        if not in_scope(e) or e.miou is None:
            continue
        if e.name not in costs:
            raise SegattnError(f"{e.name} has no row in {COST_TABLE.name}; run scripts/make_zoo_cost.py")
        c = costs[e.name]
        points.append(ZooPoint(e.name, e.model, e.backbone, e.dataset, float(e.miou), int(c["macs"]), int(c["params"])))
    return points


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the points no other point beats: ``(cost, score)`` pairs, lower cost and higher score
    better; a point is on the front when every cheaper-or-equal point scores strictly less (ties in
    both keep the first). Returned in increasing cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front: List[int] = []
    best = float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


__all__ = ["COST_TABLE", "PROTOCOL_SIZE", "ZooPoint", "architecture_cost", "in_scope", "pareto_front", "zoo_points"]
