"""Reading weight files: named ImageNet weights (:mod:`segattn.checkpoints.named`)."""
