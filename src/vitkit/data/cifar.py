"""CIFAR-10 / CIFAR-100 from the official python release (``cifar-10-batches-py``, ``cifar-100-python``).

The batch files are pickles, and unpickling can run arbitrary code, so they are read with an Unpickler that
resolves only numpy's array-reconstruction functions (plus ``_codecs.encode`` used by protocol-2 bytes);
everything else in them is builtin containers. Download is opt-in (``download=True``), from the official URL with
the md5 sums torchvision publishes, and never happens in tests.
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .arrays import ArrayDataset
from .cache import cache_key, cache_root, entry_dir, file_fingerprint, load_or_build
from .decode import fit_to

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list: refused instead of executed."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: CIFAR batch files hold only dicts, lists and numpy arrays"
            )
        if module.startswith("numpy.core."):  # numpy >= 2 keeps these under numpy._core
            try:
                return getattr(importlib.import_module("numpy._core." + module.split(".", 2)[2]), name)
            except ImportError:  # pragma: no cover - numpy 1.x
                pass
        return getattr(importlib.import_module(module), name)


def load_batch(path: str | os.PathLike) -> dict[str, Any]:
    """Read one official CIFAR batch/meta pickle safely; keys come back as str."""
    with open(path, "rb") as fh:
        try:
            obj = _ArrayOnlyUnpickler(fh, encoding="latin1").load()
        except UnsafePickleError as exc:
            raise UnsafePickleError(f"{path}: {exc}") from exc
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable CIFAR python batch ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict in a CIFAR batch file, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _layout(kind: str):
    from torchvision.datasets import CIFAR10, CIFAR100

    return CIFAR10 if kind == "cifar10" else CIFAR100


def batches_folder(kind: str, root: str | os.PathLike | None, download: bool, cache_dir: Any = None) -> Path:
    """The folder holding the batch files; downloads into ``root`` first when asked and absent."""
    spec = _layout(kind)
    if root is None:
        if not download:
            raise ValueError(f"{kind} needs root=<folder containing {spec.base_folder}/> (or download=True)")
        root = cache_root(cache_dir) / "downloads"
    root = Path(root).expanduser()
    folder = root if (root / spec.train_list[0][0]).is_file() else root / spec.base_folder
    expected = [name for name, _ in spec.train_list + spec.test_list] + [spec.meta["filename"]]
    missing = [n for n in expected if not (folder / n).is_file()]
    if missing and download:
        from torchvision.datasets.utils import check_integrity, download_and_extract_archive

        download_and_extract_archive(spec.url, download_root=str(root), filename=spec.filename, md5=spec.tgz_md5)
        folder = root / spec.base_folder
        bad = [n for n, md5 in spec.train_list + spec.test_list if not check_integrity(str(folder / n), md5)]
        if bad:
            raise ValueError(f"{folder}: downloaded files failed their md5 check: {bad}")
        missing = [n for n in expected if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: missing {kind} files {missing} (expected the official python release layout "
            f"{spec.base_folder}/{{{', '.join(expected)}}})"
        )
    return folder


def read_split(kind: str, folder: Path, split: str, label_mode: str = "fine") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 (N, 32, 32, 3), labels int64, class names) of the 'train' or 'test' batches."""
    spec = _layout(kind)
    files = spec.train_list if split == "train" else spec.test_list
    if kind == "cifar10":
        label_key, names_key = "labels", "label_names"
    elif label_mode in ("fine", "coarse"):
        label_key, names_key = f"{label_mode}_labels", f"{label_mode}_label_names"
    else:
        raise ValueError(f"cifar100 label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    classes = [str(c) for c in load_batch(folder / spec.meta["filename"])[names_key]]
    images, labels = [], []
    for name, _ in files:
        batch = load_batch(folder / name)
        if "data" not in batch or label_key not in batch:
            raise ValueError(f"{folder / name}: expected keys 'data' and {label_key!r}, found {sorted(batch)}")
        data = batch["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ValueError(f"{folder / name}: 'data' must be uint8 (N, 3072), got {got}")
        if len(batch[label_key]) != data.shape[0]:
            raise ValueError(f"{folder / name}: {data.shape[0]} images but {len(batch[label_key])} labels")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], np.int64))
    return np.concatenate(images), np.concatenate(labels), classes


def load_split(
    kind: str,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    label_mode: str = "fine",
    cache_dir: str | os.PathLike | None = None,
    storage_size: int | Sequence[int] | None = None,
    bad_files: str = "skip",
    num_workers: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ArrayDataset:
    """A CIFAR split through the cache (resized to ``storage_size`` when given); 'val' serves the test batches."""
    del bad_files, num_workers  # the batches are already decoded arrays: nothing to skip, nothing to parallelise
    source_split = "train" if split == "train" else "test"
    folder = batches_folder(kind, root, download, cache_dir)
    spec = _layout(kind)
    size = (32, 32) if storage_size is None else (
        (storage_size, storage_size) if isinstance(storage_size, int) else tuple(int(s) for s in storage_size))
    sources = [folder / n for n, _ in (spec.train_list if source_split == "train" else spec.test_list)]
    sources.append(folder / spec.meta["filename"])
    key = cache_key(kind=kind, files=file_fingerprint(sources, folder), size=list(size), label_mode=label_mode)

    def build():
        images, labels, classes = read_split(kind, folder, source_split, label_mode)

        def fill(out: np.ndarray) -> list:
            for start in range(0, images.shape[0], 1024):
                block = torch.from_numpy(np.ascontiguousarray(images[start : start + 1024])).permute(0, 3, 1, 2)
                out[start : start + 1024] = fit_to(block, size).permute(0, 2, 3, 1).numpy()
            return []

        meta = {"kind": kind, "root": str(folder), "classes": classes, "storage_size": list(size),
                "label_mode": label_mode, "source_files": int(images.shape[0])}
        return (images.shape[0], *size, 3), labels, fill, meta

    entry, cache_info = load_or_build(entry_dir(cache_dir, kind, source_split, key), build)
    if mean is None or std is None:
        if source_split == "train":
            mean, std = entry.meta["mean"], entry.meta["std"]
        else:
            train = load_split(kind, "train", root=root, download=download, label_mode=label_mode,
                               cache_dir=cache_dir, storage_size=storage_size)
            mean, std = train.mean, train.std
    meta = {"source": str(folder), "cache": cache_info,
            "split_source": source_split, "label_mode": label_mode if kind == "cifar100" else None}
    return ArrayDataset(entry.images, entry.labels, entry.meta["classes"], mean, std, name=kind, split=split,
                        meta=meta)
