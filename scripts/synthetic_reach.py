"""How many shape pixels of a synthetic protocol can read the cue without a context module.

Prints, over the protocol's validation images, the fraction of shape pixels with a cue pixel within
``--cells`` feature cells of their own cell (Chebyshev distance in cells of ``output_stride`` px: the
reach of the head's 3x3 convs) and within ``--pixels`` px (half the FCN's measured input window).

    python scripts/synthetic_reach.py                                   # the shipped protocol
    python scripts/synthetic_reach.py --set data.dataset_kwargs.cue_size=16 --set data.dataset_kwargs.margin=16
"""

from __future__ import annotations

import argparse

import numpy as np

from segattn.engine.build import build_dataset_split
from segattn.engine.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="synthetic/compare_synthetic.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--cells", type=int, default=3)
    ap.add_argument("--pixels", type=int, default=32)
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    stride = cfg.model.output_stride
    ds = build_dataset_split(cfg.data, "val", train=False)
    near_cells = near_pixels = total = 0
    for i in range(len(ds)):
        image, mask = ds.generate(i)
        cue = np.argwhere(image.max(axis=2) != image.min(axis=2))  # the only coloured pixels
        shape = np.argwhere(mask > 0)
        pixel_dist = np.abs(shape[:, None, :] - cue[None]).max(axis=2).min(axis=1)
        cell_dist = np.abs(shape[:, None, :] // stride - cue[None] // stride).max(axis=2).min(axis=1)
        near_cells += int((cell_dist <= args.cells).sum())
        near_pixels += int((pixel_dist <= args.pixels).sum())
        total += len(shape)
    print(f"{args.config} {' '.join(args.set)}: {total} shape pixels in {len(ds)} validation images; "
          f"cue within {args.cells} cells: {near_cells / total:.1%}; within {args.pixels} px: {near_pixels / total:.1%}")


if __name__ == "__main__":
    main()
