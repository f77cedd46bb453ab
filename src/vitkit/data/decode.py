"""Safe image decoding to uint8 RGB: libjpeg-turbo (torchvision.io) for JPEG, PIL for everything else.

Width x height is checked before any pixel is allocated, so decompression bombs are refused instead of running
the machine out of memory: baseline and grayscale JPEGs by reading their SOF header (see :func:`jpeg_header`), then
decoded in batches by ``torchvision.io.decode_jpeg`` (libjpeg-turbo, the fast path); everything else
(PNG, WebP, BMP, palette, CMYK, 16-bit, JPEGs libjpeg-turbo rejects) through PIL, whose ``Image.open`` checks the
size against the limit and whose ``convert("RGB")`` handles the modes. A caller that only needs a small image
(``min_size``) gets large JPEGs decoded at reduced size by the JPEG decoder itself.

Every decoder returns the image upright: the EXIF orientation a camera or phone records (rotated, mirrored) is
applied, as photo viewers, ``PIL.ImageOps.exif_transpose`` and transformers' ``load_image`` apply it, so a portrait
phone photo trains, evaluates and serves the way its owner sees it.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

try:  # deprecated since torchvision 0.29 in favour of torchcodec; without it every file goes through PIL
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - a future torchvision
    decode_jpeg = None

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
DEFAULT_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)  # PIL's decompression-bomb limit


class BadImageError(ValueError):
    """An image file that cannot be decoded safely; carries the path and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


EXIF_ORIENTATION = 0x0112  # the EXIF tag: 1 upright; 2-8 mirrored and/or rotated (the TIFF/EXIF numbering)
EXIF_SCAN_BYTES = 1 << 16  # the APP1 segment that holds EXIF is at most 64 KiB and comes before the pixels


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of encoded image bytes; 1 when there is none or it cannot be read (a broken EXIF
    block does not make the pixels unusable). PIL reads the tag; only files that carry EXIF are parsed at all."""
    if not _carries_exif(data):
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return _image_orientation(image)
    except Exception:  # noqa: BLE001 - any failure to read metadata means "no orientation"; pixels decide the rest
        return 1


def _carries_exif(data: bytes) -> bool:
    head = data[:EXIF_SCAN_BYTES]
    return any(mark in head for mark in (b"Exif", b"eXIf", b"EXIF"))  # JPEG's APP1, PNG's and WebP's chunks


def _image_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image (1 when it has none or it cannot be read)."""
    try:
        value = int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block does not make the pixels unusable
        return 1
    return value if 1 <= value <= 8 else 1


def upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """(..., H, W) pixels as stored -> as displayed, for EXIF ``orientation`` (what ``ImageOps.exif_transpose``
    does, on a tensor): 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate
    90 counter-clockwise."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1).contiguous()
    if orientation == 6:
        return torch.rot90(image, -1, dims=(-2, -1)).contiguous()
    if orientation == 7:
        return image.flip(-2, -1).transpose(-2, -1).contiguous()
    if orientation == 8:
        return torch.rot90(image, 1, dims=(-2, -1)).contiguous()
    return image


def _stored_size(size: Sequence[int] | None, orientation: int) -> Sequence[int] | None:
    """A wanted (H, W) of the upright image as (H, W) of the image as stored (orientations 5-8 swap the sides)."""
    return (size[1], size[0]) if size is not None and orientation >= 5 else size


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame; C4/C8/CC are DHT/JPG/DAC


def jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from a JPEG's start-of-frame segment, or None if it cannot be found.

    Kept instead of PIL's header read (``Image.open(...).size``): PIL's JPEG plugin parses every marker segment in
    Python, which makes decoding small JPEGs markedly slower (benchmarks/jpeg_header.py writes the comparison to
    benchmarks/results/jpeg_header.json). Only the frame size and component count are read; anything unusual
    returns None and goes to PIL.
    """
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in _SOF_MARKERS:
            if i + 10 > n:
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height, data[i + 9]
        if marker == 0xDA:  # start of scan before any frame header: malformed
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _check_pixels(width: int, height: int, path: str | os.PathLike, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise BadImageError(
            path, f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            f"(possible decompression bomb; raise max_pixels if the image is genuine)"
        )
    if width < 1 or height < 1:
        raise BadImageError(path, f"empty image ({width}x{height})")


def _open_checked(data: bytes, path: str | os.PathLike, max_pixels: int) -> Image.Image:
    """Parse the header only, refusing images whose pixel count exceeds ``max_pixels``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(path, f"refused as a possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise BadImageError(path, "not a recognised image (corrupt, or not an image file)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(path, f"unreadable image header ({exc})") from exc
    _check_pixels(*image.size, path, max_pixels)
    return image


#: PIL modes of 16-bit grayscale images (PNG, TIFF): values 0..65535
_WIDE_GRAY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def _pil_to_rgb(image: Image.Image, path: str | os.PathLike) -> torch.Tensor:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-with-transparency notices are not errors
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            if image.mode in _WIDE_GRAY_MODES:  # PIL's convert("RGB") clips 16-bit values at 255: scale them
                gray = np.asarray(image, dtype=np.float64) * (255 / 65535)
                rgb = np.repeat(np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
            else:
                rgb = np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(path, f"corrupt or truncated image data ({exc})") from exc
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def _libjpeg(data: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding", category=DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB)


def _fast_jpeg_header(data: bytes, path: str | os.PathLike, max_pixels: int) -> tuple[int, int, int] | None:
    """The JPEG header if ``data`` can go to libjpeg-turbo directly (size already checked against the limit)."""
    header = jpeg_header(data) if decode_jpeg is not None else None
    if header is None or header[2] not in (1, 3):  # not found, or CMYK/YCCK: PIL decides
        return None
    _check_pixels(header[0], header[1], path, max_pixels)
    return header


def _fast_jpeg(data: bytes, path: str | os.PathLike, max_pixels: int) -> bool:
    """Whether ``data`` can go to libjpeg-turbo directly (size already checked against the limit)."""
    return _fast_jpeg_header(data, path, max_pixels) is not None


def jpeg_draft_scale(width: int, height: int, min_size: Sequence[int] | None) -> int:
    """The DCT scaling denominator (1, 2, 4 or 8) a JPEG of ``width`` x ``height`` can be decoded at while both
    sides stay at least ``min_size`` = (H, W) -- the rule PIL's ``JpegImageFile.draft`` applies."""
    if min_size is None:
        return 1
    need_h, need_w = max(1, int(min_size[0])), max(1, int(min_size[1]))
    fits = min(width // need_w, height // need_h)
    return next((s for s in (8, 4, 2) if fits >= s), 1)


def _open_for_decode(
    data: bytes, path: str | os.PathLike, max_pixels: int, min_size: Sequence[int] | None,
) -> tuple[Image.Image, int]:
    """The opened image, set to decode at reduced size where ``min_size`` (of the upright image) allows, and its
    EXIF orientation, read from the same open."""
    image = _open_checked(data, path, max_pixels)
    # only asked when the bytes carry EXIF: PIL's getexif() decodes a whole PNG to look for its eXIf chunk
    orientation = _image_orientation(image) if _carries_exif(data) else 1
    stored_min = _stored_size(min_size, orientation)
    if stored_min is not None:
        # Only JPEG implements draft (decoding at 1/2, 1/4 or 1/8 in the DCT); for other formats it is a no-op.
        image.draft(None, (max(1, int(stored_min[1])), max(1, int(stored_min[0]))))
    return image, orientation


def _decode_pil(
    data: bytes, path: str | os.PathLike, max_pixels: int, min_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """PIL's decode, upright."""
    image, orientation = _open_for_decode(data, path, max_pixels, min_size)
    return upright(_pil_to_rgb(image, path), orientation)


def decoded_size(
    data: bytes, path: str | os.PathLike = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: Sequence[int] | None = None,
) -> tuple[int, int]:
    """(width, height) that ``decode_rgb(data, path, max_pixels, min_size)`` returns, from the header alone.

    Lets a caller judge what a decode will cost before it allocates any pixel. Raises :class:`BadImageError`
    where :func:`decode_rgb` refuses from the header (too many pixels, not an image); broken pixel data is only
    found by decoding.
    """
    if not data:
        raise BadImageError(path, "empty file")
    header = _fast_jpeg_header(data, path, max_pixels)
    if header is not None:
        orientation = exif_orientation(data)
        scale = jpeg_draft_scale(header[0], header[1], _stored_size(min_size, orientation))
        width, height = -(-header[0] // scale), -(-header[1] // scale)
    else:
        image, orientation = _open_for_decode(data, path, max_pixels, min_size)
        width, height = image.size
    return (height, width) if orientation >= 5 else (width, height)


def decode_rgb(
    data: bytes, path: str | os.PathLike = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Encoded bytes -> uint8 tensor (3, H, W). Raises :class:`BadImageError` for anything unsafe or broken.

    ``max_pixels`` limits the image's own width x height, read from its header. ``min_size`` = (H, W), for a
    caller that resizes the image down anyway (a model's eval transform): a JPEG at least twice that size on both
    sides is decoded at 1/2, 1/4 or 1/8 of its size by the JPEG decoder itself (PIL's ``Image.draft``), every side
    still at least ``min_size``'s, in a fraction of the time and memory of a full decode; the pixels differ
    slightly from a full decode followed by a resize. Other formats have no reduced decode and are decoded whole.
    """
    if not data:
        raise BadImageError(path, "empty file")
    header = _fast_jpeg_header(data, path, max_pixels)
    if header is not None:
        orientation = exif_orientation(data)
        if jpeg_draft_scale(header[0], header[1], _stored_size(min_size, orientation)) == 1:
            try:
                return upright(_libjpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)), orientation)
            except RuntimeError:
                pass  # let PIL have the final word (and give the error message) on JPEGs libjpeg-turbo rejects
    return _decode_pil(data, path, max_pixels, min_size)


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise BadImageError(path, f"cannot read file ({exc.strerror or exc})") from exc


def read_many_rgb(paths: Sequence[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> list[torch.Tensor | BadImageError]:
    """Decode many files; well-formed JPEGs in one batched ``decode_jpeg`` call (less per-image overhead).

    Returns, per path, the (3, H, W) tensor or the :class:`BadImageError` that refused it.
    """
    out: list[torch.Tensor | BadImageError | None] = [None] * len(paths)
    fast: list[tuple[int, bytes]] = []
    for i, path in enumerate(paths):
        try:
            data = read_bytes(path)
            if not data:
                raise BadImageError(path, "empty file")
            if _fast_jpeg(data, path, max_pixels):
                fast.append((i, data))
            else:
                out[i] = _decode_pil(data, path, max_pixels)
        except BadImageError as exc:
            out[i] = exc
    if fast:
        try:
            tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for _, data in fast]
            for (i, data), image in zip(fast, _libjpeg(tensors)):
                out[i] = upright(image, exif_orientation(data))
        except RuntimeError:  # one bad file fails the batch: decode these one by one to find it
            for i, data in fast:
                try:
                    out[i] = decode_rgb(data, paths[i], max_pixels)
                except BadImageError as exc:
                    out[i] = exc
    return out  # type: ignore[return-value]


def fit_to(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize (antialiased) so the image covers ``size`` = (H, W), then center-crop to it; a no-op if it matches.

    Works on (C, H, W) or batched (N, C, H, W) uint8 tensors.
    """
    h, w = int(size[0]), int(size[1])
    ih, iw = image.shape[-2:]
    if (ih, iw) == (h, w):
        return image
    scale = max(h / ih, w / iw)
    resized = TF.resize(image, [max(h, round(ih * scale)), max(w, round(iw * scale))], antialias=True)
    return TF.center_crop(resized, [h, w])
