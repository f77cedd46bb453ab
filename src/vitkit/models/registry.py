"""Named model configurations: ``create_model('vit_small_patch16_224')``.

Names shared with timm mean exactly timm's architecture (tests compare parameter counts with timm itself).
Each architecture module registers itself when imported: its class in ``ARCHS`` (``@register_arch``, so a
checkpoint that records ``arch`` can rebuild itself) and its named configurations (``register_model``). This module
imports no architecture; importing ``vitkit.models`` (which any import of a submodule does first) imports them all.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .constants import INCEPTION_MEAN, INCEPTION_STD
from .contract import VitkitModel

ARCHS: dict[str, type[VitkitModel]] = {}
ModelClass = TypeVar("ModelClass", bound=type[VitkitModel])


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str
    kwargs: dict[str, Any]
    mean: tuple[float, float, float] = INCEPTION_MEAN
    std: tuple[float, float, float] = INCEPTION_STD
    crop_pct: float = 0.9
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    reference_size: int | None = None  # for resolution-free models (NaViT): the size tables and smoke runs use


_REGISTRY: dict[str, ModelSpec] = {}


class UnknownModelError(ValueError, KeyError):
    """A model name or checkpoint architecture that is not registered: bad input, hence a ValueError; also a
    KeyError, as it is a failed lookup by name and callers may catch it as one."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


def register_arch(cls: ModelClass) -> ModelClass:
    """Class decorator: make an architecture rebuildable from a checkpoint's recorded ``arch``."""
    ARCHS[cls.arch] = cls
    return cls


def register_model(name: str, arch: str = "vit", **spec: Any) -> None:
    """Add a named configuration: ``kwargs`` (the constructor arguments) and ModelSpec's other fields."""
    kwargs = spec.pop("kwargs")
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is registered twice")
    _REGISTRY[name] = ModelSpec(name=name, arch=arch, kwargs=kwargs, **spec)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, e.g. ``list_models('vit_*_patch16_*')``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"; closest registered names: {', '.join(close)}" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint} (see vitkit.list_models())") from None


def create_model(name: str, **overrides: Any) -> VitkitModel:
    """Build a registered model, with any constructor argument overridden (num_classes=10, img_size=384 ...).

    Works under ``with torch.device('meta'):`` to size huge models without allocating their weights.
    """
    spec = get_model_spec(name)
    cls = ARCHS[spec.arch]
    kwargs = {**spec.kwargs, **overrides}
    try:
        model = cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"bad argument for model {name!r} ({cls.__name__}): {err}") from None
    model.model_name = name
    model.data_config = {"mean": list(spec.mean), "std": list(spec.std), "crop_pct": spec.crop_pct}
    return model


def build_from_config(arch: str, config: dict[str, Any]) -> VitkitModel:
    """Rebuild a model from the ``arch`` and constructor config a checkpoint recorded."""
    if arch not in ARCHS:
        raise UnknownModelError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHS))}")
    return ARCHS[arch](**config)


__all__ = [
    "ARCHS", "ModelSpec", "UnknownModelError", "register_arch", "register_model", "list_models", "get_model_spec",
    "create_model", "build_from_config",
]
