"""The one form every dataset kind ends in: a uint8 (N, H, W, C) array, int64 labels, class names and mean/std.

Keeping images as one array (in RAM, or an np.memmap from the decoded cache) is what lets the loader gather a
batch by index with no per-sample decode, and lets small images skip DataLoader workers entirely.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


class ArrayDataset(torch.utils.data.Dataset):
    """Images as a uint8 (N, H, W, C) array; ``ds[i]`` gives a (C, H, W) uint8 tensor (or its transform) and a label."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        transform: Callable[[torch.Tensor], Any] | None = None,
        name: str = "",
        split: str = "",
        meta: dict[str, Any] | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} with shape {images.shape}")
        labels = np.asarray(labels)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
        if labels.dtype != np.int64:
            labels = labels.astype(np.int64)
        classes = [str(c) for c in classes]
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"labels must lie in [0, {len(classes)}), got [{labels.min()}, {labels.max()}]")
        c = images.shape[3]
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values (one per channel), got {len(mean)}/{len(std)}")
        self.images = images
        self.labels = labels
        self.classes = classes
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.transform = transform
        self.name = name
        self.split = split
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    def with_transform(self, transform: Callable[[torch.Tensor], Any] | None) -> ArrayDataset:
        """A shallow copy sharing the arrays, with another per-sample transform."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def __repr__(self) -> str:
        backing = "memmap" if isinstance(self.images, np.memmap) else "ram"
        return (
            f"ArrayDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, image_size={self.image_size}, "
            f"channels={self.channels}, classes={self.num_classes}, {backing})"
        )


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, read in chunks so a memmap never has to fit in RAM."""
    c = images.shape[-1]
    total = np.zeros(c, np.float64)
    total_sq = np.zeros(c, np.float64)
    count = 0
    for start in range(0, images.shape[0], chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.float64).reshape(-1, c) / 255.0
        total += block.sum(0)
        total_sq += np.square(block).sum(0)
        count += block.shape[0]
    if count == 0:
        raise ValueError("cannot compute mean/std of an empty dataset")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, carved) with ``fraction`` of every class carved out, reproducibly from ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    carved = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        n = int(round(fraction * idx.size))
        if idx.size > 1:
            n = min(max(n, 1), idx.size - 1)  # every class keeps a training example and gets a val example
        carved.append(rng.permutation(idx)[:n])
    carved_idx = np.sort(np.concatenate(carved)) if carved else np.zeros(0, np.int64)
    mask = np.ones(labels.shape[0], bool)
    mask[carved_idx] = False
    return np.flatnonzero(mask), carved_idx


__all__ = ["ArrayDataset", "channel_stats", "stratified_split"]
