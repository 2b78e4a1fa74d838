"""Weights from other libraries -> segattn: every key remapping and tensor transform lives here.

* :mod:`segattn.convert.resnet`: the backbone names of :mod:`segattn.checkpoints` (where reading and
  ResNet remapping live), kept for existing imports.
* :mod:`segattn.convert.mmseg`: whole mmsegmentation models (``from_mmseg``, ``save_mmseg``), with
  :mod:`segattn.convert.mmseg_read` reading 0.x / 1.x checkpoints as data,
  :mod:`segattn.convert.mmconfig` their config text without executing it,
  :mod:`segattn.convert.mmseg_arch` / :mod:`segattn.convert.mmseg_heads` mapping the config onto a
  segattn model, and :mod:`segattn.convert.zoo` listing and fetching mmseg's published checkpoints.
"""

from segattn.checkpoints import LoadReport, load_backbone_weights, read_checkpoint, remap_resnet_state_dict

__all__ = ["LoadReport", "load_backbone_weights", "read_checkpoint", "remap_resnet_state_dict"]
