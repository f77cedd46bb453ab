"""vitkit: define, train, fine-tune, compress and deploy Vision Transformers on one GPU or a CPU.

The names below are imported on first use (PEP 562 ``__getattr__``): ``import vitkit`` alone imports no torch, so
the console script, which imports this package before anything else, answers ``vitkit --help`` at once.
``vitkit.create_model`` and the subpackages (``vitkit.weights``, ``vitkit.train`` ...) work as if imported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "create_model": "vitkit.weights",
    "load_checkpoint": "vitkit.weights",
    "load_pretrained": "vitkit.weights",
    "save_checkpoint": "vitkit.weights",
    "list_models": "vitkit.models.registry",
    "get_model_spec": "vitkit.models.registry",
}
_SUBMODULES = ("cli", "data", "infer", "metrics", "models", "optim", "plan", "runtime", "train", "utils", "viz",
               "weights")

if TYPE_CHECKING:
    from .models.registry import get_model_spec, list_models
    from .weights import create_model, load_checkpoint, load_pretrained, save_checkpoint


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


__all__ = [
    "__version__", "create_model", "list_models", "get_model_spec", "save_checkpoint", "load_checkpoint",
    "load_pretrained",
]
