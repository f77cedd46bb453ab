"""An HTTP prediction service: FastAPI + uvicorn, with micro-batching and Prometheus metrics.

``POST /predict`` takes one image, as a multipart upload or as the raw request body, and answers JSON top-k.
Concurrent requests wait up to ``max_wait_ms`` for each other and run as one batch of at most ``max_batch``: on a
CPU or GPU one batch of 8 costs far less than 8 batches of 1. Every bad request -- too large, too slow to arrive,
wrong content type, not an image, too many pixels, bad parameters -- is a 4xx with a JSON ``{"error": ...}`` body
naming the problem; only a genuine server fault is a 500.

Hostile traffic is bounded: a body must arrive within ``body_timeout_s`` (408), and decoding is split by what it
costs (:class:`ImageDecoder`), so a flood of huge images queues behind itself in a few threads while ordinary
requests go past it.
"""

# No `from __future__ import annotations` here: FastAPI reads /predict's parameter annotations at run time, and
# the topk bound in them (the model's class count) is a local of create_app that a string annotation cannot see.
import asyncio
import contextlib
import copy
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..data.decode import BadImageError, decode_rgb, decoded_size
from .predict import Predictor
from .preprocess import InferenceSpec

RAW_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "application/octet-stream")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Far below the decoder's own bomb limit: a service decodes images strangers send, many at once, and a 6000x6000
# PNG (36 Mpx, ~110 MB of pixels and several copies of them while it is converted) is a few hundred KB to upload.
SERVE_MAX_PIXELS = 25_000_000
# Images decoded at most this large (after any reduced JPEG decode) are cheap enough to decode at once, whatever
# else is going on; larger ones wait for one of the few large-decode threads.
LARGE_IMAGE_PIXELS = 1920 * 1080
# The eval transform scales the shorter side to the model's size, so a 10x100000 image (1 Mpx, a few KB as a PNG)
# would become tens of millions of pixels; no photograph is this elongated.
MAX_ASPECT_RATIO = 20
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that went away before the answer: counted, never sent

log = logging.getLogger("vitkit.serve")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class ServeConfig:
    """Limits of the service. ``large_decodes``: images larger than ``LARGE_IMAGE_PIXELS`` decoding at once
    (None: half the usable cores, at least one), so such a flood never takes every core or much memory."""

    max_batch: int = 16
    max_wait_ms: float = 10.0
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = SERVE_MAX_PIXELS
    topk: int = 5
    body_timeout_s: float = 30.0
    large_decodes: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_bytes", "max_pixels", "topk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not self.body_timeout_s > 0:
            raise ValueError(f"body_timeout_s must be > 0, got {self.body_timeout_s}")
        if self.large_decodes is not None and self.large_decodes < 1:
            raise ValueError(f"large_decodes must be >= 1, got {self.large_decodes}")

    @property
    def large_decode_threads(self) -> int:
        return self.large_decodes or max(1, usable_cores() // 2)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


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


class _RecordRequests:
    """ASGI middleware counting every answer by path and status (including 4xx raised anywhere below it, and a
    500 from an unhandled error, which leaves before any response starts) and timing /predict."""

    PATHS = ("/predict", "/healthz", "/metrics")

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            path = scope["path"] if scope["path"] in self.PATHS else "other"
            self.metrics.requests.labels(path, status).inc()
            if path == "/predict":
                self.metrics.latency.observe(time.perf_counter() - t0)


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


# --- decoding -------------------------------------------------------------------------------------------------------


def decode_floor(spec: InferenceSpec) -> tuple[int, int]:
    """(H, W) a reduced-size decode must still cover: the preprocessing's own rule (``Preprocessing.decode``), so
    predict and eval decode a file as the service does."""
    return spec.decode_min_size


class ImageDecoder:
    """Uploaded bytes -> the model's input tensor, with the work bounded by what each image costs.

    The header says how many pixels a decode will produce (JPEGs much larger than the model needs are decoded at
    reduced size); images more elongated than ``MAX_ASPECT_RATIO`` are refused, since the transform's resize
    would multiply their pixels. Up to ``LARGE_IMAGE_PIXELS`` the image is decoded at once in the shared worker threads; larger
    ones go to a pool of ``large_threads``, where a flood of them waits in line holding only its compressed bytes.
    So at most that many large images are in memory at once, their freed memory stays in that many threads' malloc
    arenas, and a flood slows the flood while everyone else's requests go past it.
    """

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor], min_size: tuple[int, int],
                 max_pixels: int, large_threads: int) -> None:
        self.transform, self.min_size, self.max_pixels = transform, min_size, max_pixels
        self.large_pool = ThreadPoolExecutor(large_threads, thread_name_prefix="vitkit-large-decode")

    async def __call__(self, data: bytes) -> torch.Tensor:
        image = await asyncio.to_thread(self._decode_if_small, data)
        if image is None:
            image = await asyncio.get_running_loop().run_in_executor(self.large_pool, self._decode, data)
        return image

    def close(self) -> None:
        self.large_pool.shutdown(wait=False, cancel_futures=True)

    def _decode_if_small(self, data: bytes) -> torch.Tensor | None:
        width, height = decoded_size(data, "upload", self.max_pixels, self.min_size)
        if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise BadImageError("upload", f"{width}x{height} is more elongated than {MAX_ASPECT_RATIO}:1; resizing "
                                "its shorter side to the model's input would multiply its pixels")
        return self._decode(data) if width * height <= LARGE_IMAGE_PIXELS else None

    def _decode(self, data: bytes) -> torch.Tensor:
        return self.transform(decode_rgb(data, "upload", self.max_pixels, self.min_size))


# --- the application ------------------------------------------------------------------------------------------------


class LabelProbability(BaseModel):
    label: str
    prob: float


class PredictResponse(BaseModel):
    model: str
    predictions: list[LabelProbability]


_ERROR_BODY = {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"],
}}}
PREDICT_ERRORS = {
    400: "not an image, too many pixels, an empty body, or a malformed multipart body",
    408: "the body did not arrive within the body timeout",
    413: "the body is larger than the limit",
    415: "unsupported content type",
    422: "a bad query parameter",
}
PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"],
        }},
        **{media: {"schema": {"type": "string", "format": "binary"}} for media in RAW_IMAGE_TYPES},
    },
}


def create_app(predictor: Predictor, config: ServeConfig | None = None) -> FastAPI:
    config = config or ServeConfig()
    metrics = ServeMetrics()
    batcher = MicroBatcher(
        lambda batch: predictor.probabilities(batch.to(predictor.device)).cpu(), config.max_batch,
        config.max_wait_ms / 1e3, metrics.batch_size.observe,
    )
    decoder = ImageDecoder(predictor.transform, decode_floor(predictor.spec), config.max_pixels,
                           config.large_decode_threads)
    num_classes = len(predictor.class_names)
    default_topk = min(config.topk, num_classes)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()
        decoder.close()

    app = FastAPI(title="vitkit", lifespan=lifespan)
    app.add_middleware(_RecordRequests, metrics=metrics)
    model_name = predictor.model.model_name or "vitkit-model"

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _describe_validation(err)}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def client_disconnect(request: Request, _: ClientDisconnect) -> Response:
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s disconnected before its request body arrived; %s %s dropped", client, request.method,
                 request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {
            "status": "ok", "model": model_name, "num_classes": num_classes,
            "device": str(predictor.device), "precision": predictor.precision,
        }

    @app.get("/metrics", response_class=Response, responses={200: {
        "description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}},
    }})
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/predict", response_model=PredictResponse, openapi_extra={"requestBody": PREDICT_BODY},
        responses={code: {"description": text, "content": _ERROR_BODY} for code, text in PREDICT_ERRORS.items()},
    )
    async def predict(
        request: Request,
        topk: Annotated[int, Query(ge=1, le=num_classes, description="labels to return, best first")] = default_topk,
    ) -> dict:
        data = await _image_bytes(request, config.max_bytes, config.body_timeout_s)
        try:
            image = await decoder(data)
        except BadImageError as err:
            raise ApiError(400, f"not a usable image: {err.reason}") from None
        probs = await batcher.submit(image)
        metrics.images.inc()
        top = predictor.topk(probs.unsqueeze(0), topk)[0]
        return {"model": model_name, "predictions": [{"label": lab, "prob": round(p, 6)} for lab, p in top]}

    return app


def _describe_validation(err: RequestValidationError) -> str:
    """'query parameter topk: Input should be ... (got '0')' for each problem, without pydantic's internals."""
    problems = []
    for item in err.errors():
        where, *name = item.get("loc", ("request",))
        what = f"{where} parameter {'.'.join(str(n) for n in name)}" if name else str(where)
        got = f" (got {item['input']!r})" if isinstance(item.get("input"), str | int | float) else ""
        problems.append(f"{what}: {item.get('msg', 'invalid')}{got}")
    return "; ".join(problems) or "invalid request"


class _BodyLimit:
    """An ASGI ``receive`` that enforces the body limits while the body streams in.

    More than ``max_bytes`` is a 413 as soon as it passes the limit, whatever the Content-Length header claimed (or
    if there is none). A body not complete ``timeout_s`` after the first read is a 408 that closes the connection:
    a client that declares more than it sends, or trickles it, would otherwise hold its connection and a task
    forever.
    """

    def __init__(self, receive: Receive, max_bytes: int, timeout_s: float) -> None:
        self.receive, self.max_bytes, self.timeout_s, self.size = receive, max_bytes, timeout_s, 0
        self.deadline: float | None = None

    async def __call__(self) -> Message:
        if self.deadline is None:
            self.deadline = asyncio.get_running_loop().time() + self.timeout_s
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self.receive()
        except TimeoutError:
            raise ApiError(408, f"request body not received within {self.timeout_s:g} s",
                           headers={"Connection": "close"}) from None
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.max_bytes:
                raise ApiError(413, f"request body exceeds the limit of {self.max_bytes} bytes")
        return message


def _content_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None and re.fullmatch(r"[0-9]{1,20}", declared) else None


async def _image_bytes(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The uploaded image's bytes from a raw or multipart body, enforcing the size and time limits while reading."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_multipart = content_type == "multipart/form-data"
    if not is_multipart and content_type not in RAW_IMAGE_TYPES:
        raise ApiError(
            415, f"unsupported content type {content_type or '(none)'!r}; send multipart/form-data with a file "
            f"field, or the image itself as one of {', '.join(RAW_IMAGE_TYPES)}",
        )
    declared = _content_length(request)
    if declared is not None and declared > max_bytes:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    if declared == 0:
        raise ApiError(400, "empty request body: send an image")
    limited = Request(request.scope, _BodyLimit(request.receive, max_bytes, timeout_s))
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


def uvicorn_log_config(log_level: str) -> dict:
    """uvicorn's own logging setup, plus the service's logger (``vitkit.serve``) on the same handler and level."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["vitkit"] = {"handlers": ["default"], "level": log_level.upper(), "propagate": False}
    return config


def serve(
    checkpoint: str, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None,
    device: str | None = "cpu", precision: str = "fp32", log_level: str = "info",
) -> None:
    """Load ``checkpoint`` and serve it until interrupted."""
    import uvicorn

    predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=precision)
    uvicorn.run(create_app(predictor, config), host=host, port=port, log_level=log_level,
                log_config=uvicorn_log_config(log_level))


__all__ = [
    "ApiError", "ImageDecoder", "MicroBatcher", "SERVE_MAX_PIXELS", "ServeConfig", "ServeMetrics", "create_app",
    "serve",
]
