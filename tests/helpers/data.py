"""Tiny on-the-fly datasets for the data tests: image folders with every format and bad-data case, fake CIFAR, and
the one finder of the shared real CIFAR-10 copy."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from vitkit.data import build_dataset

REPO = Path(__file__).resolve().parents[2]


def real_cifar10_root(split: str = "train") -> Path | None:
    """The shared JPEG CIFAR-10 copy (``$VITKIT_CIFAR10_DIR`` or ``<repo>/../shared/data/cifar10``), if it holds
    ``split``; tests that use it skip or fall back to synthetic images without it."""
    root = Path(os.environ.get("VITKIT_CIFAR10_DIR") or REPO.parent / "shared" / "data" / "cifar10")
    return root if (root / split).is_dir() else None


def solid(color: tuple[int, int, int], size: tuple[int, int] = (12, 12)) -> Image.Image:
    return Image.new("RGB", size, color)


def jpeg_bytes(image: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_image_folder(root: Path, *, val: bool = True, bad: bool = True) -> dict[str, int]:
    """``root/{train,val}/{cat,dog}`` with JPEG, PNG, WebP and BMP files, a grayscale PNG and a palette PNG.

    With ``bad`` the train split also gets a corrupt .jpg (random bytes) and a truncated .jpg. Returns the number
    of files per split (bad ones included).
    """
    rng = np.random.default_rng(0)
    cat, dog = root / "train" / "cat", root / "train" / "dog"
    cat.mkdir(parents=True)
    dog.mkdir(parents=True)
    (cat / "a.jpg").write_bytes(jpeg_bytes(solid((200, 30, 30))))
    (cat / "b.jpeg").write_bytes(jpeg_bytes(Image.fromarray(rng.integers(0, 255, (12, 12, 3), np.uint8))))
    solid((10, 200, 10)).save(cat / "c.png")
    solid((30, 30, 220)).save(cat / "d.webp", lossless=True)
    Image.new("L", (12, 12), 77).save(dog / "gray.png")
    palette = Image.new("P", (12, 12), 1)
    palette.putpalette([0, 0, 0, 250, 120, 5] + [0] * (256 * 3 - 6))
    palette.save(dog / "palette.png")
    solid((90, 90, 10)).save(dog / "e.bmp")
    (dog / "notes.txt").write_text("not an image, ignored by extension")
    counts = {"train": 7}
    if bad:
        (cat / "corrupt.jpg").write_bytes(rng.integers(0, 255, 300, np.uint8).tobytes())
        (dog / "truncated.jpg").write_bytes(jpeg_bytes(Image.fromarray(rng.integers(0, 255, (12, 12, 3), np.uint8)))[:200])
        counts["train"] += 2
    if val:
        for name, color in (("cat", (200, 30, 30)), ("dog", (90, 90, 10))):
            (root / "val" / name).mkdir(parents=True)
            solid(color).save(root / "val" / name / "v.png")
        counts["val"] = 2
    return counts


def _pickle_batch(path: Path, obj: dict) -> None:
    """Protocol 2 with bytes keys, like the official Python-2 pickles read with encoding='latin1'."""
    path.write_bytes(pickle.dumps({k.encode(): v for k, v in obj.items()}, protocol=2))


def cifar_rows(n: int, offset: int) -> np.ndarray:
    """(n, 3072) uint8 rows in the official layout (R plane, G plane, B plane); pixel values encode (image, channel)."""
    rows = np.zeros((n, 3, 32, 32), np.uint8)
    for i in range(n):
        for c in range(3):
            rows[i, c] = (offset + i) * 3 + c
    rows[:, 0, 0, 1] = 250  # a marker at row 0, column 1 of the red plane
    return rows.reshape(n, 3072)


def make_fake_cifar10(root: Path, per_batch: int = 4, test: int = 3) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(1, 6):
        _pickle_batch(folder / f"data_batch_{b}", {
            "batch_label": f"training batch {b} of 5", "labels": [(b + i) % 10 for i in range(per_batch)],
            "data": cifar_rows(per_batch, (b - 1) * per_batch), "filenames": [f"img{i}.png" for i in range(per_batch)],
        })
    _pickle_batch(folder / "test_batch", {
        "batch_label": "testing batch 1 of 1", "labels": list(range(test)), "data": cifar_rows(test, 50),
        "filenames": [f"t{i}.png" for i in range(test)],
    })
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle_batch(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return folder


def make_fake_cifar100(root: Path, n_train: int = 6, n_test: int = 2) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n, off in (("train", n_train, 0), ("test", n_test, 40)):
        _pickle_batch(folder / name, {"fine_labels": [i * 7 % 100 for i in range(n)],
                                      "coarse_labels": [i % 20 for i in range(n)], "data": cifar_rows(n, off)})
    _pickle_batch(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                    "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return folder


def build_cached(root, split="train", **kw):
    """``build_dataset`` of an image folder with its cache beside it (``root/../cache``), decoding in this process."""
    kw.setdefault("cache_dir", root.parent / "cache")
    kw.setdefault("num_workers", 0)
    return build_dataset(root, split, **kw)
