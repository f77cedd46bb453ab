"""The service's decoding under a pixel flood: ImageDecoder in-process, and a real `vitkit serve` whose memory is
watched while large PNGs and JPEGs arrive at once."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import torch
from PIL import Image

from tests.helpers.infer import save_tiny_checkpoint
from vitkit.infer.serve import LARGE_IMAGE_PIXELS, ImageDecoder, ServeConfig

ROOT = Path(__file__).resolve().parents[2]


def _encoded(size: tuple[int, int], fmt: str, color=(120, 60, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def test_large_images_wait_for_the_large_decode_pool_while_small_ones_go_past():
    started, release, threads = threading.Event(), threading.Event(), []

    def transform(image: torch.Tensor) -> torch.Tensor:
        large = image.shape[-1] * image.shape[-2] > LARGE_IMAGE_PIXELS
        threads.append((large, threading.current_thread().name))
        if large:  # hold the only large-decode thread until the small request has been answered
            started.set()
            release.wait(20)
        return image[:, :4, :4]

    decoder = ImageDecoder(transform, (32, 32), 25_000_000, large_threads=1)
    big, small = _encoded((2000, 1500), "PNG"), _encoded((64, 48), "PNG")

    async def scenario() -> None:
        first = asyncio.create_task(decoder(big))
        await asyncio.to_thread(started.wait, 20)
        second = asyncio.create_task(decoder(big))
        assert (await asyncio.wait_for(decoder(small), 20)).shape == (3, 4, 4)  # not stuck behind the flood
        assert not second.done()  # the second large image is waiting for the one large-decode thread
        release.set()
        await asyncio.gather(first, second)

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        decoder.close()
    assert sorted(large for large, _ in threads) == [False, True, True]
    assert all(name.startswith("vitkit-large-decode") == large for large, name in threads)


def test_big_jpeg_is_decoded_at_reduced_size_as_a_small_image():
    shapes = []

    def transform(image: torch.Tensor) -> torch.Tensor:
        shapes.append((tuple(image.shape), threading.current_thread().name))
        return image

    decoder = ImageDecoder(transform, (36, 36), 25_000_000, large_threads=1)
    try:
        asyncio.run(decoder(_encoded((6000, 4000), "JPEG")))
    finally:
        decoder.close()
    (shape, thread), = shapes
    assert shape == (3, 500, 750)  # 1/8 scale, both sides still >= 36
    assert not thread.startswith("vitkit-large-decode")


def test_large_decodes_default_to_half_the_cores():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert ServeConfig().large_decode_threads == max(1, cores // 2)
    assert ServeConfig(large_decodes=3).large_decode_threads == 3
    with pytest.raises(ValueError, match="large_decodes"):
        ServeConfig(large_decodes=0)
    with pytest.raises(ValueError, match="body_timeout_s"):
        ServeConfig(body_timeout_s=0)


# --- a real server under a pixel flood --------------------------------------------------------------------------------

# What one 4000x4000 PNG costs while the service decodes it: a few copies of its 48 MB of pixels, with a margin.
# Sixteen of them at once stay within that, because only the one large-decode thread the server gets holds any.
FLOOD_RSS_GROWTH_BOUND = 450 * 2**20


def _post(url: str, data: bytes, content_type: str) -> int:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        err.read()
        return err.code


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """`vitkit serve` with the service's default limits, but one large-decode thread whatever the core count."""
    folder = tmp_path_factory.mktemp("flood")
    ckpt = save_tiny_checkpoint(folder / "tiny.safetensors")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    log = folder / "server.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "vitkit", "serve", str(ckpt), "--port", str(port),
                                 "--large-decodes", "1", "--log-level", "warning"], env=env, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {log.read_text()}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5):
                break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                raise RuntimeError("server did not come up within 90 s") from None
            time.sleep(0.2)
    yield base, proc.pid, log
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_6000x6000_png_is_refused_by_the_service_default(default_server):
    base, _, _ = default_server
    assert _post(base + "/predict", _encoded((6000, 6000), "PNG"), "image/png") == 400


@pytest.mark.slow
def test_pixel_flood_keeps_server_memory_bounded(default_server):
    base, pid, log = default_server
    server = psutil.Process(pid)
    png, jpeg = _encoded((4000, 4000), "PNG"), _encoded((6000, 4000), "JPEG")
    assert _post(base + "/predict", _encoded((64, 64), "PNG"), "image/png") == 200  # warm
    before = server.memory_info().rss
    peak, stop = [before], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], server.memory_info().rss)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    payloads = [(png, "image/png"), (jpeg, "image/jpeg")] * 8
    try:
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda p: _post(base + "/predict", *p), payloads))
    finally:
        stop.set()
        watcher.join()
    assert statuses == [200] * 16, log.read_text()
    growth = peak[0] - before
    assert growth < FLOOD_RSS_GROWTH_BOUND, f"RSS grew by {growth / 2**20:.0f} MiB under the flood"


def test_extremely_elongated_image_is_refused_before_its_resize_multiplies_it():
    from vitkit.data.decode import BadImageError

    decoder = ImageDecoder(lambda image: image, (36, 36), 25_000_000, large_threads=1)
    try:
        with pytest.raises(BadImageError, match="10x100000 is more elongated than 20:1"):
            asyncio.run(decoder(_encoded((10, 100_000), "PNG")))
        assert asyncio.run(decoder(_encoded((40, 800), "PNG"))).shape == (3, 800, 40)  # 20:1 is still fine
    finally:
        decoder.close()
