"""Named model configurations: ``create_model('vit_small_patch16_224')``.

Names shared with timm mean exactly timm's architecture (tests compare parameter counts with timm itself).
Architectures register their class in ``ARCHS`` so a checkpoint that records ``arch`` can rebuild itself.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .vit import VisionTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # the AugReg / Google checkpoints' normalisation
INCEPTION_STD = (0.5, 0.5, 0.5)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

ARCHS: dict[str, type[nn.Module]] = {"vit": VisionTransformer}


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


def register_arch(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: make an architecture rebuildable from a checkpoint's recorded ``arch``."""
    ARCHS[cls.arch] = cls  # type: ignore[attr-defined]
    return cls


def register_model(name: str, arch: str = "vit", **spec: Any) -> None:
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
        raise KeyError(f"unknown model {name!r}{hint} (see vitkit.list_models())") from None


def create_model(name: str, **overrides: Any) -> nn.Module:
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


def build_from_config(arch: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from the ``arch`` and constructor config a checkpoint recorded."""
    if arch not in ARCHS:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHS))}")
    return ARCHS[arch](**config)


# --- the ViT family ------------------------------------------------------------------------------------------------

_SIZES = {  # (embed_dim, depth, num_heads): the ViT paper's and DeiT's sizes
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}


def _vit(size: str, patch: int, **extra: Any) -> dict[str, Any]:
    dim, depth, heads = _SIZES[size]
    return dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, **extra)


def _register_family(register: Callable[..., None]) -> None:
    timm_names = [
        ("tiny", 16, 224), ("tiny", 16, 384),
        ("small", 16, 224), ("small", 16, 384), ("small", 32, 224), ("small", 32, 384),
        ("base", 16, 224), ("base", 16, 384), ("base", 32, 224), ("base", 32, 384), ("base", 8, 224),
        ("large", 16, 224), ("large", 16, 384), ("large", 32, 224), ("large", 32, 384),
        ("huge", 14, 224),
    ]
    features_only = {("huge", 14, 224), ("large", 32, 224)}  # timm ships these as in21k backbones, no head
    for size, patch, res in timm_names:
        extra = {"num_classes": 0} if (size, patch, res) in features_only else {}
        register(
            f"vit_{size}_patch{patch}_{res}",
            kwargs=_vit(size, patch, img_size=res, **extra),
            crop_pct=1.0 if res == 384 else 0.9,
            tags=("timm",),
        )
    # Register tokens (Darcet et al. 2024), with timm's names and layout (GAP, no class token).
    for size in ("small", "base"):
        register(
            f"vit_{size}_patch16_reg4_gap_256",
            kwargs=_vit(size, 16, img_size=256, class_token=False, no_embed_class=True, pooling="gap", reg_tokens=4),
            crop_pct=0.95,
            tags=("timm",) if size == "base" else (),
        )
    # SimpleViT: "Better plain ViT baselines for ImageNet-1k" (Beyer et al. 2022): sincos2d, GAP, zero head.
    for size, patch in (("tiny", 16), ("small", 16), ("small", 32), ("base", 16), ("base", 32), ("large", 16)):
        register(
            f"simplevit_{size}_patch{patch}_224",
            kwargs=_vit(
                size, patch, img_size=224, class_token=False, pos_embed="sincos2d", pooling="gap", fc_norm=False,
                weight_init="jax",
            ),
            notes="big_vision plain ViT baseline",
        )
    # Small images (CIFAR, 32x32): patch 4 gives an 8x8 grid, patch 2 a 16x16 grid.
    for size, patch in (("tiny", 4), ("small", 4), ("tiny", 2)):
        register(
            f"vit_{size}_patch{patch}_32",
            kwargs=_vit(size, patch, img_size=32, num_classes=10),
            mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0,
        )
        register(
            f"simplevit_{size}_patch{patch}_32",
            kwargs=_vit(
                size, patch, img_size=32, num_classes=10, class_token=False, pos_embed="sincos2d", pooling="gap",
                fc_norm=False, weight_init="jax",
            ),
            mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0,
        )
    # The embedded default: a very small ViT for 8x8 digits (scikit-learn), trains in about a minute on a CPU.
    register(
        "vit_digits_patch2_8",
        kwargs=dict(
            img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0,
        ),
        mean=(0.5,), std=(0.5,), crop_pct=1.0,
        notes="embedded default for `vitkit train` on scikit-learn digits",
    )


_register_family(register_model)


# --- variants (issue 8): DeiT, hybrid ResNet+ViT, NaViT, LeViT, CrossViT, attention options -------------------------


def _register_variants(register: Callable[..., None]) -> None:
    # Importing the modules registers their architectures (register_arch); kept here so `arch` names always resolve.
    from . import crossvit, deit, hybrid, levit, navit  # noqa: F401

    # DeiT (Touvron et al. 2021): timm's names. The plain ones are ViTs trained with the DeiT recipe (ImageNet
    # normalisation); the distilled ones add the distillation token and head.
    for size, res in (("tiny", 224), ("small", 224), ("base", 224), ("base", 384)):
        crop = 1.0 if res == 384 else 0.875
        register(f"deit_{size}_patch16_{res}", kwargs=_vit(size, 16, img_size=res), mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, crop_pct=crop, tags=("timm",))
        register(f"deit_{size}_distilled_patch16_{res}", arch="deit", kwargs=_vit(size, 16, img_size=res),
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=crop, tags=("timm",))
    register("deit_tiny_distilled_patch4_32", arch="deit", kwargs=_vit("tiny", 4, img_size=32, num_classes=10),
             mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0, notes="DeiT-Ti with distillation token for CIFAR")
    # Plain-ViT attention options on CIFAR-sized inputs (8x8 grid): local 4x4 windows, linear attention, 2D RoPE.
    register("vit_tiny_window4_patch4_32", kwargs=_vit("tiny", 4, img_size=32, num_classes=10, attention="window",
             window_size=4, global_blocks=(5, 11)), mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0)
    register("vit_tiny_linear_patch4_32", kwargs=_vit("tiny", 4, img_size=32, num_classes=10, attention="linear"),
             mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0)
    register("vit_tiny_rope_patch4_32", kwargs=_vit("tiny", 4, img_size=32, num_classes=10, rope=True),
             mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0)
    hybrid.register_hybrids(register)
    navit.register_navits(register)
    levit.register_levits(register)
    crossvit.register_crossvits(register)


_register_variants(register_model)
