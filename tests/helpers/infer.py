"""Shared by the inference and CLI tests: a tiny checkpoint and a few real or synthetic images."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

import vitkit

from .data import real_cifar10_root

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def tiny_model(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    kwargs = dict(depth=2, embed_dim=32, num_heads=2)
    kwargs.update(overrides)
    return vitkit.create_model("vit_tiny_patch4_32", **kwargs).eval()


def save_tiny_checkpoint(path: Path, **overrides) -> Path:
    return vitkit.save_checkpoint(tiny_model(**overrides), path, metadata={"class_names": CLASS_NAMES})


def image_bytes(size=(40, 30), fmt="PNG", color=(200, 30, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def write_images(folder: Path, n: int = 3) -> list[Path]:
    """Real CIFAR-10 test JPEGs when the data is present, otherwise small synthetic PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    root = real_cifar10_root("test")
    paths = []
    for i in range(n):
        if root is not None:
            src = sorted((root / "test" / CLASS_NAMES[i]).glob("*.jpg"))[0]
            dst = folder / f"img{i}.jpg"
            dst.write_bytes(src.read_bytes())
        else:
            dst = folder / f"img{i}.png"
            dst.write_bytes(image_bytes(color=(40 * i, 100, 255 - 40 * i)))
        paths.append(dst)
    return paths
