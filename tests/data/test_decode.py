"""Image decoding: JPEG headers and PIL's pixel limit refuse decompression bombs; corrupt bytes are named."""

from __future__ import annotations

import io

import pytest

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
