"""lglsearch: architecture search over the EdgeViT local-global-local design space for phones.

Importing the package registers the EdgeViT presets with timm (`timm.create_model("edgevit_xxs")`).
"""

from lglsearch.errors import LglsearchError
from lglsearch.nn import EdgeViT, build_model
from lglsearch.space import PRESETS, Arch, Space, Stage, load_space, parse_arch

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Arch",
    "EdgeViT",
    "LglsearchError",
    "Space",
    "Stage",
    "build_model",
    "load_space",
    "parse_arch",
]
