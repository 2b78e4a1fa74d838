"""Weights from other libraries -> segattn: every key remapping and tensor transform lives here.

* :mod:`segattn.convert.resnet`: ResNet backbone checkpoints of torchvision, timm, mmcv / mmseg and
  segattn (``load_backbone_weights``).
* :mod:`segattn.convert.mmseg`: whole mmsegmentation models (``from_mmseg``, ``save_mmseg``), with
  :mod:`segattn.convert.mmconfig` reading their config text without executing it and
  :mod:`segattn.convert.zoo` listing and fetching mmseg's published checkpoints.
"""

from segattn.convert.resnet import LoadReport, load_backbone_weights, read_checkpoint, remap_resnet_state_dict

__all__ = ["LoadReport", "load_backbone_weights", "read_checkpoint", "remap_resnet_state_dict"]
