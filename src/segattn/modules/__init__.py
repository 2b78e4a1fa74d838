"""Context modules, one file per method family. Importing this package registers them all."""

from segattn.modules import (  # noqa: F401  (imported for registration)
    a2,
    ann,
    apcnet,
    carafe,
    ccnet,
    cgnl,
    danet,
    dgmn,
    dmnet,
    dnl,
    ema,
    encnet,
    gcnet,
    glore,
    graphrep,
    hamburger,
    isa,
    latentgnn,
    local_relation,
    nonlocal_,
    ocnet,
    ocr,
    pooling,
    psanet,
    sgr,
)
from segattn.modules.base import ContextModule, check_feature_map

__all__ = ["ContextModule", "check_feature_map"]
