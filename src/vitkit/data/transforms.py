"""Per-sample torchvision v2 pipelines for the loader's per-sample path (large images, heavy augmentation).

The evaluation pipeline is the model's :class:`~vitkit.data.preprocess.Preprocessing`, defined there.

Input is what :class:`ArrayDataset` yields, a uint8 (C, H, W) tensor (PIL images work too); output is a float32,
normalised (C, size, size) tensor, so the loader can collate it as the final batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from .preprocess import Preprocessing, PreprocessTransform
from .preprocess import eval_resize_size as eval_resize_size  # where callers have long found it

AUTO_AUGMENT = ("randaugment", "trivialaugment", "autoaugment", "autoaugment-cifar10")
_INTERPOLATION = {
    "nearest": v2.InterpolationMode.NEAREST,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
}


def _interpolation(name: str) -> v2.InterpolationMode:
    try:
        return _INTERPOLATION[name]
    except KeyError:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}, got {name!r}") from None


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def auto_augment_transform(name: str, *, magnitude: int = 9, num_ops: int = 2,
                           interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR) -> v2.Transform:
    """RandAugment(num_ops, magnitude) / TrivialAugmentWide / AutoAugment (ImageNet or CIFAR10 policy)."""
    if name == "randaugment":
        return v2.RandAugment(num_ops=num_ops, magnitude=magnitude, interpolation=interpolation)
    if name == "trivialaugment":
        return v2.TrivialAugmentWide(interpolation=interpolation)
    if name.startswith("autoaugment"):
        policy = {"autoaugment": v2.AutoAugmentPolicy.IMAGENET,
                  "autoaugment-cifar10": v2.AutoAugmentPolicy.CIFAR10}.get(name)
        if policy is not None:
            return v2.AutoAugment(policy=policy, interpolation=interpolation)
    raise ValueError(f"auto_augment must be one of {AUTO_AUGMENT} or None, got {name!r}")


def build_train_transform(
    image_size: int | Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    random_crop_padding: int | None = None,
    hflip: float = 0.5,
    auto_augment: str | None = None,
    magnitude: int = 9,
    num_ops: int = 2,
    color_jitter: float | Sequence[float] = 0.0,
    random_erasing: float = 0.0,
    interpolation: str = "bicubic",
) -> v2.Compose:
    """Training pipeline: RandomResizedCrop (or, with ``random_crop_padding``, resize + RandomCrop with padding,
    the CIFAR recipe), horizontal flip, optional RandAugment/TrivialAugmentWide/AutoAugment, ColorJitter, then
    float conversion, normalisation and RandomErasing (which works on the normalised tensor, as in timm/DeiT)."""
    size = _pair(image_size)
    interp = _interpolation(interpolation)
    steps: list[v2.Transform] = [v2.ToImage()]
    if random_crop_padding is not None:
        steps += [v2.Resize(size, interpolation=interp, antialias=True),
                  v2.RandomCrop(size, padding=int(random_crop_padding))]
    else:
        steps.append(v2.RandomResizedCrop(size, scale=scale, ratio=ratio, interpolation=interp, antialias=True))
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip))
    if auto_augment:
        steps.append(auto_augment_transform(auto_augment, magnitude=magnitude, num_ops=num_ops))
    if isinstance(color_jitter, (int, float)):
        color_jitter = (float(color_jitter),) * 3 if color_jitter > 0 else ()
    if color_jitter:
        steps.append(v2.ColorJitter(*color_jitter))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, value=0))
    return v2.Compose(steps)


def build_eval_transform(
    image_size: int | Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
) -> PreprocessTransform:
    """Evaluation pipeline: resize to ``image_size / crop_pct`` then center-crop ``image_size``, normalise.

    The :class:`~vitkit.data.preprocess.Preprocessing` transform, the one definition evaluation and inference share.
    """
    channels = len(tuple(mean))
    return Preprocessing(_pair(image_size), tuple(mean), tuple(std), crop_pct=crop_pct, interpolation=interpolation,
                         in_chans=channels).transform()
