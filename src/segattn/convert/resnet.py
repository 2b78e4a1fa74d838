"""Backward-compatible names: backbone checkpoint reading and remapping moved to :mod:`segattn.checkpoints`."""

from segattn.checkpoints.reading import load_safetensors, read_checkpoint
from segattn.checkpoints.resnet import (
    LoadReport,
    adapt_input_conv,
    detect_layout,
    load_backbone_weights,
    remap_resnet_state_dict,
)

__all__ = ["LoadReport", "adapt_input_conv", "detect_layout", "load_backbone_weights", "load_safetensors",
           "read_checkpoint", "remap_resnet_state_dict"]
