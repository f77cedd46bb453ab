"""The decoded cache: every image decoded once into a uint8 (N, H, W, 3) ``.npy`` read back as an np.memmap.

An entry is a folder ``<cache_root>/<name>-<split>-<key>/`` holding images.npy, labels.npy, meta.json and, when
files were skipped, skipped.tsv. The key hashes the source file list with sizes and mtimes plus the storage size,
so a changed dataset gets a new entry instead of stale data. meta.json is written last and every file goes through
``atomic_path``, so an entry interrupted halfway (crash, Ctrl-C) has no meta.json and is never opened.

``vitkit cache <dataset> [--splits train val] [--storage-size 64] ...`` builds entries ahead of time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..utils.fileio import atomic_path, atomic_write_text, remove_stale_temporaries, temporary_beside
from .arrays import channel_stats
from .decode import DEFAULT_MAX_PIXELS, BadImageError, fit_to, read_many_rgb

CACHE_FORMAT = 2  # 2: images stored upright (EXIF orientation applied); entries of an older format are rebuilt
ENV_CACHE_DIR = "VITKIT_CACHE"

Failure = tuple[int, str, str]  # (row, path, reason)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$VITKIT_CACHE``, else ``.cache/vitkit`` under the working directory (the project)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env).expanduser() if env else Path.cwd() / ".cache" / "vitkit"


def file_fingerprint(files: Sequence[str | os.PathLike], base: str | os.PathLike) -> list[list[Any]]:
    """(path relative to ``base``, size, mtime_ns) per file: what decides whether a cache entry is still current."""
    prefix = len(os.fspath(base).rstrip(os.sep)) + 1
    rows = []
    for f in files:
        path = os.fspath(f)
        st = os.stat(path)
        rows.append([path[prefix:], st.st_size, st.st_mtime_ns])
    return rows


def cache_key(**parts: Any) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def entry_dir(cache_dir: str | os.PathLike | None, name: str, split: str, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "dataset"
    return cache_root(cache_dir) / f"{safe}-{split}-{key}"


@dataclass
class CacheEntry:
    directory: Path
    images: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def open_entry(directory: Path) -> CacheEntry | None:
    """A complete entry, or None when it is missing or was never finished."""
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(directory / "images.npy", mmap_mode="r")
        labels = np.load(directory / "labels.npy")
    except (OSError, ValueError) as exc:
        warnings.warn(f"ignoring unreadable cache entry {directory} ({exc}); it will be rebuilt", stacklevel=2)
        return None
    if meta.get("format") != CACHE_FORMAT or images.shape[0] != meta.get("count") or labels.shape != (images.shape[0],):
        return None
    return CacheEntry(directory, images, labels, meta)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def write_entry(
    directory: Path,
    shape: tuple[int, int, int, int],
    labels: np.ndarray,
    fill: Callable[[np.ndarray], list[Failure]],
    meta: dict[str, Any],
) -> CacheEntry:
    """Create an entry: ``fill`` writes rows into a (N, H, W, 3) memmap and returns the rows it could not fill.

    Failed rows are dropped (with their labels), listed in skipped.tsv and counted in meta; the per-channel
    mean/std of the stored images go into meta; meta.json goes last (so ``fill`` may still add to ``meta`` what it
    counted while decoding).
    """
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory)  # what a killed build left behind
    scratch = temporary_beside(directory / "images.npy", ".building.npy")
    try:
        images = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=shape)
        failures = sorted(fill(images))
        images.flush()
        keep = np.ones(shape[0], bool)
        keep[[row for row, _, _ in failures]] = False
        if not keep.any():
            first = "; ".join(f"{path}: {reason}" for _, path, reason in failures[:3])
            raise ValueError(f"none of the {shape[0]} images for {directory.name} could be decoded (e.g. {first})")
        with atomic_path(directory / "images.npy") as tmp:
            if keep.all():
                del images
                os.replace(scratch, tmp)
            else:
                kept_rows = np.flatnonzero(keep)
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(kept_rows.size, *shape[1:]))
                for start in range(0, kept_rows.size, 4096):
                    out[start : start + 4096] = images[kept_rows[start : start + 4096]]
                out.flush()
                del out, images
        _save_npy(directory / "labels.npy", np.asarray(labels, np.int64)[keep])
        mean, std = channel_stats(np.load(directory / "images.npy", mmap_mode="r"))
        report = directory / "skipped.tsv"
        if failures:
            atomic_write_text(report, "".join(f"{path}\t{reason}\n" for _, path, reason in failures))
        meta = dict(meta, format=CACHE_FORMAT, count=int(keep.sum()), mean=mean, std=std, skipped=len(failures),
                    skipped_report=str(report) if failures else None)
        atomic_write_text(directory / "meta.json", json.dumps(meta, indent=1))
    finally:
        scratch.unlink(missing_ok=True)
    entry = open_entry(directory)
    if entry is None:  # pragma: no cover - we just wrote it
        raise RuntimeError(f"cache entry {directory} could not be reopened after writing")
    return entry


def load_or_build(
    directory: Path,
    build: Callable[[], tuple[tuple[int, int, int, int], np.ndarray, Callable[[np.ndarray], list[Failure]], dict]],
) -> tuple[CacheEntry, dict[str, Any]]:
    """Open the entry at ``directory``, or build it from ``build() -> (shape, labels, fill, meta)``.

    Returns the entry and a report: directory, hit, and for a build its seconds and images/s.
    """
    entry = open_entry(directory)
    if entry is not None:
        return entry, {"directory": str(directory), "hit": True}
    t0 = time.perf_counter()
    shape, labels, fill, meta = build()
    entry = write_entry(directory, shape, labels, fill, meta)
    seconds = time.perf_counter() - t0
    return entry, {"directory": str(directory), "hit": False, "build_seconds": round(seconds, 3),
                   "images_per_second": round(shape[0] / seconds, 1), "source_images": shape[0]}


# -- parallel decode of image files -----------------------------------------------------------------------------


class _DecodeChunks(torch.utils.data.Dataset):
    """Chunk c -> (first row, uint8 (n, H, W, 3) array, [(row, reason)], sources upsampled): decoded in DataLoader
    worker processes."""

    def __init__(self, files: Sequence[str | os.PathLike], size: tuple[int, int], chunk: int, max_pixels: int) -> None:
        self.files = [str(f) for f in files]
        self.size = size
        self.chunk = chunk
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return -(-len(self.files) // self.chunk)

    def __getitem__(self, c: int) -> tuple[int, np.ndarray, list[tuple[int, str]], int]:
        start = c * self.chunk
        paths = self.files[start : start + self.chunk]
        out = np.zeros((len(paths), *self.size, 3), np.uint8)
        failures = []
        upsampled = 0
        for i, image in enumerate(read_many_rgb(paths, self.max_pixels)):
            if isinstance(image, BadImageError):
                failures.append((start + i, image.reason))
            else:
                upsampled += image.shape[-2] < self.size[0] or image.shape[-1] < self.size[1]
                out[i] = fit_to(image, self.size).permute(1, 2, 0).numpy()
        return start, out, failures, upsampled


def decode_files_into(
    images: np.ndarray,
    files: Sequence[str | os.PathLike],
    *,
    num_workers: int,
    bad_files: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    desc: str = "decoding",
    counts: dict[str, int] | None = None,
) -> list[Failure]:
    """Decode ``files[i]`` into ``images[i]`` with ``num_workers`` processes; returns the failures (policy 'skip')
    or raises :class:`BadImageError` at the first one (policy 'error').

    ``counts``, when given, receives ``upsampled``: the sources smaller than the stored size in either side (they
    were enlarged to fill it, so they carry less detail than their neighbours).
    """
    n = len(files)
    size = (int(images.shape[1]), int(images.shape[2]))
    chunk = int(np.clip(n // max(1, 8 * max(num_workers, 1)), 16, 512))
    loader = torch.utils.data.DataLoader(
        _DecodeChunks(files, size, chunk, max_pixels), batch_size=None, shuffle=False, num_workers=num_workers,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    failures: list[Failure] = []
    upsampled = 0
    with tqdm(total=n, unit="img", desc=desc, mininterval=0.5, file=sys.stderr) as bar:
        for start, block, bad, enlarged in loader:
            images[start : start + block.shape[0]] = block.numpy()
            upsampled += int(enlarged)
            for row, reason in bad:
                if bad_files == "error":
                    raise BadImageError(files[row], reason)
                failures.append((row, str(files[row]), reason))
            bar.update(int(block.shape[0]))
    if counts is not None:
        counts["upsampled"] = upsampled
    return failures


def subset_entry(parent: CacheEntry, rows: np.ndarray, tag: str) -> CacheEntry:
    """Rows of a cached entry as their own entry (a child folder), so carving a split never loads the parent."""
    rows = np.asarray(rows, np.int64)
    key = hashlib.sha256(rows.tobytes()).hexdigest()[:16]
    directory = parent.directory / "subsets" / f"{tag}-{key}"
    entry = open_entry(directory)
    if entry is not None:
        return entry

    def fill(images: np.ndarray) -> list[Failure]:
        for start in range(0, rows.size, 4096):
            images[start : start + 4096] = parent.images[rows[start : start + 4096]]
        return []

    meta = dict(parent.meta, parent=str(parent.directory), subset=tag, skipped=0)
    return write_entry(directory, (rows.size, *parent.images.shape[1:]), parent.labels[rows], fill, meta)


def mapped_entry(parent: CacheEntry, fn: Callable[[torch.Tensor], torch.Tensor], out_hw: tuple[int, int], tag: str
                 ) -> CacheEntry:
    """Every image of a cached entry through ``fn`` (uint8 (n, 3, H, W) -> (n, 3, *out_hw)) as its own entry (a
    child folder, built once, in chunks), e.g. the evaluation crop of a split stored larger for training."""
    directory = parent.directory / "mapped" / tag
    entry = open_entry(directory)
    if entry is not None:
        return entry
    n = parent.images.shape[0]

    def fill(images: np.ndarray) -> list[Failure]:
        for start in range(0, n, 256):
            block = torch.from_numpy(np.array(parent.images[start : start + 256])).permute(0, 3, 1, 2)
            images[start : start + 256] = fn(block).permute(0, 2, 3, 1).numpy()
        return []

    meta = dict(parent.meta, parent=str(parent.directory), mapped=tag, skipped=0)
    return write_entry(directory, (n, *out_hw, parent.images.shape[3]), parent.labels, fill, meta)
