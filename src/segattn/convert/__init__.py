"""Weights from other libraries -> segattn: every key remapping and tensor transform lives here.

* :mod:`segattn.convert.resnet`: the backbone names of :mod:`segattn.checkpoints` (where reading and
  ResNet remapping live), kept for existing imports.
* :mod:`segattn.convert.mmseg`: whole mmsegmentation models (``from_mmseg``, ``save_mmseg``), with
  :mod:`segattn.convert.mmconfig` reading their config text without executing it and
  :mod:`segattn.convert.zoo` listing and fetching mmseg's published checkpoints.
"""

from segattn.checkpoints import LoadReport, load_backbone_weights, read_checkpoint, remap_resnet_state_dict

__all__ = ["LoadReport", "load_backbone_weights", "read_checkpoint", "remap_resnet_state_dict"]
