"""Reading a JPEG's size before decoding it: vitkit's SOF-segment parser vs PIL's header read.

vitkit checks width x height against the pixel limit before libjpeg-turbo allocates anything. This measures what
that check costs per image with the parser in vitkit.data.decode and with PIL instead (its JPEG plugin, which
``Image.open`` uses, reads every marker segment in Python), alone and inside ``read_many_rgb`` (file read + header +
batched libjpeg-turbo decode), on one thread, for small, ImageNet-eval and typical photo sizes.

    python benchmarks/jpeg_header.py [--images 64] [--repeats 15]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import timeit
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, JpegImagePlugin

from vitkit.data import decode
from vitkit.runtime import machine_info
from vitkit.utils.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
SIZES = ((32, 32), (224, 224), (500, 375))


def pil_jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """decode.jpeg_header's contract, answered by PIL's JPEG plugin (no decompression-bomb check of its own)."""
    if data[:2] != b"\xff\xd8":
        return None
    try:
        image = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    except (OSError, SyntaxError, ValueError):
        return None
    return (*image.size, image.layers)


def _jpeg(width: int, height: int, rng: np.random.Generator) -> bytes:
    ramp = np.linspace(0, 180, width)[None, :, None]
    pixels = (rng.random((height, width, 3)) * 64 + ramp).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _best_us(fn, number: int, repeats: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeats)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="files per size for the read_many_rgb timing")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "jpeg_header.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    parsers = {"sof_parser": decode.jpeg_header, "pil": pil_jpeg_header}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in SIZES:
            data = _jpeg(width, height, rng)
            paths = []
            for k in range(args.images):
                path = Path(tmp) / f"{width}x{height}_{k}.jpg"
                path.write_bytes(_jpeg(width, height, rng))
                paths.append(str(path))
            row: dict = {"jpeg_bytes": len(data)}
            for name, header in parsers.items():
                assert header(data) == (width, height, 3)
                row[f"{name}_header_us"] = round(_best_us(lambda h=header, d=data: h(d), 2000, args.repeats), 2)
            per_image = {name: [] for name in parsers}
            for _ in range(args.repeats):  # interleaved, so a busy moment on a shared machine hits both
                for name, header in parsers.items():
                    decode.jpeg_header = header  # what _fast_jpeg calls
                    per_image[name].append(_best_us(lambda p=paths: decode.read_many_rgb(p), 1, 1) / len(paths))
            decode.jpeg_header = parsers["sof_parser"]
            for name, times in per_image.items():
                row[f"{name}_read_many_rgb_us_per_image"] = round(min(times), 1)
            row["pil_slowdown_read_many_rgb"] = round(
                row["pil_read_many_rgb_us_per_image"] / row["sof_parser_read_many_rgb_us_per_image"], 3
            )
            results[f"{width}x{height}"] = row
            print(f"{width}x{height}: {row}")
    report = {
        "benchmark": "jpeg_header", "threads": 1, "images_per_size": args.images, "repeats": args.repeats,
        "pillow": PIL.__version__, "machine": machine_info(), "results": results,
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
