"""Which files of a folder are images: one rule for training (image folders) and inference (`vitkit predict`).

Hidden entries (a leading dot: .DS_Store, ._IMG_1.jpg from macOS, .ipynb_checkpoints/) are skipped at every level;
files vitkit decodes (decode.IMAGE_EXTENSIONS) are listed depth-first in name order; image formats it does not
decode (GIF, TIFF, HEIC, ...) are reported, so a user learns why a file was left out.
"""

from __future__ import annotations

import os
from pathlib import Path

from .decode import IMAGE_EXTENSIONS

UNSUPPORTED_IMAGE_EXTENSIONS = (".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".svg")


def walk_images(folder: str | os.PathLike, ignored: list[str] | None = None) -> list[str]:
    """Image paths under ``folder``, recursively, depth-first in name order; unsupported formats go to ``ignored``."""
    found: list[str] = []
    with os.scandir(folder) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    for e in entries:
        if e.is_dir():
            found += walk_images(e.path, ignored)
        elif e.name.lower().endswith(IMAGE_EXTENSIONS):
            found.append(e.path)
        elif ignored is not None and e.name.lower().endswith(UNSUPPORTED_IMAGE_EXTENSIONS):
            ignored.append(e.path)
    return found


def find_images(folder: str | os.PathLike) -> list[Path]:
    """The images of ``folder`` as training reads it (see walk_images)."""
    return [Path(p) for p in walk_images(folder)]


__all__ = ["walk_images", "find_images", "UNSUPPORTED_IMAGE_EXTENSIONS"]
