"""Reading weight files, remapping foreign backbone layouts and named ImageNet weights (floor L1: no models).

* :mod:`segattn.checkpoints.reading`: ``read_checkpoint`` (plain-data pickles, safetensors, explicit
  URLs, mappings) and ``load_safetensors``.
* :mod:`segattn.checkpoints.resnet`: ResNet state dicts of torchvision, timm, mmcv / mmseg and segattn
  onto segattn's ResNet (``remap_resnet_state_dict``, ``load_backbone_weights``, ``LoadReport``).
* :mod:`segattn.checkpoints.named`: ``open-mmlab://``, ``torchvision://``, ``timm://`` weight names
  resolved through a manifest and the checked downloader.
"""

from segattn.checkpoints.reading import load_safetensors, read_checkpoint
from segattn.checkpoints.resnet import (
    LoadReport,
    adapt_input_conv,
    detect_layout,
    load_backbone_weights,
    remap_resnet_state_dict,
)

__all__ = ["LoadReport", "adapt_input_conv", "detect_layout", "load_backbone_weights", "load_safetensors", "read_checkpoint", "remap_resnet_state_dict"]
