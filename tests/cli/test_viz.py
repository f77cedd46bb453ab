"""`vitkit viz attention | posembed | filters` end to end on a tiny checkpoint, in process."""

from __future__ import annotations

import argparse

import pytest
import torch
from torchvision.io import decode_png, read_file, write_png

import vitkit
from vitkit.cli import main
from vitkit.cli.viz import parse_size
from vitkit.models import VisionTransformer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=3,
                              reg_tokens=1)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    vitkit.save_checkpoint(model, path, metadata={"class_names": ["ant", "bee", "cat"], "mean": [0.5] * 3,
                                                  "std": [0.25] * 3})
    return path


def png_shape(path) -> tuple[int, ...]:
    image = decode_png(read_file(str(path)))
    assert image.float().std() > 10, f"{path} looks blank"
    return tuple(image.shape)


def test_attention_posembed_filters_write_pngs(checkpoint, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name, size in (("wide.png", (20, 40)), ("small.png", (16, 16))):
        write_png((torch.rand(3, *size) * 255).to(torch.uint8), str(images / name))
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "viz"
    assert main(["viz", "attention", str(checkpoint), str(images), "--out", str(out), "--head-fusion", "max",
                 "--discard-ratio", "0.5"]) == 0
    assert png_shape(out / "attention_wide.png")[0] in (3, 4)
    assert png_shape(out / "attention_small.png")[0] in (3, 4)
    assert "skipped" in capsys.readouterr().err  # the broken file is reported, the others are drawn
    assert main(["viz", "attention", str(checkpoint), str(images / "wide.png"), "--out", str(out / "big"),
                 "--size", "24x32"]) == 0
    assert png_shape(out / "big" / "attention_wide.png")
    assert main(["viz", "posembed", str(checkpoint), "--out", str(out)]) == 0
    assert main(["viz", "filters", str(checkpoint), "--out", str(out), "--count", "6"]) == 0
    assert png_shape(out / "posembed.png") and png_shape(out / "filters.png")


def test_clear_errors(checkpoint, tmp_path, capsys):
    image = tmp_path / "x.png"
    write_png(torch.zeros(3, 16, 16, dtype=torch.uint8), str(image))
    navit = tmp_path / "navit.safetensors"
    vitkit.save_checkpoint(vitkit.create_model("navit_tiny_patch4_32", depth=1, embed_dim=32, num_heads=2), navit)
    assert main(["viz", "attention", str(navit), str(image), "--out", str(tmp_path)]) == 2
    assert "NaViT" in capsys.readouterr().err
    assert main(["viz", "posembed", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["viz", "attention", str(checkpoint), str(image), "--size", "18", "--out", str(tmp_path)]) == 2
    assert "multiple of patch_size" in capsys.readouterr().err


def test_parse_size():
    assert parse_size("32") == (32, 32) and parse_size("24x32") == (24, 32)
    for bad in ("0", "a", "1x2x3"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)
