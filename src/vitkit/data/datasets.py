"""``build_dataset``: a dataset name or path and a split -> an :class:`~vitkit.data.arrays.ArrayDataset`.

The dispatcher over the kinds: the built-in ones (scikit-learn digits, synthetic) here, CIFAR in cifar.py,
ImageFolder roots in imagefolder.py; and the validation split carved out of a training split.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import ArrayDataset, channel_stats, stratified_split
from .cache import open_entry, subset_entry
from .cifar import load_split as load_cifar_split
from .imagefolder import load_split as load_imagefolder_split

SPLITS = ("train", "val", "test")
BAD_FILE_POLICIES = ("skip", "error")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: the digits test set must never move with the user's seed


def subset(ds: ArrayDataset, indices: np.ndarray, split: str, tag: str = "") -> ArrayDataset:
    """The rows ``indices`` of ``ds`` as a new dataset with the same classes and statistics.

    A cache-backed dataset gets its subset as a cache entry of its own (memmap), so carving a validation split
    out of a large training set never loads it into RAM.
    """
    meta = dict(ds.meta, parent_split=ds.split, parent_size=len(ds))
    parent_dir = ds.meta.get("cache", {}).get("directory")
    if isinstance(ds.images, np.memmap) and parent_dir:
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
        return load_imagefolder_split(root, split, **options)
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
    elif storage_size is not None:
        warnings.warn(f"storage_size={storage_size} is ignored for {kind!r}: it is generated in memory at its own "
                      f"size (synthetic takes image_size=...)", stacklevel=2)
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


__all__ = ["SPLITS", "BAD_FILE_POLICIES", "build_dataset", "subset"]
