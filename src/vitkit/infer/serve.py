"""An HTTP prediction service: FastAPI + uvicorn, with micro-batching and Prometheus metrics.

``POST /predict`` takes one image, as a multipart upload or as the raw request body, and answers JSON top-k.
Concurrent requests wait up to ``max_wait_ms`` for each other and run as one batch of at most ``max_batch``: on a
CPU or GPU one batch of 8 costs far less than 8 batches of 1. Every bad request -- too large, wrong content type,
not an image, too many pixels, bad parameters -- is a 4xx with a JSON ``{"error": ...}`` body naming the problem;
only a genuine server fault is a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive

from ..data.decode import BadImageError, decode_rgb
from .predict import Predictor

RAW_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "application/octet-stream")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 16
    max_wait_ms: float = 10.0
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    topk: int = 5

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_bytes", "max_pixels", "topk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- metrics --------------------------------------------------------------------------------------------------------


class ServeMetrics:
    """Request counts by path and status, request latency, batch sizes and images classified.

    The metrics live in a registry of their own rather than prometheus_client's global one, so that two apps in one
    process (tests, or one service per model) count separately and do not collide on the metric names.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vitkit_requests", "Requests answered, by path and status code.", ["path", "code"],
                                registry=self.registry)
        self.latency = Histogram("vitkit_request_latency_seconds", "Time to answer a request.",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("vitkit_batch_size", "Images per model call (micro-batching).",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.images = Counter("vitkit_images_predicted", "Images classified.", registry=self.registry)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


# --- micro-batching -------------------------------------------------------------------------------------------------


class MicroBatcher:
    """Collect single-image requests into batches: the first waits at most ``max_wait_s`` for company."""

    def __init__(self, run_batch: Callable[[torch.Tensor], torch.Tensor], max_batch: int, max_wait_s: float,
                 on_batch: Callable[[int], None]) -> None:
        self.run_batch, self.max_batch, self.max_wait_s, self.on_batch = run_batch, max_batch, max_wait_s, on_batch
        self.queue: asyncio.Queue[tuple[torch.Tensor, asyncio.Future]] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def submit(self, image: torch.Tensor) -> torch.Tensor:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((image, future))
        return await future

    async def _collect(self) -> list[tuple[torch.Tensor, asyncio.Future]]:
        loop = asyncio.get_running_loop()
        items = [await self.queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(items) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0 and self.queue.empty():
                break
            try:
                items.append(await asyncio.wait_for(self.queue.get(), max(remaining, 0)))
            except TimeoutError:
                break
        return items

    async def _loop(self) -> None:
        while True:
            items = await self._collect()
            items = [(x, f) for x, f in items if not f.cancelled()]  # clients that went away
            if not items:
                continue
            self.on_batch(len(items))
            try:
                out = await asyncio.to_thread(self.run_batch, torch.stack([x for x, _ in items]))
            except Exception as err:  # the model failed: every waiting request gets the error, the loop lives on
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            for i, (_, future) in enumerate(items):
                if not future.done():
                    future.set_result(out[i])


# --- the application ------------------------------------------------------------------------------------------------


def create_app(predictor: Predictor, config: ServeConfig | None = None) -> FastAPI:
    config = config or ServeConfig()
    metrics = ServeMetrics()
    batcher = MicroBatcher(
        lambda batch: predictor.probabilities(batch.to(predictor.device)).cpu(), config.max_batch,
        config.max_wait_ms / 1e3, metrics.batch_size.observe,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="vitkit", lifespan=lifespan)
    model_name = predictor.model.model_name or "vitkit-model"

    @app.middleware("http")
    async def record(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        key = (request.url.path if request.url.path in ("/predict", "/healthz", "/metrics") else "other",
               response.status_code)
        metrics.requests.labels(*key).inc()
        if request.url.path == "/predict":
            metrics.latency.observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {err.errors()}"}, status_code=422)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {
            "status": "ok", "model": model_name, "num_classes": len(predictor.class_names),
            "device": str(predictor.device), "precision": predictor.precision,
        }

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        topk = _topk_param(request, config.topk, len(predictor.class_names))
        data = await _image_bytes(request, config.max_bytes)
        try:
            image = await asyncio.to_thread(_prepare, predictor, data, config.max_pixels)
        except BadImageError as err:
            raise ApiError(400, f"not a usable image: {err.reason}") from None
        probs = await batcher.submit(image)
        metrics.images.inc()
        top = predictor.topk(probs.unsqueeze(0), topk)[0]
        return {"model": model_name, "predictions": [{"label": lab, "prob": round(p, 6)} for lab, p in top]}

    return app


def _prepare(predictor: Predictor, data: bytes, max_pixels: int) -> torch.Tensor:
    return predictor.transform(decode_rgb(data, "upload", max_pixels))


def _topk_param(request: Request, default: int, num_classes: int) -> int:
    raw = request.query_params.get("topk")
    if raw is None:
        return min(default, num_classes)
    if not raw.isdigit() or not 1 <= int(raw) <= num_classes:
        raise ApiError(400, f"topk must be an integer from 1 to {num_classes}, got {raw!r}")
    return int(raw)


class _BodyLimit:
    """An ASGI ``receive`` that counts body bytes and answers 413 as soon as they pass the limit, so an oversized
    upload is cut off while it streams in, whatever the Content-Length header claimed (or if there is none)."""

    def __init__(self, receive: Receive, max_bytes: int) -> None:
        self.receive, self.max_bytes, self.size = receive, max_bytes, 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.max_bytes:
                raise ApiError(413, f"request body exceeds the limit of {self.max_bytes} bytes")
        return message


async def _image_bytes(request: Request, max_bytes: int) -> bytes:
    """The uploaded image's bytes from a raw or multipart body, enforcing the size limit while reading."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_multipart = content_type == "multipart/form-data"
    if not is_multipart and content_type not in RAW_IMAGE_TYPES:
        raise ApiError(
            415, f"unsupported content type {content_type or '(none)'!r}; send multipart/form-data with a file "
            f"field, or the image itself as one of {', '.join(RAW_IMAGE_TYPES)}",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"request body of {int(declared)} bytes exceeds the limit of {max_bytes} bytes")
    if declared == "0":
        raise ApiError(400, "empty request body: send an image")
    limited = Request(request.scope, _BodyLimit(request.receive, max_bytes))
    if is_multipart:
        return await _multipart_file(limited, max_bytes)
    body = await limited.body()
    if not body:
        raise ApiError(400, "empty request body: send an image")
    return body


async def _multipart_file(request: Request, max_bytes: int) -> bytes:
    """The first file part's bytes; a body without one, or one the multipart parser refuses, is a 400."""
    try:
        async with request.form(max_files=1, max_fields=16, max_part_size=max_bytes) as form:
            uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
            if not uploads:
                raise ApiError(400, "multipart body has no file part; send the image as a file field (e.g. 'file')")
            return await uploads[0].read()
    except StarletteHTTPException as err:  # how Starlette reports a malformed body inside an app
        raise ApiError(400, f"malformed multipart body: {err.detail}") from None


def serve(
    checkpoint: str, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None,
    device: str | None = "cpu", precision: str = "fp32", log_level: str = "info",
) -> None:
    """Load ``checkpoint`` and serve it until interrupted."""
    import uvicorn

    predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=precision)
    uvicorn.run(create_app(predictor, config), host=host, port=port, log_level=log_level)


__all__ = ["ApiError", "MicroBatcher", "ServeConfig", "ServeMetrics", "create_app", "serve"]
