"""Named model configurations: ``create_model('vit_small_patch16_224')``.

Names shared with timm mean exactly timm's architecture (tests compare parameter counts with timm itself).
Each architecture module registers itself when imported: its class in ``ARCHS`` (``@register_arch``, so a
checkpoint that records ``arch`` can rebuild itself) and its named configurations (``register_model``). This module
imports no architecture; importing ``vitkit.models`` (which any import of a submodule does first) imports them all.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import math
import numbers
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


class ModelArgumentError(ValueError, TypeError):
    """A constructor argument the architecture does not take, or a size it cannot build (no blocks, no heads): bad
    input, hence a ValueError; also a TypeError, what calling the constructor with an unknown argument raises."""


#: constructor arguments that count something every model needs at least one of; each number in them must be a whole
#: number >= 1 (``depth`` has its own rule: CrossViT's depth triples may hold a 0)
_AT_LEAST_ONE = ("embed_dim", "num_heads", "patch_size", "key_dim", "stem_width", "max_grid", "max_seq_len")
#: a constructor annotation naming one plain type (optionally ``| None``) -> the values it admits
_PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    "int": (numbers.Integral,), "float": (numbers.Real,), "bool": (bool,), "str": (str,),
}


def constructor_arguments(cls: type) -> dict[str, Any] | None:
    """The keyword arguments ``cls(...)`` accepts and their annotations, following ``**kwargs`` to the parent class
    that receives them; None when some class in the chain accepts anything."""
    names: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        for p in params:
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                names.setdefault(p.name, p.annotation)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def _numbers(value: Any) -> list[Any]:
    """Every number inside a value that may nest sequences (CrossViT's depth is a list of triples); anything else
    inside (a string, a bool, a mapping) is returned as itself so that the range checks refuse it."""
    if isinstance(value, (list, tuple)):
        return [n for item in value for n in _numbers(item)]
    return [value]


def _whole(values: list[Any], low: int) -> bool:
    return bool(values) and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low for v in values)


def _admits(annotation: Any, value: Any) -> bool:
    """Whether ``value`` fits an annotation that names one plain type ('int', 'float | None' ...); annotations
    of other shapes (sequences, unions of several types) are left to the constructor."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    optional = text.endswith(" | None")
    allowed = _PLAIN_TYPES.get(text.removesuffix(" | None"))
    if allowed is None or (value is None and optional):
        return True
    return isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))


def check_model_arguments(name: str, kwargs: dict[str, Any]) -> None:
    """Refuse, before building anything, an argument the architecture of ``name`` does not take, a value of the
    wrong plain type (a list where it takes an int), and sizes it cannot build: ``depth`` must hold at least one
    block (no negative counts), the widths and counts in ``_AT_LEAST_ONE`` whole numbers >= 1, ``mlp_ratio`` a
    finite number > 0. Raises UnknownModelError for an unregistered name."""
    spec = get_model_spec(name)
    cls = ARCHS[spec.arch]
    accepted = constructor_arguments(cls)
    if accepted is not None:
        unknown = sorted(str(k) for k in kwargs if k not in accepted)
        if unknown:
            close = difflib.get_close_matches(unknown[0], accepted, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; it takes: {', '.join(sorted(accepted))}"
            raise ModelArgumentError(f"model {name!r} ({cls.__name__}) takes no argument "
                                     f"{', '.join(map(repr, unknown))}{hint}")
        for key, value in kwargs.items():
            if not _admits(accepted[key], value):
                raise ModelArgumentError(f"model {name!r}: {key} must be {accepted[key]}, got {value!r}")
    if "depth" in kwargs:
        blocks = _numbers(kwargs["depth"])
        if not _whole(blocks, 0) or sum(blocks) < 1:
            raise ModelArgumentError(f"model {name!r}: depth must be at least one block, got {kwargs['depth']!r}")
    for key in _AT_LEAST_ONE:
        if key in kwargs and kwargs[key] is not None and not _whole(_numbers(kwargs[key]), 1):
            raise ModelArgumentError(f"model {name!r}: {key} must be a whole number >= 1, got {kwargs[key]!r}")
    if "mlp_ratio" in kwargs:
        ratios = _numbers(kwargs["mlp_ratio"])
        if not ratios or not all(isinstance(r, numbers.Real) and not isinstance(r, bool) and 0 < r < math.inf
                                 for r in ratios):
            raise ModelArgumentError(f"model {name!r}: mlp_ratio must be a number > 0, got {kwargs['mlp_ratio']!r}")


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
    check_model_arguments(name, kwargs)
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
    "ARCHS", "ModelSpec", "UnknownModelError", "ModelArgumentError", "check_model_arguments", "constructor_arguments",
    "register_arch", "register_model", "list_models", "get_model_spec",
    "create_model", "build_from_config",
]
