"""vitkit: define, train, fine-tune, compress and deploy Vision Transformers on one GPU or a CPU."""

from __future__ import annotations

from .models.registry import get_model_spec, list_models
from .weights import create_model, load_checkpoint, load_pretrained, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "__version__", "create_model", "list_models", "get_model_spec", "save_checkpoint", "load_checkpoint",
    "load_pretrained",
]
