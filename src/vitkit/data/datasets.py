"""Every dataset kind ends as one thing: a uint8 (N, H, W, C) array, int64 labels, class names and mean/std.

Keeping images as one array (in RAM, or an np.memmap from the decoded cache) is what lets the loader gather a
batch by index with no per-sample decode, and lets small images skip DataLoader workers entirely.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPLITS = ("train", "val", "test")
BAD_FILE_POLICIES = ("skip", "error")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: the digits test set must never move with the user's seed


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


def subset(ds: ArrayDataset, indices: np.ndarray, split: str, tag: str = "") -> ArrayDataset:
    """The rows ``indices`` of ``ds`` as a new dataset with the same classes and statistics.

    A cache-backed dataset gets its subset as a cache entry of its own (memmap), so carving a validation split
    out of a large training set never loads it into RAM.
    """
    meta = dict(ds.meta, parent_split=ds.split, parent_size=len(ds))
    parent_dir = ds.meta.get("cache", {}).get("directory")
    if isinstance(ds.images, np.memmap) and parent_dir:
        from .cache import open_entry, subset_entry

        parent = open_entry(Path(parent_dir))
        if parent is not None:
            entry = subset_entry(parent, indices, tag or split)
            meta["cache"] = {"directory": str(entry.directory), "hit": ds.meta["cache"].get("hit", False)}
            return ArrayDataset(entry.images, entry.labels, ds.classes, ds.mean, ds.std, name=ds.name, split=split,
                                meta=meta)
    return ArrayDataset(ds.images[indices], ds.labels[indices], ds.classes, ds.mean, ds.std, name=ds.name,
                        split=split, meta=meta)


# -- built-in kinds --------------------------------------------------------------------------------------------


def _digits_split(split: str) -> ArrayDataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a runtime dependency
        raise ImportError("the 'digits' dataset needs scikit-learn (pip install scikit-learn)") from exc
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    mean, std = channel_stats(images[train_idx])
    idx = train_idx if split == "train" else test_idx
    classes = [str(int(c)) for c in bunch.target_names]
    meta = {"source": "sklearn.datasets.load_digits", "test_fraction": DIGITS_TEST_FRACTION}
    return ArrayDataset(images[idx], labels[idx], classes, mean, std, name="digits", split=split, meta=meta)


def _synthetic_split(
    split: str,
    num_samples: int | None = None,
    image_size: int | Sequence[int] = 32,
    num_classes: int = 10,
    channels: int = 3,
    data_seed: int = 0,
    noise: float = 48.0,
) -> ArrayDataset:
    """Random images with a per-class colour template under noise: learnable, so it also serves smoke training."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    n = int(num_samples if num_samples is not None else (2048 if split == "train" else 512))
    if n < 1 or num_classes < 1 or channels not in (1, 3) or h < 1 or w < 1:
        raise ValueError(f"synthetic: bad num_samples={n}, num_classes={num_classes}, channels={channels}, size={h}x{w}")
    template_rng = np.random.default_rng(data_seed)
    coarse = template_rng.integers(32, 224, size=(num_classes, 4, 4, channels)).astype(np.uint8)
    templates = np.repeat(np.repeat(coarse, -(-h // 4), axis=1), -(-w // 4), axis=2)[:, :h, :w]
    rng = np.random.default_rng([data_seed, SPLITS.index(split)])
    labels = rng.integers(0, num_classes, size=n).astype(np.int64)
    images = np.empty((n, h, w, channels), np.uint8)
    for start in range(0, n, 4096):  # chunked so large benchmark sets do not need float copies of everything
        lab = labels[start : start + 4096]
        jitter = rng.normal(0.0, noise, size=(lab.size, h, w, channels))
        images[start : start + 4096] = np.clip(templates[lab] + jitter, 0, 255).astype(np.uint8)
    mean, std = channel_stats(images[: min(n, 4096)])
    classes = [f"class_{i}" for i in range(num_classes)]
    meta = {"source": "synthetic", "data_seed": data_seed, "noise": noise}
    return ArrayDataset(images, labels, classes, mean, std, name="synthetic", split=split, meta=meta)


def _resolve_kind(name_or_path: str | os.PathLike) -> tuple[str, Path | None]:
    text = os.fspath(name_or_path)
    if text in ("digits", "synthetic", "cifar10", "cifar100"):
        return text, None
    if text.startswith("imagefolder:"):
        return "imagefolder", Path(text[len("imagefolder:") :]).expanduser()
    path = Path(text).expanduser()
    if path.is_dir() or not isinstance(name_or_path, str) or os.sep in text or text.startswith((".", "~")):
        return "imagefolder", path  # looks like a path: a missing one gets the layout error naming it
    raise ValueError(
        f"unknown dataset {text!r}: expected 'digits', 'synthetic', 'cifar10', 'cifar100', "
        f"'imagefolder:<root>' or an existing ImageFolder directory"
    )


def _native_split(kind: str, root: Path | None, split: str, options: dict[str, Any]) -> ArrayDataset:
    """The dataset's own split; 'val' for kinds without one falls back to 'test' (recorded in meta)."""
    if kind == "digits":
        if options:
            raise TypeError(f"digits takes no extra options, got {sorted(options)}")
        return _digits_split("test" if split == "val" else split)
    if kind == "synthetic":
        return _synthetic_split(split, **options)
    if kind == "imagefolder":
        from .imagefolder import load_split

        return load_split(root, split, **options)
    from .cifar import load_split as load_cifar_split

    return load_cifar_split(kind, split, **options)


def build_dataset(
    name_or_path: str | os.PathLike,
    split: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    storage_size: int | Sequence[int] | None = None,
    bad_files: str = "skip",
    num_workers: int | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    **kind_kwargs: Any,
) -> ArrayDataset:
    """Build a split of a dataset as an :class:`ArrayDataset` (see the data contract in docs/data.md).

    ``val_fraction > 0`` carves a seeded, stratified validation split out of the training split (``split="train"``
    returns the remainder, ``"val"`` the carved part); with ``val_fraction == 0`` a kind without its own val split
    serves its test split for ``"val"`` (``ds.meta["split_source"]`` says which).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if bad_files not in BAD_FILE_POLICIES:
        raise ValueError(f"bad_files must be one of {BAD_FILE_POLICIES}, got {bad_files!r}")
    kind, root = _resolve_kind(name_or_path)
    options = dict(kind_kwargs)
    if kind in ("imagefolder", "cifar10", "cifar100"):
        options.update(cache_dir=cache_dir, storage_size=storage_size, bad_files=bad_files, num_workers=num_workers)
    if val_fraction and split in ("train", "val"):
        pool = _native_split(kind, root, "train", options)
        keep, carved = stratified_split(pool.labels, float(val_fraction), seed)
        idx = keep if split == "train" else carved
        ds = subset(pool, idx, split, tag=f"{split}-frac{val_fraction:g}-seed{seed}")
        source = f"train minus {val_fraction:g} carved for val" if split == "train" else f"{val_fraction:g} of train"
        ds.meta.update(split_source=source, val_fraction=float(val_fraction), split_seed=seed)
        return ds
    ds = _native_split(kind, root, split, options)
    ds.meta.setdefault("split_source", ds.split)
    ds.split = split
    return ds
