"""Batch-level augmentation on the training device: one vectorised pass over a whole uint8 batch.

Per-sample Python costs more than the arithmetic of an augmentation, so the crop (pad-crop for CIFAR-sized images,
random-resized crop for photos), the flip and mixup/cutmix are applied to the batch tensor where it already lives
(CPU or GPU), with no DataLoader workers. The one loop over images is the random-resized crop's: its boxes differ in
size, and one resize kernel per crop beats every batched alternative on a CPU (:func:`resized_crops`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

CROPS = ("pad", "resized")
RRC_ATTEMPTS = 10  # candidate boxes per image before the center-crop fallback (as torchvision's RandomResizedCrop)


@functools.lru_cache(maxsize=64)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], channels: int, device: torch.device, uint8: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with ``x * scale - shift == (x [/ 255] - mean) / std``; cached per device (no per-batch copy)."""
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    if m.numel() == 1 and channels != 1:
        m, s = m.expand(channels), s.expand(channels)
    if m.numel() != channels or s.numel() != channels:
        raise ValueError(f"mean/std have {m.numel()}/{s.numel()} values but the batch has {channels} channels")
    scale = 1.0 / (s * 255.0) if uint8 else 1.0 / s
    shift = m / s
    return (scale.float().view(1, channels, 1, 1).to(device), shift.float().view(1, channels, 1, 1).to(device))


def normalize_batch(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 ``(x / 255 - mean) / std``; the eval path for batches from the tensor loader."""
    if images.ndim != 4:
        raise ValueError(f"expected a batch (B, C, H, W), got shape {tuple(images.shape)}")
    scale, shift = _affine(tuple(float(v) for v in mean), tuple(float(v) for v in std), images.shape[1],
                           images.device, images.dtype == torch.uint8)
    return images.to(torch.float32).mul(scale).sub_(shift)


def random_resized_boxes(
    batch: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(batch, 4) int64 boxes ``(top, left, height, width)`` drawn as torchvision's ``RandomResizedCrop.get_params``
    draws them (area fraction uniform in ``scale``, log aspect ratio uniform in ``ratio``, the first of
    :data:`RRC_ATTEMPTS` candidates that fits, else the center crop of the clamped ratio), for all images at once."""
    device = generator.device if generator is not None else "cpu"
    u = torch.rand((batch, RRC_ATTEMPTS, 4), generator=generator, device=device, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    cw = torch.sqrt(area * aspect).round()
    ch = torch.sqrt(area / aspect).round()
    fits = (cw > 0) & (cw <= width) & (ch > 0) & (ch <= height)
    first = fits.to(torch.int8).argmax(1, keepdim=True)  # the first candidate that fits (0 when none does)
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
    top = (u[..., 2].gather(1, first).squeeze(1) * (height - ch + 1)).floor().clamp_(max=height - ch)
    left = (u[..., 3].gather(1, first).squeeze(1) * (width - cw + 1)).floor().clamp_(max=width - cw)
    if not bool(fits.any(1).all()):  # the fallback: the whole image, cut to the nearest allowed aspect ratio
        in_ratio = width / height
        fw, fh = (width, round(width / min(ratio))) if in_ratio < min(ratio) else \
            (round(height * max(ratio)), height) if in_ratio > max(ratio) else (width, height)
        none = ~fits.any(1)
        cw, ch = cw.masked_fill(none, fw), ch.masked_fill(none, fh)
        top, left = top.masked_fill(none, (height - fh) // 2), left.masked_fill(none, (width - fw) // 2)
    return torch.stack([top, left, ch, cw], 1).long()


# How many tensors share a storage (views and autograd's saved tensors included): the question torch.utils.swap_tensors
# asks before it swaps. None in a torch that does not offer it: then no buffer is ever reused.
_STORAGE_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


def _storage_users(tensor: torch.Tensor) -> int:
    return int(_STORAGE_USE_COUNT(tensor.untyped_storage()._cdata))


class OutputBuffers:
    """Float output batches on the CPU whose memory is used again once nothing holds the batch any more.

    Why: a (64, 3, 224, 224) float batch is 38.5 MB, above the 32 MiB that glibc ever serves from its heap, so a
    fresh one is mmapped for every batch and the kernel zeroes all of its 9,400 pages on first touch: a third of
    the batch's augmentation time. A caller gets a view of a kept buffer; the buffer is handed out again only when
    no view of it, nothing derived from it and no autograd graph that saved it is alive (its storage's use count
    is back to the pool's own), so a batch the caller keeps is never overwritten. Other devices, and a torch that
    does not report use counts, get a fresh tensor each time.
    """

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self._kept: list[tuple[torch.Tensor, int]] = []  # (buffer, its storage's use count when nobody holds it)

    def get(self, shape: Sequence[int], device: torch.device) -> torch.Tensor:
        shape = tuple(int(n) for n in shape)
        if device.type != "cpu" or _STORAGE_USE_COUNT is None:
            return torch.empty(shape, dtype=torch.float32, device=device)
        for buffer, idle in self._kept:
            if tuple(buffer.shape) == shape and _storage_users(buffer) == idle:
                return buffer.view(shape)
        buffer = torch.empty(shape, dtype=torch.float32)
        same = [kept for kept in self._kept if tuple(kept[0].shape) == shape]  # a new size retires the others
        self._kept = [*same[max(0, len(same) - self.keep + 1):], (buffer, _storage_users(buffer))]
        return buffer.view(shape)


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], flip: torch.Tensor | None = None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Crop box ``(top, left, height, width)`` of each image and resize it to ``size``, mirroring the images that
    ``flip`` (bool (B,)) marks: float32 (B, C, *size) in the input's value range, written into ``out`` when given.

    Each crop is resized by one ``F.interpolate`` call (bilinear, antialiased: torchvision's ``resized_crop`` on
    tensors, bit for bit). On a CPU that call runs torch's vectorised uint8 resize, whose native layout is
    channels-last: each crop is copied so (small, in cache), and a 224 px crop takes about 0.5 ms in all. The batched
    ops that take one box per image (``torchvision.ops.roi_align``, ``F.grid_sample``) must first convert the whole
    batch to float and run several times slower per image (the measurement is in docs/data.md). The loop costs a few
    microseconds of Python per image around that kernel.
    """
    b, c = images.shape[:2]
    oh, ow = int(size[0]), int(size[1])
    native_uint8 = images.device.type == "cpu" and images.dtype == torch.uint8  # CUDA's antialiased resize: float
    source = images if native_uint8 else images.float()
    if out is None:
        out = torch.empty(b, c, oh, ow, dtype=torch.float32, device=images.device)
    elif tuple(out.shape) != (b, c, oh, ow) or out.dtype != torch.float32:
        raise ValueError(f"out must be float32 {(b, c, oh, ow)}, got {out.dtype} {tuple(out.shape)}")
    flips = [False] * b if flip is None else flip.tolist()
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        crop = source[i : i + 1, :, top : top + h, left : left + w].contiguous(memory_format=torch.channels_last)
        resized = F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=False, antialias=True)[0]
        out[i].copy_(resized.flip(-1) if flips[i] else resized)  # to float and to NCHW in one pass, still in cache
    return out


def soft_targets(labels: torch.Tensor, num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets with label smoothing: ``(1 - eps) * onehot + eps / K``."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]")
    t = F.one_hot(labels.long(), num_classes).float()
    if label_smoothing > 0:
        t = t.mul_(1.0 - label_smoothing).add_(label_smoothing / num_classes)
    return t


class BatchAugment:
    """A random crop, horizontal flip, then MixUp/CutMix (torchvision v2) on a uint8 batch.

    The crop is ``crop="pad"`` (the CIFAR recipe: a window of the zero-padded image, ``crop_padding`` pixels) or
    ``crop="resized"`` (photos: RandomResizedCrop with ``scale`` and ``ratio`` as torchvision's, to ``out_size``,
    all images in one batched op on their device).

    Returns normalised float32 images and targets: int64 labels when neither mixing nor label smoothing is
    configured, otherwise soft targets (B, num_classes) where label smoothing is applied before mixing (the
    combination timm and DeiT use). With a ``generator`` every random choice is drawn from it, so a seeded run
    reproduces its augmentation exactly (torchvision's MixUp/CutMix draw from the global RNG, which is forked and
    seeded from the generator for the call).
    """

    def __init__(
        self,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        crop_padding: int = 4,
        flip: bool = True,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.0,
        out_size: int | tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
        crop: str = "pad",
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha/cutmix_alpha must be >= 0, got {mixup_alpha}/{cutmix_alpha}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= mix_prob <= 1.0 or not 0.0 <= switch_prob <= 1.0:
            raise ValueError(f"mix_prob and switch_prob must be in [0, 1], got {mix_prob}, {switch_prob}")
        self.num_classes = num_classes
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.crop = crop
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.mix_prob = float(mix_prob)
        self.switch_prob = float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.out_size = (out_size, out_size) if isinstance(out_size, int) else (tuple(out_size) if out_size else None)
        self.generator = generator
        self.mixup = v2.MixUp(alpha=mixup_alpha, num_classes=num_classes) if mixup_alpha > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes) if cutmix_alpha > 0 else None
        self.buffers = OutputBuffers()

    @property
    def mixing(self) -> bool:
        return (self.mixup is not None or self.cutmix is not None) and self.mix_prob > 0

    @property
    def soft(self) -> bool:
        """Whether targets come out as (B, num_classes) probabilities rather than int64 labels."""
        return self.mixing or self.label_smoothing > 0

    def _rand(self, *shape: int) -> torch.Tensor:
        device = self.generator.device if self.generator is not None else "cpu"
        return torch.rand(shape, generator=self.generator, device=device)

    def _crop_flip(self, images: torch.Tensor) -> torch.Tensor:
        """Random crop of the zero-padded batch and horizontal flip as ONE gather over flattened pixels.

        Output pixel (i, j) of sample b reads padded pixel (dy_b + i, dx_b + j), or (dy_b + i, dx_b + W-1-j) when b
        is flipped; one index tensor covers the batch, so there is no per-sample or per-offset Python loop.
        """
        b, c, h, w = images.shape
        p = self.crop_padding
        if p == 0 and not self.flip:
            return images
        dev = images.device
        offsets = (self._rand(b, 2) * (2 * p + 1)).long().clamp_(max=2 * p)
        flips = self._rand(b) < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool, device=offsets.device)
        wp = w + 2 * p
        cols = torch.arange(w, device=offsets.device)
        cols = torch.where(flips.view(b, 1), cols.flip(0).view(1, w), cols.view(1, w)) + offsets[:, 1:2]  # (b, w)
        rows = (torch.arange(h, device=offsets.device).view(1, h) + offsets[:, 0:1]) * wp  # (b, h)
        index = (rows.view(b, h, 1) + cols.view(b, 1, w)).view(b, 1, h * w).to(dev).expand(b, c, h * w)
        padded = F.pad(images, (p, p, p, p)) if p else images
        return padded.reshape(b, c, -1).gather(2, index).view(b, c, h, w)

    def _resized_crop_flip(self, images: torch.Tensor) -> torch.Tensor:
        """RandomResizedCrop to ``out_size`` (default: the input size) and flip, batched: boxes drawn from the
        generator, each crop one antialiased resize of a view (see :func:`resized_crops`). Float output, 0..255."""
        b, _, h, w = images.shape
        size = self.out_size or (h, w)
        boxes = random_resized_boxes(b, h, w, scale=self.scale, ratio=self.ratio, generator=self.generator)
        flips = self._rand(b) < 0.5 if self.flip else None
        out = self.buffers.get((b, images.shape[1], *size), images.device)
        return resized_crops(images, boxes, size, flips, out=out)

    def _mix(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if float(self._rand(1)) >= self.mix_prob:
            return images, targets
        if self.mixup is not None and self.cutmix is not None:
            mixer = self.cutmix if float(self._rand(1)) < self.switch_prob else self.mixup
        else:
            mixer = self.mixup or self.cutmix
        if self.generator is None:
            return mixer(images, targets)
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return mixer(images, targets)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4:
            raise ValueError(f"BatchAugment expects a batch (B, C, H, W), got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if self.crop == "resized":
            crops = self._resized_crop_flip(images)
            scale, shift = _affine(self.mean, self.std, crops.shape[1], crops.device, not images.is_floating_point())
            x = crops.mul_(scale).sub_(shift)
        else:
            x = normalize_batch(self._crop_flip(images), self.mean, self.std)
        if self.out_size is not None and tuple(x.shape[-2:]) != self.out_size:
            x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False, antialias=True)
        if not self.soft:
            return x, labels.long()
        targets = soft_targets(labels, self.num_classes, self.label_smoothing)
        if self.mixing:
            x, targets = self._mix(x, targets)
        return x, targets

    def __repr__(self) -> str:
        return (
            f"BatchAugment(num_classes={self.num_classes}, crop={self.crop!r}, "
            + (f"scale={self.scale}, ratio={self.ratio}, " if self.crop == "resized" else
               f"crop_padding={self.crop_padding}, ") + f"flip={self.flip}, "
            f"mixup={self.mixup.alpha if self.mixup else 0.0}, cutmix={self.cutmix.alpha if self.cutmix else 0.0}, "
            f"mix_prob={self.mix_prob}, switch_prob={self.switch_prob}, label_smoothing={self.label_smoothing}, "
            f"out_size={self.out_size})"
        )
