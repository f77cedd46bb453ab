"""What a checkpoint needs at inference time besides its weights: class names and its own eval transform.

Every inference path (predict, serve, export checks, bench, eval of quantized models) reads these from one place, so
an image is resized, cropped and normalised exactly as the model saw its validation images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..models.contract import VitkitModel


@dataclass(frozen=True)
class InferenceSpec:
    """Input geometry, normalisation and labels of a model; built from a checkpoint's metadata."""

    img_size: tuple[int, int]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    class_names: tuple[str, ...]

    @classmethod
    def from_model(cls, model: nn.Module) -> InferenceSpec:
        """Read a model built by vitkit (``create_model`` or ``load_checkpoint``).

        Class names come from the checkpoint's user metadata (``extra["class_names"]``), else ``class_0``..;
        mean/std from ``extra`` if the training run recorded its dataset's statistics, else the model's data_config.
        """
        if not isinstance(model, VitkitModel):
            raise TypeError(f"{type(model).__name__} is not a vitkit model (a vitkit.models.VitkitModel)")
        config = model.config
        meta = getattr(model, "checkpoint_meta", None) or {}  # set by load_checkpoint only
        extra = meta.get("extra") or {}
        data_config = model.data_config or meta.get("data_config") or {}
        img_size = tuple(int(s) for s in config["img_size"])
        in_chans = int(config.get("in_chans", 3))
        num_classes = int(config.get("num_classes", model.num_classes))
        mean = tuple(float(v) for v in extra.get("mean") or data_config.get("mean") or (0.5,) * in_chans)
        std = tuple(float(v) for v in extra.get("std") or data_config.get("std") or (0.5,) * in_chans)
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f"normalisation has mean {mean} / std {std} but the model takes {in_chans} channels")
        names = extra.get("class_names")
        if names is None:
            names = [f"class_{i}" for i in range(num_classes)]
        elif len(names) != num_classes:
            raise ValueError(f"checkpoint lists {len(names)} class names but the model has {num_classes} outputs")
        crop_pct = float(data_config.get("crop_pct", 1.0))
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        return cls(img_size, in_chans, mean, std, crop_pct, tuple(str(n) for n in names))

    def transform(self) -> v2.Transform:
        """uint8 (C, H, W) -> normalised float32 (in_chans, *img_size): resize, center crop (crop_pct), normalise."""
        h, w = self.img_size
        scale: int | list[int]
        if h == w:
            scale = math.floor(h / self.crop_pct)  # shorter side, as timm's eval transform
        else:
            scale = [math.floor(h / self.crop_pct), math.floor(w / self.crop_pct)]
        return v2.Compose([
            _Channels(self.in_chans),
            v2.Resize(scale, antialias=True),
            v2.CenterCrop([h, w]),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(self.mean), list(self.std)),
        ])


class _Channels(nn.Module):
    """Decoded images are RGB; a grayscale model gets luminance, anything else is an error naming the counts."""

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        if in_chans not in (1, 3):
            raise ValueError(f"images can be fed to models with 1 or 3 input channels, this one has {in_chans}")
        self.in_chans = in_chans

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-3] == self.in_chans:
            return image
        if self.in_chans == 1:
            return TF.rgb_to_grayscale(image)
        return image.expand(*image.shape[:-3], 3, *image.shape[-2:])  # grayscale input for an RGB model


def stack_transformed(images: Sequence[torch.Tensor], transform: v2.Transform) -> torch.Tensor:
    return torch.stack([transform(img) for img in images])
