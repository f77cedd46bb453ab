"""vitkit.data.decode at reduced size: a caller that resizes down anyway (``min_size``) gets large JPEGs decoded
by the JPEG decoder at 1/2, 1/4 or 1/8 scale, never below ``min_size``; other formats and callers are unchanged."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from vitkit.data.decode import BadImageError, decode_rgb, decoded_size, fit_to, jpeg_draft_scale


def _gradient(width: int, height: int) -> Image.Image:
    x = torch.linspace(0, 255, width).to(torch.uint8)
    y = torch.linspace(0, 255, height).to(torch.uint8)
    rgb = torch.stack([x.expand(height, width), y[:, None].expand(height, width),
                       torch.full((height, width), 90, dtype=torch.uint8)], dim=-1)
    return Image.fromarray(rgb.numpy())


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, quality=95) if fmt == "JPEG" else image.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("size, min_size, scale", [
    ((800, 600), (100, 100), 4),  # 600 // 100 = 6: the largest power of two <= 6
    ((800, 600), (75, 100), 8),
    ((800, 600), (300, 300), 2),
    ((800, 600), (301, 100), 1),  # half the height would be below 301
    ((800, 600), None, 1),
])
def test_draft_scale_keeps_both_sides_at_least_min_size(size, min_size, scale):
    assert jpeg_draft_scale(*size, min_size) == scale


def test_large_jpeg_is_decoded_at_reduced_size_that_still_covers_min_size():
    image = _gradient(1000, 700)
    data = _encoded(image, "JPEG")
    reduced = decode_rgb(data, "big.jpg", min_size=(160, 160))
    assert reduced.shape == (3, 175, 250)  # 1/4 scale: 700 // 160 = 4
    assert decoded_size(data, "big.jpg", min_size=(160, 160)) == (250, 175)
    full = decode_rgb(data, "big.jpg")
    assert full.shape == (3, 700, 1000)  # without min_size nothing changes
    # after the resize a model's transform makes anyway, the two decodes agree closely
    a, b = fit_to(reduced, (160, 160)).float(), fit_to(full, (160, 160)).float()
    assert (a - b).abs().mean() < 2.0


def test_min_size_leaves_small_jpegs_and_other_formats_alone():
    small = _encoded(_gradient(300, 200), "JPEG")
    assert decode_rgb(small, min_size=(160, 160)).shape == (3, 200, 300)
    png = _encoded(_gradient(1000, 700), "PNG")
    assert decode_rgb(png, min_size=(100, 100)).shape == (3, 700, 1000)
    assert decoded_size(png, min_size=(100, 100)) == (1000, 700)


def test_pixel_limit_applies_to_the_image_not_the_reduced_decode():
    data = _encoded(_gradient(1000, 700), "JPEG")
    for call in (decode_rgb, decoded_size):
        with pytest.raises(BadImageError, match="700000 pixels exceeds the limit of 100000"):
            call(data, "big.jpg", max_pixels=100_000, min_size=(50, 50))
    with pytest.raises(BadImageError, match="not a recognised image"):
        decoded_size(b"certainly not an image", "x.png")
