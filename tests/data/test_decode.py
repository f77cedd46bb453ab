"""Image decoding: JPEG headers and PIL's pixel limit refuse decompression bombs; corrupt bytes are named."""

from __future__ import annotations

import io

import pytest
import torch

from tests.helpers.data import jpeg_bytes, solid
from vitkit.data.decode import BadImageError, decode_rgb, jpeg_header


def test_jpeg_header_claiming_a_huge_size_is_refused_before_decoding():
    data = bytearray(jpeg_bytes(solid((5, 5, 5), (16, 16))))
    w, h, comps = jpeg_header(bytes(data))
    assert (w, h, comps) == (16, 16, 3)
    sof = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2  # height, width
    with pytest.raises(BadImageError, match="60000x60000 .* decompression bomb"):
        decode_rgb(bytes(data), "bomb.jpg")


def test_pil_bomb_check_and_corrupt_bytes():
    buf = io.BytesIO()
    solid((1, 2, 3), (64, 64)).save(buf, "PNG")
    with pytest.raises(BadImageError, match="4096 pixels exceeds the limit of 100"):
        decode_rgb(buf.getvalue(), "x.png", max_pixels=100)
    with pytest.raises(BadImageError, match="empty file"):
        decode_rgb(b"", "e.jpg")
    with pytest.raises(BadImageError, match="not a recognised image"):
        decode_rgb(b"hello world, certainly not an image", "t.jpg")


def test_16_bit_grayscale_pngs_are_scaled_not_saturated(tmp_path):
    import io

    import numpy as np
    from PIL import Image

    from vitkit.data.decode import decode_rgb, read_many_rgb

    values = np.array([[0, 257, 40000, 65535]], np.uint16)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "I;16"
    expected = [0, 1, 156, 255]  # 40000/65535 of the 8-bit range, where a clip would give 255
    assert decode_rgb(buf.getvalue())[:, 0, :].tolist() == [expected] * 3
    (tmp_path / "wide.png").write_bytes(buf.getvalue())
    assert read_many_rgb([str(tmp_path / "wide.png")])[0][0, 0].tolist() == expected


def _with_orientation(image, fmt: str, orientation: int, **save) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, fmt, exif=exif.tobytes(), **save)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_by_every_decoder_as_pil_applies_it(tmp_path, orientation):
    """A rotated or mirrored phone photo comes out upright: PNG and WebP equal PIL's exif_transpose pixel for pixel;
    a JPEG (libjpeg-turbo, batched too) equals the same JPEG without the tag turned upright; sizes follow."""
    import numpy as np
    from PIL import Image, ImageOps

    from vitkit.data.decode import decoded_size, exif_orientation, read_many_rgb, upright

    pixels = np.random.default_rng(orientation).integers(0, 255, (6, 10, 3), np.uint8)  # H 6, W 10: not square
    image = Image.fromarray(pixels)
    for fmt, save in (("PNG", {}), ("WEBP", {"lossless": True})):
        data = _with_orientation(image, fmt, orientation, **save)
        assert exif_orientation(data) == orientation
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
        decoded = decode_rgb(data, f"x.{fmt}").permute(1, 2, 0).numpy()
        assert decoded.shape == expected.shape and (decoded == expected).all(), fmt
        assert decoded_size(data) == (expected.shape[1], expected.shape[0])
    plain, tagged = jpeg_bytes(image, quality=100), _with_orientation(image, "JPEG", orientation, quality=100)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(tagged))).convert("RGB")).shape  # H, W, C
    reference = decode_rgb(plain, "p.jpg")
    rotated = decode_rgb(tagged, "t.jpg")
    assert tuple(rotated.shape[1:]) == shown[:2] and decoded_size(tagged) == (shown[1], shown[0])
    assert torch.equal(rotated, upright(reference, orientation))
    (tmp_path / "t.jpg").write_bytes(tagged)
    (tmp_path / "p.jpg").write_bytes(plain)
    batch = read_many_rgb([str(tmp_path / "t.jpg"), str(tmp_path / "p.jpg")])
    assert torch.equal(batch[0], rotated) and torch.equal(batch[1], reference)


def test_a_large_rotated_jpeg_decoded_at_reduced_size_is_upright_and_still_covers_min_size():
    import numpy as np
    from PIL import Image

    from vitkit.data.decode import decoded_size

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 128, 3), np.uint8))  # stored 128 wide
    data = _with_orientation(image, "JPEG", 6)  # shown rotated: 64 wide, 128 tall
    out = decode_rgb(data, "r.jpg", min_size=(64, 32))  # (H, W) of the upright image
    assert tuple(out.shape) == (3, 64, 32) and decoded_size(data, min_size=(64, 32)) == (32, 64)
    assert tuple(decode_rgb(data, "r.jpg").shape) == (3, 128, 64)
