"""Fuzzing vitkit.data.decode: random bytes and mutated real images (flipped bytes, cut short, spliced, huge sizes
written into the header). Whatever the bytes, decoding returns a (3, H, W) uint8 tensor or raises the documented
BadImageError; no other exception may escape, and no decode may allocate past ``max_pixels``."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vitkit.data.decode import BadImageError, decode_rgb, decoded_size, read_many_rgb

MAX_PIXELS = 1 << 20  # small, so a mutated header claiming a huge image is refused instead of decoded
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _encoded(fmt: str, mode: str = "RGB", size=(24, 16), **save) -> bytes:
    image = Image.new(mode, size)
    image.putdata([((x * 37 + y * 11) % 256,) * len(mode) if mode not in ("L", "P", "I;16") else (x * 37 + y) % 256
                   for y in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


SEEDS = {
    "jpeg": _encoded("JPEG", quality=80),
    "jpeg_progressive": _encoded("JPEG", progressive=True),
    "jpeg_gray": _encoded("JPEG", "L"),
    "png": _encoded("PNG"),
    "png_rgba": _encoded("PNG", "RGBA"),
    "png_palette": _encoded("PNG", "P"),
    "png_16bit": _encoded("PNG", "I;16"),
    "webp": _encoded("WEBP"),
    "bmp": _encoded("BMP"),
    "gif": _encoded("GIF", "P"),
}


def _check(data: bytes, min_size=None) -> None:
    try:
        image = decode_rgb(data, "<fuzz>", max_pixels=MAX_PIXELS, min_size=min_size)
    except BadImageError:
        return
    assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
    assert image.shape[1] * image.shape[2] <= MAX_PIXELS


def _check_size(data: bytes) -> None:
    try:
        width, height = decoded_size(data, "<fuzz>", max_pixels=MAX_PIXELS)
    except BadImageError:
        return
    assert width * height <= MAX_PIXELS


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_images_decode(name):
    image = decode_rgb(SEEDS[name], name)
    assert image.shape == (3, 16, 24)


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_decode_or_raise_bad_image_error(data):
    _check(data)
    _check_size(data)


@st.composite
def mutated_images(draw):
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        else:  # another format's bytes in the middle
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            data[at:at + 32] = other[:32]
    return bytes(data)


@FUZZ
@given(data=mutated_images(), reduced=st.booleans())
def test_mutated_images_decode_or_raise_bad_image_error(data, reduced):
    _check(data, min_size=(4, 4) if reduced else None)
    _check_size(data)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but whose pixel data is tiny (a decompression bomb shape)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """The seed JPEG with its start-of-frame size rewritten."""
    data = bytearray(SEEDS["jpeg"])
    at = data.index(b"\xff\xc0") + 5
    data[at:at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


@FUZZ
@given(width=st.integers(0, 70000), height=st.integers(0, 70000), jpeg=st.booleans())
def test_header_sizes_are_checked_before_decoding(width, height, jpeg):
    data = (_jpeg_claiming if jpeg else _png_claiming)(min(width, 65535), min(height, 65535))
    _check(data)
    _check_size(data)


def test_read_many_rgb_returns_an_error_per_bad_file(tmp_path):
    """The batched path: one good JPEG, one mutated, one random; each bad file is its own BadImageError."""
    good = tmp_path / "good.jpg"
    good.write_bytes(SEEDS["jpeg"])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(SEEDS["jpeg"][: len(SEEDS["jpeg"]) // 3])
    noise = tmp_path / "noise.png"
    noise.write_bytes(bytes(range(256)) * 4)
    out = read_many_rgb([str(good), str(bad), str(noise)], max_pixels=MAX_PIXELS)
    assert isinstance(out[0], torch.Tensor) and out[0].shape == (3, 16, 24)
    assert isinstance(out[2], BadImageError) and "noise.png" in str(out[2])
    assert isinstance(out[1], (torch.Tensor, BadImageError))  # a cut JPEG may still decode (grey bottom rows)
