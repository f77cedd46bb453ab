"""vitkit: define, train, fine-tune, compress and deploy Vision Transformers on one GPU or a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .models.registry import create_model as _create_registered
from .models.registry import get_model_spec, list_models
from .weights import load_checkpoint, load_pretrained, save_checkpoint

__version__ = "0.1.0"


def create_model(name: str, pretrained: str | Path | None = None, strict: bool = True, **overrides: Any) -> nn.Module:
    """Build a registered model; ``pretrained`` loads local weights (vitkit, timm, Hugging Face folder or .npz).

    With overrides such as ``num_classes=10`` or ``img_size=384`` the load becomes a fine-tuning load: the head is
    replaced and the position embedding resampled; every other mismatch is an error (or a warning if strict=False).
    """
    model = _create_registered(name, **overrides)
    if pretrained is not None:
        model.load_report = load_pretrained(model, pretrained, strict=strict)
    return model


__all__ = [
    "__version__", "create_model", "list_models", "get_model_spec", "save_checkpoint", "load_checkpoint",
    "load_pretrained",
]
