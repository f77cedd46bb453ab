"""The preprocessing a model's evaluation images go through: one definition from training to serving.

A :class:`Preprocessing` says how an image file becomes model input -- decode, channels, resize, center crop,
normalisation. The training loop stores the one its evaluation used in every checkpoint it writes
(``extra["preprocessing"]``, see :func:`training_preprocessing`); ``vitkit eval``, ``predict``, ``serve`` and the
exports' parity checks all decode with :meth:`Preprocessing.decode` and call :meth:`Preprocessing.transform` (one
image), :meth:`Preprocessing.stack` (images of any sizes) or :meth:`Preprocessing.batch` (a uint8 batch on any
device), so an image gets the same input, and label, on every road. An ONNX export carries it in its metadata and
a Hugging Face export as an image-processor config that reproduces it.

The steps, in order:

0. decoding (:meth:`Preprocessing.decode`): very large JPEGs at reduced size, never below 4 x ``resize_size``;
1. channels: decoded images are RGB; a 1-channel model gets their luminance, a 3-channel model given a grayscale
   tensor gets it repeated;
2. resize (skipped when the image already has the target size), antialiased, with ``interpolation``:
   ``shorter_side`` scales the image's shorter side to ``max(resize_size)`` and keeps the aspect ratio (the longer
   side rounded down, as torchvision and transformers do); ``squash`` scales it to ``resize_size`` exactly;
3. center crop to ``img_size``, the offset rounded down (``(H - h) // 2``, as transformers' image processors do,
   so the Hugging Face export reproduces it pixel for pixel);
4. ``(x / 255 - mean) / std`` in float32.

``resize_size`` is ``img_size / crop_pct`` rounded down (224 / 0.875 = 256), timm's rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .arrays import ArrayDataset
from .decode import DEFAULT_MAX_PIXELS, BadImageError, decode_rgb, read_bytes

RESIZE_MODES = ("shorter_side", "squash")
INTERPOLATIONS = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}
CHANNEL_ORDERS = ("RGB",)
#: a reduced-size JPEG decode keeps at least this many times the resize size (see Preprocessing.decode_min_size)
DECODE_OVERSAMPLE = 4
#: keys of :meth:`Preprocessing.to_dict` that are derived from the others (written for readers, ignored on reading)
DERIVED_KEYS = ("resize_size",)


def eval_resize_size(img_size: int | Sequence[int], crop_pct: float) -> tuple[int, int]:
    """The size resized to before the center crop: ``img_size / crop_pct`` rounded down (224 / 0.875 = 256)."""
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    h, w = _pair(img_size)
    # the epsilon keeps a quotient that float division lands just below an integer from losing a pixel
    return math.floor(h / crop_pct + 1e-9), math.floor(w / crop_pct + 1e-9)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return int(size), int(size)
    if len(size) != 2:
        raise ValueError(f"an image size is one int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def _per_channel(values: Sequence[float], in_chans: int) -> tuple[float, ...]:
    """One statistic for every channel stands for all of them; otherwise the counts must agree (checked later)."""
    values = tuple(float(v) for v in values)
    return values * in_chans if len(values) == 1 else values


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded uint8 RGB image becomes the model's float input (see the module docstring for the steps)."""

    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    resize_mode: str = "shorter_side"
    in_chans: int = 3
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the field types once, here
        set_(self, "img_size", _pair(self.img_size))
        set_(self, "mean", tuple(float(v) for v in self.mean))
        set_(self, "std", tuple(float(v) for v in self.std))
        set_(self, "crop_pct", float(self.crop_pct))
        set_(self, "in_chans", int(self.in_chans))
        if min(self.img_size) < 1:
            raise ValueError(f"img_size must be positive, got {self.img_size}")
        if self.in_chans not in (1, 3):
            raise ValueError(f"images can be fed to models with 1 or 3 input channels, this one has {self.in_chans}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"normalisation has mean {self.mean} / std {self.std} but the model takes "
                             f"{self.in_chans} channels")
        if not all(s > 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS} (decoded images are RGB), "
                             f"got {self.channel_order!r}")

    # --- stored form ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (plus the derived ``resize_size``, for readers outside vitkit)."""
        d = {f.name: getattr(self, f.name) for f in fields(Preprocessing)}  # not a subclass's own fields
        d.update(img_size=list(self.img_size), mean=list(self.mean), std=list(self.std),
                 resize_size=list(self.resize_size))
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """The inverse of :meth:`to_dict`; an unknown key is an error naming it (a damaged or foreign record)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a preprocessing record is a mapping, got {type(data).__name__}")
        names = {f.name for f in fields(Preprocessing)}
        unknown = sorted(set(data) - names - set(DERIVED_KEYS))
        if unknown:
            raise ValueError(f"unknown preprocessing keys {unknown}; expected {sorted(names)}")
        missing = sorted({"img_size", "mean", "std"} - set(data))
        if missing:
            raise ValueError(f"preprocessing record lacks {missing}")
        return Preprocessing(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_model(cls, model: nn.Module) -> Preprocessing:
        """A model's preprocessing: what its checkpoint stored, else what its config and data_config imply.

        Checkpoints written by the training loop store it (``extra["preprocessing"]``). For other models: the
        input size and channels from the model's config; mean/std from the checkpoint's ``extra`` (a training run's
        dataset statistics), else its ``data_config``, else 0.5; crop_pct and interpolation from ``data_config``
        (defaults 1.0, bicubic). A training checkpoint written before the preprocessing was stored (``extra`` names
        its ``dataset``) was evaluated on whole images resized bilinearly, and gets that.
        """
        config = getattr(model, "config", None)
        if not isinstance(config, Mapping) or "img_size" not in config:
            raise TypeError(f"{type(model).__name__} is not a vitkit model (a vitkit.models.VitkitModel)")
        meta = getattr(model, "checkpoint_meta", None) or {}  # set by load_checkpoint only
        extra = meta.get("extra") or {}
        in_chans = int(config.get("in_chans", 3))
        stored = extra.get("preprocessing")
        if stored is not None:
            spec = cls.from_dict(stored)
            if spec.in_chans != in_chans:
                raise ValueError(f"stored preprocessing feeds {spec.in_chans} channels but the model takes {in_chans}")
            return spec
        data_config = getattr(model, "data_config", None) or meta.get("data_config") or {}
        legacy_training_run = "dataset" in extra
        return cls(
            img_size=tuple(config["img_size"]),
            mean=_per_channel(extra.get("mean") or data_config.get("mean") or (0.5,), in_chans),
            std=_per_channel(extra.get("std") or data_config.get("std") or (0.5,), in_chans),
            crop_pct=1.0 if legacy_training_run else float(data_config.get("crop_pct", 1.0)),
            interpolation="bilinear" if legacy_training_run else str(data_config.get("interpolation", "bicubic")),
            resize_mode="squash" if data_config.get("crop_mode") == "squash" else "shorter_side",
            in_chans=in_chans,
        )

    # --- geometry ---------------------------------------------------------------------------------------------------

    @property
    def resize_size(self) -> tuple[int, int]:
        """(H, W) before the crop: ``img_size / crop_pct`` rounded down."""
        return eval_resize_size(self.img_size, self.crop_pct)

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) an image of ``height`` x ``width`` is resized to."""
        if self.resize_mode == "squash":
            return self.resize_size
        side = max(self.resize_size)
        if height <= width:
            return side, int(side * width / height)
        return int(side * height / width), side

    # --- decoding ---------------------------------------------------------------------------------------------------

    @property
    def decode_min_size(self) -> tuple[int, int]:
        """(H, W) a reduced-size JPEG decode must still cover: :data:`DECODE_OVERSAMPLE` x ``resize_size``, so the
        antialiased resize that follows averages the decoder's own downscaling out (at 1 x, a 1/8 decode moves a
        small model's probabilities by up to 0.1 against a full decode)."""
        rh, rw = self.resize_size
        return DECODE_OVERSAMPLE * rh, DECODE_OVERSAMPLE * rw

    def decode(self, data: bytes, path: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
        """Encoded bytes -> uint8 RGB (3, H, W), as every vitkit road decodes for this preprocessing: a JPEG at
        least twice :attr:`decode_min_size` on both sides is decoded at reduced size by the JPEG decoder (every side
        still at least that), since the resize would discard those pixels anyway; everything else in full.
        Raises :class:`~vitkit.data.decode.BadImageError`."""
        return decode_rgb(data, path, max_pixels, min_size=self.decode_min_size)

    def read(self, paths: Sequence[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> list[torch.Tensor | BadImageError]:
        """Files through :meth:`decode`: per path, the image or the :class:`BadImageError` that refused it."""
        out: list[torch.Tensor | BadImageError] = []
        for path in paths:
            try:
                out.append(self.decode(read_bytes(path), str(path), max_pixels))
            except BadImageError as err:
                out.append(err)
        return out

    # --- the transform ----------------------------------------------------------------------------------------------

    def transform(self) -> PreprocessTransform:
        """A picklable callable: one uint8 (C, H, W) image -> float32 (in_chans, *img_size)."""
        return PreprocessTransform(self)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """One uint8 (C, H, W) image (a tensor, or a PIL image) -> normalised float32 (in_chans, *img_size)."""
        if not isinstance(image, torch.Tensor):
            image = TF.pil_to_tensor(image)
        if image.ndim != 3:
            raise ValueError(f"expected one image (C, H, W), got shape {tuple(image.shape)}")
        return self.batch(image.unsqueeze(0))[0]

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 batch (N, C, H, W) of equal-sized images, on any device -> float32 (N, in_chans, *img_size).

        The same operations as :meth:`transform` on each image, so a batch from the decoded cache and the same
        images given one by one come out alike.
        """
        if images.ndim != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise TypeError(f"preprocessing takes decoded uint8 images, got {images.dtype}")
        x = self._channels(images)
        target = self.resized_shape(*x.shape[-2:])
        if tuple(x.shape[-2:]) != target:
            x = TF.resize(x, list(target), interpolation=INTERPOLATIONS[self.interpolation], antialias=True)
        x = self._center_crop(x)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        return x.to(torch.float32).div_(255.0).sub_(mean).div_(std)

    def stack(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decoded images of any sizes -> one float batch (each through :meth:`transform`)."""
        if not images:
            raise ValueError("no images to preprocess")
        return torch.stack([self(image) for image in images])

    def _channels(self, images: torch.Tensor) -> torch.Tensor:
        chans = images.shape[-3]
        if chans == self.in_chans:
            return images
        if self.in_chans == 1 and chans == 3:
            return TF.rgb_to_grayscale(images)
        if self.in_chans == 3 and chans == 1:
            return images.expand(*images.shape[:-3], 3, *images.shape[-2:])
        raise ValueError(f"images have {chans} channels; the model takes {self.in_chans}")

    def _center_crop(self, images: torch.Tensor) -> torch.Tensor:
        h, w = self.img_size
        ih, iw = images.shape[-2:]
        if ih < h or iw < w:  # cannot happen after the resize; guards a hand-made record
            raise ValueError(f"a {ih}x{iw} image cannot be center-cropped to {h}x{w}")
        top, left = (ih - h) // 2, (iw - w) // 2
        return images[..., top : top + h, left : left + w]


class PreprocessTransform(nn.Module):
    """:meth:`Preprocessing.__call__` as a module, for code that composes transforms (and DataLoader workers)."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.preprocessing = preprocessing

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.preprocessing(image)

    def extra_repr(self) -> str:
        return repr(self.preprocessing)


def training_preprocessing(
    img_size: int | Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int,
    crop_pct: float,
    eval_dataset: ArrayDataset,
) -> Preprocessing:
    """The preprocessing a training run's evaluation applies to source images, which its checkpoints store.

    Photos (``eval_dataset.meta["augment"] == "photo"``) are stored by the decoded cache with their short side at
    ``img_size / crop_pct`` (antialiased bilinear) and evaluated on the center ``img_size`` crop; other data is
    evaluated whole (crop_pct 1), resized bilinearly when the model's input size differs from the stored one.
    """
    photo = eval_dataset.meta.get("augment") == "photo"
    return Preprocessing(_pair(img_size), tuple(mean), tuple(std), crop_pct=crop_pct if photo else 1.0,
                         interpolation="bilinear", in_chans=in_chans)


def evaluation_transform(preprocessing: Preprocessing, eval_dataset: ArrayDataset) -> PreprocessTransform:
    """The per-sample transform that applies ``preprocessing`` to images as ``eval_dataset`` delivers them.

    An evaluation view of the cache (``meta["eval_crop_pct"]``, see ``datasets.eval_view``) holds the center crops
    already: what is left is the resize to the model's input size, if any, and the normalisation. Otherwise the
    stored images get the whole preprocessing (for photos stored at ``img_size / crop_pct`` the resize is a no-op).
    """
    if "eval_crop_pct" in eval_dataset.meta:
        return replace(preprocessing, crop_pct=1.0).transform()
    return preprocessing.transform()


__all__ = [
    "INTERPOLATIONS", "RESIZE_MODES", "PreprocessTransform", "Preprocessing", "eval_resize_size",
    "evaluation_transform", "training_preprocessing",
]
