"""See what each context module does: per-pixel effective weights, low-rank bases, CARAFE kernels,
prediction pictures and a self-contained HTML report (``segattn viz``)."""

from segattn.viz.weights import (
    NoAttentionError,
    PixelWeights,
    base_similarity,
    channel_attention,
    em_responsibilities,
    node_assignments,
    pixel_weights,
    run_with_attention,
)

__all__ = [
    "NoAttentionError", "PixelWeights", "base_similarity", "channel_attention", "em_responsibilities",
    "node_assignments", "pixel_weights", "run_with_attention",
]
