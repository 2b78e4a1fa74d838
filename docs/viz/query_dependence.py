"""How much does a pixel-attention map depend on its query? (the number quoted in the README's viz section)

    .venv/bin/python docs/viz/query_dependence.py CHECKPOINT IMAGE

Runs the model on IMAGE at its eval scale, takes the dense (N, N) attention of its first context
module (Non-local, DANet PAM, OCNet base: anything returning ``attention`` rows over all pixels) and
prints the total-variation distance 0.5 * ||a_i - a_j||_1 between the rows of every pair of query
pixels: 0 = every pixel looks at the same place, 1 = disjoint places.
"""

import sys

import numpy as np
import torch
from PIL import Image

from segattn.engine.predict import inference_scales, load_model, preprocess
from segattn.viz import run_with_attention
from segattn.viz.model import capture_inputs, require_context

model, cfg, _ = load_model(sys.argv[1])
img = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
s = inference_scales(img.shape[:2], cfg)[0]
shown = np.asarray(Image.fromarray(img).resize((round(img.shape[1] * s), round(img.shape[0] * s)), Image.BILINEAR))
_, name, module = require_context(model)[0]
(args, _), = capture_inputs(model, [module], preprocess(shown, cfg))
rows = run_with_attention(module, args[0])["attention"][0]
if rows.shape[0] != rows.shape[1]:
    sys.exit(f"{name}: attention is {tuple(rows.shape)}, not dense over all pixels")
tv = 0.5 * (rows[:, None, :] - rows[None, :, :]).abs().sum(-1)
pairs = tv[~torch.eye(rows.shape[0], dtype=torch.bool)]
print(f"{name}: N = {rows.shape[0]} query pixels; total-variation distance between two queries' maps: "
      f"mean {pairs.mean():.3f}, 95th percentile {pairs.quantile(0.95):.3f}, max {pairs.max():.3f}")
