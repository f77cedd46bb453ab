"""Batch-level augmentation on the training device: one vectorised pass over a whole uint8 batch.

Small images (CIFAR-sized) cost more in per-sample Python than in arithmetic, so crop+pad, flip and
mixup/cutmix are applied to the batch tensor where it already lives (CPU or GPU), with no DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import v2


def _stats_tensor(values: Sequence[float], channels: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(tuple(values), dtype=torch.float32, device=device)
    if t.numel() == 1 and channels != 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise ValueError(f"mean/std have {t.numel()} values but the batch has {channels} channels")
    return t.view(1, channels, 1, 1)


def normalize_batch(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 ``(x / 255 - mean) / std``; the eval path for batches from the tensor loader."""
    if images.ndim != 4:
        raise ValueError(f"expected a batch (B, C, H, W), got shape {tuple(images.shape)}")
    c = images.shape[1]
    mean_t = _stats_tensor(mean, c, images.device)
    std_t = _stats_tensor(std, c, images.device)
    scale = 1.0 / (255.0 * std_t) if images.dtype == torch.uint8 else 1.0 / std_t
    return images.to(torch.float32).mul(scale).sub_(mean_t / std_t)  # (x / 255 - mean) / std in two passes


def soft_targets(labels: torch.Tensor, num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets with label smoothing: ``(1 - eps) * onehot + eps / K``."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]")
    t = F.one_hot(labels.long(), num_classes).float()
    if label_smoothing > 0:
        t = t.mul_(1.0 - label_smoothing).add_(label_smoothing / num_classes)
    return t


class BatchAugment:
    """Random crop with zero padding, horizontal flip, then MixUp/CutMix (torchvision v2) on a uint8 batch.

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
    ) -> None:
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
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.mix_prob = float(mix_prob)
        self.switch_prob = float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.out_size = (out_size, out_size) if isinstance(out_size, int) else (tuple(out_size) if out_size else None)
        self.generator = generator
        self.mixup = v2.MixUp(alpha=mixup_alpha, num_classes=num_classes) if mixup_alpha > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes) if cutmix_alpha > 0 else None

    @property
    def mixing(self) -> bool:
        return (self.mixup is not None or self.cutmix is not None) and self.mix_prob > 0

    @property
    def soft(self) -> bool:
        """Whether targets come out as (B, num_classes) probabilities rather than int64 labels."""
        return self.mixing or self.label_smoothing > 0

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator)

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
        flips = self._rand(b) < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool)
        wp = w + 2 * p
        cols = torch.arange(w)
        cols = torch.where(flips.view(b, 1), cols.flip(0).view(1, w), cols.view(1, w)) + offsets[:, 1:2]  # (b, w)
        rows = (torch.arange(h).view(1, h) + offsets[:, 0:1]) * wp  # (b, h)
        index = (rows.view(b, h, 1) + cols.view(b, 1, w)).view(b, 1, h * w).to(dev).expand(b, c, h * w)
        padded = F.pad(images, (p, p, p, p)) if p else images
        return padded.reshape(b, c, -1).gather(2, index).view(b, c, h, w)

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
        images = self._crop_flip(images)
        x = normalize_batch(images, self.mean, self.std)
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
            f"BatchAugment(num_classes={self.num_classes}, crop_padding={self.crop_padding}, flip={self.flip}, "
            f"mixup={self.mixup.alpha if self.mixup else 0.0}, cutmix={self.cutmix.alpha if self.cutmix else 0.0}, "
            f"mix_prob={self.mix_prob}, switch_prob={self.switch_prob}, label_smoothing={self.label_smoothing}, "
            f"out_size={self.out_size})"
        )
