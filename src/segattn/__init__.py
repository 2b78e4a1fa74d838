"""segattn: self-attention and low-rank-reconstruction context modules for semantic segmentation."""

from segattn.api import create_module, create_upsampler, list_modules, list_upsamplers, module_info
from segattn.export import export  # noqa: E402  (the function; the module stays importable as segattn.export)
from segattn.models import create_model, from_pretrained, list_models

__version__ = "0.1.0"

__all__ = [
    "create_module",
    "list_modules",
    "module_info",
    "create_upsampler",
    "list_upsamplers",
    "create_model",
    "list_models",
    "from_pretrained",
    "export",
    "__version__",
]
