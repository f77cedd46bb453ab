"""ImageFolder roots (``<root>/{train,val|test}/<class>/<image>``) decoded once into the cache.

Layout problems are errors that name the path and what was expected; class order is the sorted folder names of
``train/``, and every other split must have exactly the same class folders.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .arrays import ArrayDataset
from .cache import cache_key, decode_files_into, entry_dir, file_fingerprint, load_or_build
from .decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, BadImageError

SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "test"), "test": ("test", "val")}


class DatasetLayoutError(ValueError):
    """A dataset folder that does not have the expected layout."""


def split_folder(root: Path, split: str) -> Path:
    """The folder serving ``split``: train/, val/ (else test/), test/ (else val/)."""
    if not root.is_dir():
        raise DatasetLayoutError(f"ImageFolder root {root} does not exist or is not a directory")
    for name in SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    found = sorted(p.name for p in root.iterdir())[:10]
    raise DatasetLayoutError(
        f"{root}: expected an ImageFolder root with a {' or '.join(f'{n}/' for n in SPLIT_FOLDERS[split])} folder "
        f"of class subfolders for split {split!r} (layout <root>/train/<class>/<image>, <root>/val/<class>/<image>); "
        f"found {found}"
    )


def class_folders(split_dir: Path) -> list[str]:
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        loose = [p.name for p in split_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS][:3]
        hint = f" (images directly inside it, e.g. {loose}: put them in class folders)" if loose else ""
        raise DatasetLayoutError(f"{split_dir}: expected one subfolder per class, found none{hint}")
    return classes


def _walk_images(folder: str) -> list[str]:
    """Image paths under ``folder``, recursively, in sorted order (hidden entries ignored)."""
    found: list[str] = []
    with os.scandir(folder) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    for e in entries:
        if e.is_dir():
            found += _walk_images(e.path)
        elif e.name.lower().endswith(IMAGE_EXTENSIONS):
            found.append(e.path)
    return found


def scan_split(split_dir: Path, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Image files (sorted, recursive within each class folder) and their labels."""
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        found = _walk_images(str(class_dir))
        if not found:
            raise DatasetLayoutError(
                f"class folder {class_dir} has no images (expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
            )
        files += found
        labels += [label] * len(found)
    return files, np.asarray(labels, np.int64)


def _storage_shape(storage_size: int | Sequence[int] | None, files: Sequence[str], max_pixels: int) -> tuple[int, int]:
    """(H, W) of the cache: ``storage_size`` square, else the size of the first readable image."""
    if storage_size is not None:
        h, w = (storage_size, storage_size) if isinstance(storage_size, int) else storage_size
        if int(h) < 1 or int(w) < 1:
            raise ValueError(f"storage_size must be positive, got {storage_size}")
        return int(h), int(w)
    for f in files[:100]:
        try:
            with Image.open(f) as im:
                if im.size[0] * im.size[1] <= max_pixels:
                    return im.size[1], im.size[0]
        except (OSError, SyntaxError, ValueError):
            continue
    raise DatasetLayoutError(f"{Path(files[0]).parent.parent}: none of the first 100 images could be read for a size")


def load_split(
    root: Path,
    split: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    storage_size: int | Sequence[int] | None = None,
    bad_files: str = "skip",
    num_workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ArrayDataset:
    """One split of an ImageFolder root as a memmap-backed dataset, decoding it into the cache on first use.

    Normalisation statistics always come from the train split (built too if needed) unless mean/std are given.
    ``max_pixels`` bounds width x height of any file (PIL's decompression-bomb limit by default).
    """
    from .loader import default_num_workers

    root = Path(root).expanduser().resolve()
    train_dir = split_folder(root, "train")
    classes = class_folders(train_dir)
    split_dir = split_folder(root, split)
    if split_dir != train_dir:
        other = class_folders(split_dir)
        if other != classes:
            missing, extra = sorted(set(classes) - set(other)), sorted(set(other) - set(classes))
            raise DatasetLayoutError(
                f"{split_dir}: class folders differ from {train_dir}: missing {missing}, unexpected {extra}"
            )
    files, labels = scan_split(split_dir, classes)
    size = _storage_shape(storage_size, files, max_pixels)
    key = cache_key(kind="imagefolder", classes=classes, files=file_fingerprint(files, split_dir), size=size,
                    max_pixels=max_pixels)
    workers = default_num_workers() if num_workers is None else int(num_workers)

    def build():
        def fill(images: np.ndarray) -> list:
            return decode_files_into(images, files, num_workers=workers, bad_files=bad_files, max_pixels=max_pixels,
                                     desc=f"decoding {root.name}/{split_dir.name}")

        meta = {"kind": "imagefolder", "root": str(root), "split_dir": str(split_dir), "classes": classes,
                "storage_size": list(size), "source_files": len(files)}
        return (len(files), *size, 3), labels, fill, meta

    entry, cache_info = load_or_build(entry_dir(cache_dir, root.name, split_dir.name, key), build)
    if not cache_info["hit"]:
        cache_info["workers"] = workers
    if entry.meta["skipped"] and bad_files == "error":  # an entry built under 'skip' must not hide them now
        path, reason = Path(entry.meta["skipped_report"]).read_text().splitlines()[0].split("\t", 1)
        raise BadImageError(path, reason)
    if entry.meta["skipped"]:
        warnings.warn(
            f"{entry.meta['skipped']} of {entry.meta['source_files']} images in {split_dir} could not be decoded and "
            f"were skipped; the list is in {entry.meta['skipped_report']}", stacklevel=3,
        )
    if mean is None or std is None:
        if split_dir == train_dir:
            mean, std = entry.meta["mean"], entry.meta["std"]
        else:
            train = load_split(root, "train", cache_dir=cache_dir, storage_size=size, bad_files=bad_files,
                               num_workers=num_workers, max_pixels=max_pixels)
            mean, std = train.mean, train.std
    meta = {"source": str(split_dir), "cache": cache_info,
            "skipped": entry.meta["skipped"], "skipped_report": entry.meta["skipped_report"],
            "split_source": split_dir.name}
    return ArrayDataset(entry.images, entry.labels, classes, mean, std, name=root.name, split=split, meta=meta)
