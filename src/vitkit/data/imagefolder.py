"""Image folders decoded once into the cache: the layouts a user has, and the size their images are stored at.

Two layouts are accepted (what torchvision's ImageFolder takes, and the split folders of most photo sets):

- a plain class folder ``<root>/<class>/<image>``: all of it is the training split (the validation split is carved
  out of it by datasets.build_dataset);
- split folders ``<root>/train/<class>/<image>`` with ``val/`` and/or ``test/`` beside it, each with the same class
  folders as ``train/``.

Class order is the sorted folder names of the training folder. Layout problems are errors that name the path and
what was expected.

The stored size follows the training resolution, never one file: photos are stored with their short side at
``img_size / crop_pct`` (so a random-resized crop has room, and the evaluation resize + center crop is a crop of the
stored image; rounded down, as timm does); CIFAR-sized images (a typical short side of at most :data:`SMALL_IMAGE_SIDE`) are stored at the
training size. Smaller sources are upsampled, and counted.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .arrays import ArrayDataset
from .cache import cache_key, decode_files_into, entry_dir, file_fingerprint, load_or_build
from .decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, BadImageError
from .files import walk_images

SPLIT_FOLDERS = ("train", "val", "test")
AUGMENTS = ("auto", "photo", "small")
SMALL_IMAGE_SIDE = 64  # sources whose typical short side is at most this are CIFAR-sized: pad-crop, stored as is
PHOTO_SIZE = 224  # the training size of photos when no img_size is given (the size ViTs are pretrained at)
SIZE_SAMPLE = 64  # files whose headers decide the typical source size (spread evenly over the sorted list)


class DatasetLayoutError(ValueError):
    """A dataset folder that does not have the expected layout."""


@dataclass(frozen=True)
class FolderLayout:
    """What an image-folder root holds: its split folders (``train`` always; ``val``, ``test`` when present)."""

    root: Path
    kind: str  # "classes": <root>/<class>/<image>; "splits": <root>/{train,val,test}/<class>/<image>
    folders: dict[str, Path]
    classes: list[str]

    def describe(self, split: str) -> str:
        """The folder serving ``split`` as the user knows it, e.g. ``hymenoptera/val``."""
        folder = self.folders[split]
        return self.root.name if folder == self.root else f"{self.root.name}/{folder.name}"


def class_folders(split_dir: Path) -> list[str]:
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        loose = [p.name for p in split_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS][:3]
        hint = f" (images directly inside it, e.g. {loose}: put them in class folders)" if loose else ""
        raise DatasetLayoutError(
            f"{split_dir}: expected one subfolder per class (<root>/<class>/<image>, or <root>/train/<class>/<image> "
            f"with val/ and test/ beside train/), found none{hint}")
    return classes


def folder_layout(root: str | os.PathLike) -> FolderLayout:
    """The layout of ``root``: split folders when it has a train/, val/ or test/ folder, else a plain class folder."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetLayoutError(f"image folder {root} does not exist or is not a directory")
    present = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    if not present:
        return FolderLayout(root, "classes", {"train": root}, class_folders(root))
    if "train" not in present:
        raise DatasetLayoutError(
            f"{root}: has {', '.join(f'{n}/' for n in present)} but no train/ folder (expected <root>/train/<class>/"
            f"<image> beside it, or pass a plain class folder <root>/<class>/<image>)")
    folders = {name: root / name for name in present}
    classes = class_folders(folders["train"])
    for name in present[1:]:
        other = class_folders(folders[name])
        if other != classes:
            missing, extra = sorted(set(classes) - set(other)), sorted(set(other) - set(classes))
            raise DatasetLayoutError(
                f"{folders[name]}: class folders differ from {folders['train']}: missing {missing}, unexpected {extra}")
    return FolderLayout(root, "splits", folders, classes)


def split_folder(root: Path, split: str) -> Path:
    """The folder holding ``split`` (train/, val/, test/; the root itself for the training split of a class folder)."""
    layout = folder_layout(root)
    if split not in layout.folders:
        raise DatasetLayoutError(f"{layout.root}: no {split}/ folder (found {', '.join(sorted(layout.folders))})")
    return layout.folders[split]


def scan_split(split_dir: Path, classes: Sequence[str], ignored: list[str] | None = None
               ) -> tuple[list[str], np.ndarray]:
    """Image files (sorted, recursive within each class folder) and their labels; files in image formats that are
    not decoded (GIF, TIFF, ...) go to ``ignored``."""
    files: list[str] = []
    labels: list[int] = []
    ignored = [] if ignored is None else ignored
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        found = walk_images(class_dir, ignored)
        if not found:
            raise DatasetLayoutError(
                f"class folder {class_dir} has no images (expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
            )
        files += found
        labels += [label] * len(found)
    return files, np.asarray(labels, np.int64)


def typical_short_side(files: Sequence[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The median short side of up to :data:`SIZE_SAMPLE` files spread over ``files`` (headers only): one odd file,
    however it sorts, does not decide it."""
    picks = np.unique(np.linspace(0, len(files) - 1, min(SIZE_SAMPLE, len(files))).round().astype(int))
    sides = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a bomb is refused, with its reason, when the files are decoded
        for i in picks:
            try:
                with Image.open(files[i]) as im:
                    if 0 < im.size[0] * im.size[1] <= max_pixels:
                        sides.append(min(im.size))
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                continue
    if not sides:
        raise DatasetLayoutError(f"{Path(files[0]).parent.parent}: none of {len(picks)} sampled images could be read")
    return int(np.median(sides))


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"sizes must be positive, got {size}")
    return int(h), int(w)


def photo_storage_side(img_size: int, crop_pct: float) -> int:
    """Short side stored for photos trained at ``img_size``: the evaluation resize, ``img_size / crop_pct`` rounded
    down as timm and the preprocessing spec round it (224 / 0.875 = 256), so the evaluation center crop is a crop
    of the stored image."""
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return max(int(img_size), math.floor(img_size / crop_pct + 1e-9))


@dataclass(frozen=True)
class StoragePlan:
    """How a folder's images are stored and trained: decided once from the training folder, used by every split."""

    augment: str  # "photo": random-resized crops of the stored image; "small": pad-crop of the whole image
    storage: tuple[int, int]  # (H, W) of every stored image
    train_size: tuple[int, int]  # (H, W) the model trains at
    source_side: int  # the typical short side of the source files

    def as_dict(self) -> dict[str, Any]:
        return {"augment": self.augment, "storage_size": list(self.storage), "train_size": list(self.train_size),
                "source_short_side": self.source_side}


def plan_storage(train_files: Sequence[str], *, storage_size: int | Sequence[int] | None = None,
                 img_size: int | None = None, crop_pct: float = 0.875, augment: str = "auto",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> StoragePlan:
    """The stored and training sizes: ``storage_size`` when given; photos at ``img_size / crop_pct`` (img_size
    default :data:`PHOTO_SIZE`); CIFAR-sized images at ``img_size``, else at their typical size."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    side = typical_short_side(train_files, max_pixels)
    if augment == "auto":
        augment = "small" if side <= SMALL_IMAGE_SIDE else "photo"
    if augment == "photo":
        train = int(img_size or PHOTO_SIZE)
        storage = _pair(storage_size) if storage_size is not None else (photo_storage_side(train, crop_pct),) * 2
        return StoragePlan("photo", storage, (train, train), side)
    storage = _pair(storage_size) if storage_size is not None else (int(img_size or side),) * 2
    return StoragePlan("small", storage, storage, side)


def load_split(
    root: str | os.PathLike | FolderLayout,
    split: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    storage_size: int | Sequence[int] | None = None,
    img_size: int | None = None,
    crop_pct: float = 0.875,
    augment: str = "auto",
    bad_files: str = "skip",
    num_workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ArrayDataset:
    """The images of one split folder (``train``, ``val`` or ``test``) as a memmap-backed dataset, decoding it into
    the cache on first use, at the size :func:`plan_storage` decides from the training folder.

    Normalisation statistics always come from the training folder (built too if needed) unless mean/std are given.
    ``max_pixels`` bounds width x height of any file (PIL's decompression-bomb limit by default).
    ``ds.meta`` holds the plan (augment, storage_size, train_size), the folder, the source file of every row
    (``files``) and the cache report (with ``upsampled``: the sources smaller than the stored size).
    """
    from .loader import default_num_workers

    layout = root if isinstance(root, FolderLayout) else folder_layout(root)
    if split not in layout.folders:
        raise DatasetLayoutError(f"{layout.root}: no {split}/ folder (found {', '.join(sorted(layout.folders))})")
    classes = layout.classes
    train_ignored: list[str] = []
    train_files, train_labels = scan_split(layout.folders["train"], classes, train_ignored)
    plan = plan_storage(train_files, storage_size=storage_size, img_size=img_size, crop_pct=crop_pct,
                        augment=augment, max_pixels=max_pixels)
    split_dir = layout.folders[split]
    if split == "train":
        files, labels, ignored = train_files, train_labels, train_ignored
    else:
        ignored = []
        files, labels = scan_split(split_dir, classes, ignored)
    size = plan.storage
    key = cache_key(kind="imagefolder", classes=classes, files=file_fingerprint(files, split_dir), size=size,
                    max_pixels=max_pixels)
    workers = default_num_workers() if num_workers is None else int(num_workers)
    name = layout.describe(split)

    def build():
        meta = {"kind": "imagefolder", "root": str(layout.root), "split_dir": str(split_dir), "classes": classes,
                "storage_size": list(size), "source_files": len(files)}

        def fill(images: np.ndarray) -> list:
            counts: dict[str, int] = {}
            failures = decode_files_into(images, files, num_workers=workers, bad_files=bad_files,
                                         max_pixels=max_pixels, desc=f"decoding {name}", counts=counts)
            meta["upsampled"] = counts.get("upsampled", 0)  # write_entry stores meta after filling
            return failures

        return (len(files), *size, 3), labels, fill, meta

    entry, cache_info = load_or_build(entry_dir(cache_dir, layout.root.name, split_dir.name, key), build)
    cache_info["upsampled"] = entry.meta.get("upsampled")
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
    if ignored:
        warnings.warn(f"{len(ignored)} file(s) in {split_dir} are in image formats vitkit does not read and were "
                      f"ignored: {', '.join(Path(p).name for p in ignored[:3])}", stacklevel=3)
    if mean is None or std is None:
        if split == "train":
            mean, std = entry.meta["mean"], entry.meta["std"]
        else:
            with warnings.catch_warnings():  # the training folder's own load reports its files
                warnings.simplefilter("ignore")
                train = load_split(layout, "train", cache_dir=cache_dir, storage_size=size,
                                   img_size=plan.train_size[0], crop_pct=crop_pct, augment=plan.augment,
                                   bad_files=bad_files, num_workers=num_workers, max_pixels=max_pixels)
            mean, std = train.mean, train.std
    kept = files
    if entry.meta["skipped"]:
        dropped = {line.split("\t", 1)[0] for line in Path(entry.meta["skipped_report"]).read_text().splitlines()}
        kept = [f for f in files if f not in dropped]
    meta = {"kind": "imagefolder", "source": str(split_dir), "files": kept, "cache": cache_info,
            "skipped": entry.meta["skipped"],
            "skipped_report": entry.meta["skipped_report"], "ignored_files": len(ignored), "split_source": name,
            "layout": layout.kind, **plan.as_dict()}
    return ArrayDataset(entry.images, entry.labels, classes, mean, std, name=layout.root.name, split=split, meta=meta)


__all__ = ["AUGMENTS", "DatasetLayoutError", "FolderLayout", "PHOTO_SIZE", "SMALL_IMAGE_SIDE", "StoragePlan",
           "class_folders", "folder_layout", "load_split", "photo_storage_side", "plan_storage", "scan_split",
           "split_folder", "typical_short_side"]
