"""PyTorch models of the LGL design space (importing this registers the presets with timm)."""

from lglsearch.nn.edgevit import EdgeViT, build_model, checkpoint_filter_fn, load_checkpoint
from lglsearch.nn.supernet import Supernet

__all__ = ["EdgeViT", "Supernet", "build_model", "checkpoint_filter_fn", "load_checkpoint"]
