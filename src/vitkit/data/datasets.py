"""``build_dataset``: a dataset name or path and a split -> an :class:`~vitkit.data.arrays.ArrayDataset`.

The dispatcher over the kinds: the built-in ones (scikit-learn digits, synthetic) here, CIFAR in cifar.py,
image folders in imagefolder.py; and the split rules: which data serves validation and test (a folder's own val/,
a carved part of train, or the test split), said in each split's meta and in :func:`split_summary`, so a run never
reports validation images as a test result without saying so.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import ArrayDataset, channel_stats, stratified_split
from .cache import mapped_entry, open_entry, subset_entry
from .cifar import load_split as load_cifar_split
from .imagefolder import AUGMENTS, folder_layout, photo_storage_side
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
    if ds.meta.get("files") is not None:  # the source file of every row, for evaluating the raw images
        meta["files"] = [ds.meta["files"][i] for i in np.asarray(indices).tolist()]
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
        _check_options(kind, options, ())
        return _digits_split("test" if split == "val" else split)
    loader = _synthetic_split if kind == "synthetic" else load_cifar_split
    accepted = [p.name for p in inspect.signature(loader).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY or p.default is not inspect.Parameter.empty]
    _check_options(kind, options, accepted)
    return _synthetic_split(split, **options) if kind == "synthetic" else load_cifar_split(kind, split, **options)


def _check_options(kind: str, options: dict[str, Any], accepted: Sequence[str]) -> None:
    """Dataset options (``data.kwargs``, ``--data-arg``) the loader does not take: one error naming them."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"takes {', '.join(sorted(accepted))}" if accepted else "takes no options"
        raise ValueError(f"data options {unknown}: dataset {kind!r} {takes}")


def _carve(pool: ArrayDataset, split: str, val_fraction: float, seed: int) -> ArrayDataset:
    """The seeded, stratified validation part of ``pool`` (``split="val"``) or the rest of it (``"train"``)."""
    keep, carved = stratified_split(pool.labels, float(val_fraction), seed)
    ds = subset(pool, keep if split == "train" else carved, split, tag=f"{split}-frac{val_fraction:g}-seed{seed}")
    parent = pool.meta["split_source"]
    ds.meta.update(split_source=f"{parent} minus {val_fraction:g} carved for val" if split == "train" else
                   f"{val_fraction:g} of {parent}", val_fraction=float(val_fraction), split_seed=seed)
    return ds


def eval_view(ds: ArrayDataset, crop_pct: float) -> ArrayDataset:
    """A photo split as evaluation sees it: resized so the short side is ``train_size / crop_pct``, center-cropped
    to ``train_size`` (the model's preprocessing). Stored at that short side (the default), it is a crop of the
    stored images: a memmap view, nothing copied; stored at another size, it is built once as a cache entry."""
    th, tw = ds.meta["train_size"]
    h, w = ds.image_size
    meta = dict(ds.meta, eval_crop_pct=float(crop_pct))
    if (h, w) == (photo_storage_side(th, crop_pct), photo_storage_side(tw, crop_pct)):
        top, left = (h - th) // 2, (w - tw) // 2
        images = ds.images[:, top : top + th, left : left + tw]
        return ArrayDataset(images, ds.labels, ds.classes, ds.mean, ds.std, name=ds.name, split=ds.split, meta=meta)
    from torchvision.transforms.v2 import functional as TF

    resize = [photo_storage_side(th, crop_pct), photo_storage_side(tw, crop_pct)]

    def crop(block):
        return TF.center_crop(TF.resize(block, resize, antialias=True), [th, tw])

    parent_dir = ds.meta.get("cache", {}).get("directory")
    parent = open_entry(Path(parent_dir)) if parent_dir and isinstance(ds.images, np.memmap) else None
    if parent is not None:
        images = mapped_entry(parent, crop, (th, tw), f"eval-{th}x{tw}-crop{crop_pct:g}").images
    else:
        import torch

        images = crop(torch.from_numpy(np.ascontiguousarray(ds.images)).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        images = images.contiguous().numpy()
    return ArrayDataset(images, ds.labels, ds.classes, ds.mean, ds.std, name=ds.name, split=ds.split, meta=meta)


def _no_test(ds: ArrayDataset) -> ArrayDataset:
    """``ds`` (the validation split) serving as the test split, saying so."""
    out = ds.with_transform(ds.transform)
    out.split = "test"
    out.meta = dict(ds.meta, separate_test=False,
                    test_split=f"none: no separate test set, so the test figures are on the validation split "
                               f"({ds.meta['split_source']})")
    return out


def _folder_split(root: Path, split: str, val_fraction: float, seed: int, crop_pct: float, eval_crop: bool,
                  options: dict[str, Any]) -> ArrayDataset:
    """The split rules of an image folder: its own val/ and test/ folders when it has them; otherwise validation
    carved out of train (or test/ standing in, said loudly) and a test split that is the validation split (said)."""
    layout = folder_layout(root)

    def load(name: str) -> ArrayDataset:
        return load_imagefolder_split(layout, name, crop_pct=crop_pct, **options)

    def finish(ds: ArrayDataset) -> ArrayDataset:
        ds.split = split
        return eval_view(ds, crop_pct) if eval_crop and split != "train" and ds.meta["augment"] == "photo" else ds

    carve = "val" not in layout.folders and val_fraction > 0
    if split == "train":
        return _carve(load("train"), "train", val_fraction, seed) if carve else load("train")
    if split == "test" and "test" in layout.folders:
        ds = load("test")
        ds.meta.update(separate_test=True, test_split=ds.meta["split_source"])
        return finish(ds)
    if "val" in layout.folders:
        val = load("val")
    elif carve:
        val = _carve(load("train"), "val", val_fraction, seed)
    elif "test" in layout.folders:
        val = load("test")
        val.meta["split_source"] += " (no val/ folder and val_fraction=0: validation and test are the same images)"
        warnings.warn(f"{layout.root} has no val/ folder and val_fraction is 0: its test/ folder serves as the "
                      f"validation split too, so validation and test are the same images", stacklevel=3)
    else:
        raise ValueError(f"{layout.root} has no val/ (or test/) folder and val_fraction is 0: nothing to validate on; "
                         f"set data.val_fraction (e.g. 0.1; vitkit eval: --val-fraction) to carve a validation split "
                         f"out of the training images")
    return finish(val if split == "val" else _no_test(val))


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
    img_size: int | None = None,
    crop_pct: float = 0.875,
    augment: str = "auto",
    eval_crop: bool = True,
    **kind_kwargs: Any,
) -> ArrayDataset:
    """Build a split of a dataset as an :class:`ArrayDataset` (see the data contract in docs/data.md).

    ``val_fraction > 0`` carves a seeded, stratified validation split out of the training split (``split="train"``
    returns the remainder, ``"val"`` the carved part) for a dataset without validation data of its own; with
    ``val_fraction == 0`` a kind without its own val split serves its test split for ``"val"``. An image folder
    without a test/ folder serves its validation split for ``"test"``. ``ds.meta["split_source"]`` says where
    each split came from; :func:`split_summary` says it for a run.

    Image folders only: ``img_size`` (the training size; photos default to 224), ``crop_pct`` (photos are stored
    with their short side at ``img_size / crop_pct``; val and test come center-cropped to ``img_size``) and
    ``augment`` (``auto``: by the images' typical size, ``photo`` or ``small``) decide how images are stored.
    ``eval_crop=False`` keeps photo val/test at the stored size (for a per-sample eval transform that crops).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if bad_files not in BAD_FILE_POLICIES:
        raise ValueError(f"bad_files must be one of {BAD_FILE_POLICIES}, got {bad_files!r}")
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    if val_fraction and not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1) or 0, got {val_fraction}")
    kind, root = _resolve_kind(name_or_path)
    options = dict(kind_kwargs)
    if kind == "imagefolder":
        options.update(cache_dir=cache_dir, storage_size=storage_size, bad_files=bad_files, num_workers=num_workers,
                       img_size=img_size, augment=augment)
        return _folder_split(root, split, float(val_fraction), seed, crop_pct, eval_crop, options)
    if kind in ("cifar10", "cifar100"):
        options.update(cache_dir=cache_dir, storage_size=storage_size, bad_files=bad_files, num_workers=num_workers)
    elif storage_size is not None:
        warnings.warn(f"storage_size={storage_size} is ignored for {kind!r}: it is generated in memory at its own "
                      f"size (synthetic takes image_size=...)", stacklevel=2)
    if val_fraction and split in ("train", "val"):
        pool = _native_split(kind, root, "train", options)
        pool.meta["split_source"] = "train"
        ds = _carve(pool, split, float(val_fraction), seed)
    else:
        ds = _native_split(kind, root, split, options)
        ds.meta.setdefault("split_source", ds.split)
        if split == "val" and ds.meta["split_source"] == "test":
            ds.meta["split_source"] = "test (val_fraction=0: validation and test are the same images)"
    ds.split = split
    ds.meta.setdefault("augment", "small")
    ds.meta.setdefault("train_size", list(ds.image_size))
    if split == "test":
        ds.meta.setdefault("separate_test", True)
        ds.meta.setdefault("test_split", ds.meta["split_source"])
    return ds


def split_summary(train: ArrayDataset, val: ArrayDataset, test: ArrayDataset) -> dict[str, Any]:
    """What a run's summary says about its data: where each split came from, and which split the final (test)
    figures are on -- plainly "none: ..." when there is no separate test set."""
    return {"splits": {ds.split or name: ds.meta.get("split_source", name)
                       for name, ds in (("train", train), ("val", val), ("test", test))},
            "test_split": test.meta.get("test_split", test.meta.get("split_source", "test"))}


__all__ = ["SPLITS", "BAD_FILE_POLICIES", "build_dataset", "eval_view", "split_summary", "subset"]
