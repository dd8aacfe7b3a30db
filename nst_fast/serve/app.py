"""The FastAPI app of ``nst-serve`` (routes, request parsing, error answers). The HTTP contract is in README.md,
"Serve over HTTP"; decoding and stylising go through ``nst_fast.images`` and ``nst_fast.stylize`` like
``nst-stylize``.

Every request a client got wrong is answered 4xx with ``{"error": "..."}``; overload is 503 with ``Retry-After``;
a request past its deadline is 504. Inference runs in a thread pool under ``limits.Admission``, so the event loop
keeps answering ``/healthz`` and ``/metrics`` under full load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from nst_fast.conventions import MIN_SIDE
from nst_fast.errors import StylizeError
from nst_fast.images import (
    MAX_ENCODABLE_SIDE, UPLOAD_FORMATS, ImageReadError, ImageTooLargeError, decode_image, encode_image,
)
from nst_fast.serve.limits import Admission, DeadlineExceeded, Overloaded
from nst_fast.serve.metrics import Metrics, MetricsMiddleware
from nst_fast.serve.registry import ModelRegistry, ServedModel, UnknownModelError
from nst_fast.serve.settings import ServeSettings
from nst_fast.stylize.core import prepare_image, stylize_array
from nst_fast.stylize.styles import parse_style_weights

log = logging.getLogger("nst_fast.serve")

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static"
#: ``format`` field -> (Pillow format, Content-Type).
OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
#: The fields of ``POST /v1/stylize`` (``image`` is the file).
STYLIZE_FIELDS = ("image", "model", "style", "strength", "preserve_color", "max_size", "format")
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
ROUTES = ("GET /, GET /v1/styles, POST /v1/stylize, GET|HEAD /healthz, GET|HEAD /readyz, GET /metrics, "
          "GET /static/...")
#: Size of the warm-up image each model runs once at startup (ONNX Runtime's first run allocates its buffers).
WARMUP_SIDE = 64
#: Seconds the warm-up of one model may take (its own deadline, not the requests' ``timeout_s``: a first run on
#: a busy machine may be slow), and how often a failing one is tried, a pause apart, before readiness gives up.
WARMUP_TIMEOUT_S = 300.0
WARMUP_ATTEMPTS = 3
WARMUP_RETRY_PAUSE_S = 0.5
#: Status recorded (in metrics; never sent) for a request whose client went away: nginx's "client closed request".
CLIENT_CLOSED = 499


class RequestError(Exception):
    """A request the client got wrong: answered ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class StylizeJob:
    """A parsed ``POST /v1/stylize``: everything the inference thread needs."""

    data: bytes
    filename: str
    model: ServedModel
    weights: np.ndarray | None
    preserve_color: bool
    max_size: int | None
    output_format: str


@dataclass
class Stylized:
    body: bytes
    content_type: str
    inference_ms: float


def form_message(error: StylizeError) -> str:
    """``parse_style_weights``'s message in the form's terms (it names the command line's options)."""
    return str(error).replace("--style", "style").replace("--strength", "strength")


def _text_field(form: Any, name: str) -> str | None:
    """A text field's value (``None`` when absent or empty, as HTML forms send unset fields)."""
    values = form.getlist(name)
    if len(values) > 1:
        raise RequestError(400, f"field {name!r} was sent {len(values)} times; send it once")
    if not values:
        return None
    if not isinstance(values[0], str):
        raise RequestError(400, f"field {name!r} must be a text value, not a file")
    return values[0].strip() or None


def _parse_strength(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise RequestError(400, f"strength {text!r} is not a number; send a number in [0, 1]") from None


def _parse_bool(text: str | None, name: str) -> bool:
    if text is None:
        return False
    if text.lower() in TRUE_WORDS:
        return True
    if text.lower() in FALSE_WORDS:
        return False
    raise RequestError(400, f"{name} {text!r} is not a boolean; send true or false")


def _parse_max_size(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < MIN_SIDE:
        raise RequestError(400, f"max_size {text!r} must be a whole number of pixels >= {MIN_SIDE}")
    return value


def _limited(receive: Callable[[], Awaitable[dict]], max_bytes: int) -> Callable[[], Awaitable[dict]]:
    """``receive`` that refuses (413) a request body over ``max_bytes`` as soon as it gets there."""
    received = 0

    async def limited_receive() -> dict:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise RequestError(413, f"the upload is over the limit of {max_bytes} bytes; send a smaller file")
        return message

    return limited_receive


async def read_stylize_form(request: Request, registry: ModelRegistry, settings: ServeSettings) -> StylizeJob:
    """Parse and check the multipart form of ``POST /v1/stylize`` (everything but the image's content)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):  # media types are case-insensitive
        raise RequestError(400, f"send multipart/form-data with the image in the file field 'image' "
                                f"(got Content-Type {content_type or 'none'!r})")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > settings.max_upload_bytes:
        raise RequestError(413, f"the upload ({length} bytes) is over the limit of {settings.max_upload_bytes} "
                                "bytes; send a smaller file")
    limited = Request(request.scope, _limited(request.receive, settings.max_upload_bytes))
    async with limited.form(max_files=1, max_fields=len(STYLIZE_FIELDS)) as form:
        unknown = sorted(set(form.keys()) - set(STYLIZE_FIELDS))
        if unknown:
            raise RequestError(400, f"unknown field {unknown[0]!r}; the fields are: image (file), "
                                    + ", ".join(STYLIZE_FIELDS[1:]))
        uploads = form.getlist("image")
        if not uploads:
            raise RequestError(400, "no image: send the photo in the file field 'image'")
        if len(uploads) > 1 or not isinstance(uploads[0], UploadFile):
            raise RequestError(400, "field 'image' must be one uploaded file (multipart file part with a filename)")
        try:
            served = registry.get(_text_field(form, "model"))
        except UnknownModelError as error:
            raise RequestError(404, str(error)) from None
        output_format = (_text_field(form, "format") or "png").lower()
        if output_format not in OUTPUT_FORMATS:
            raise RequestError(400, f"format {output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
        try:
            weights = parse_style_weights(
                served.model, _text_field(form, "style"), _parse_strength(_text_field(form, "strength"))
            )
        except StylizeError as error:
            raise RequestError(400, f"model {served.name!r}: {form_message(error)}") from None
        return StylizeJob(
            data=await uploads[0].read(),
            filename=os.path.basename(uploads[0].filename or "") or "upload",
            model=served,
            weights=weights,
            preserve_color=_parse_bool(_text_field(form, "preserve_color"), "preserve_color"),
            max_size=_parse_max_size(_text_field(form, "max_size")),
            output_format=output_format,
        )


def stylize_upload(job: StylizeJob, settings: ServeSettings, metrics: Metrics) -> Stylized:
    """Decode, stylise and encode one upload (runs in an inference thread)."""
    try:
        rgb, alpha = decode_image(job.data, settings.max_pixels, job.filename, UPLOAD_FORMATS)
    except ImageTooLargeError as error:
        raise RequestError(413, f"{error}; send a smaller image") from None
    except ImageReadError as error:
        raise RequestError(400, f"{error}; send a PNG, JPEG, WebP, TIFF, BMP or GIF file") from None
    try:
        array, alpha = prepare_image(rgb, alpha, min(job.max_size or settings.max_side, settings.max_side),
                                     job.filename)
    except StylizeError as error:
        raise RequestError(400, str(error)) from None
    pillow_format, content_type = OUTPUT_FORMATS[job.output_format]
    height, width = array.shape[:2]
    largest = MAX_ENCODABLE_SIDE[pillow_format]
    if max(width, height) > largest:  # refused before the model runs, not when encoding fails after it
        raise RequestError(400, f"the {width}x{height} result is too large for format {job.output_format}, which "
                                f"stores at most {largest} pixels a side; use format png or max_size <= {largest}")
    start = time.perf_counter()
    stylized = stylize_array(job.model.model, array[None], job.preserve_color, job.weights)[0]
    seconds = time.perf_counter() - start
    metrics.inference_seconds.labels(job.model.name).observe(seconds)
    return Stylized(encode_image(stylized, pillow_format, alpha), content_type, seconds * 1000.0)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def warm_up(served: ServedModel) -> None:
    """One small image through the model with its first style, so that the first request is not the slow one."""
    model = served.model
    weights = parse_style_weights(model, None if len(model.styles) == 1 else model.styles[0], None)
    stylize_array(model, np.full((1, WARMUP_SIDE, WARMUP_SIDE, 3), 128, dtype=np.uint8), False, weights)


def create_app(models: list[Path | str], settings: ServeSettings | None = None) -> FastAPI:
    """The nst-serve app for the ONNX exports ``models`` (the first is the default). Loads them now (raises
    ``StylizeError`` for a missing, foreign or duplicate-named file); startup then warms each up, after which
    ``/readyz`` answers 200."""
    settings = settings or ServeSettings()
    registry = ModelRegistry.load(models, provider=settings.provider, threads=settings.intra_op_threads)
    metrics = Metrics()
    admission = Admission(settings.max_concurrent, settings.max_queue, settings.timeout_s, metrics.admission_changed)
    readiness: dict[str, str | None] = {"status": "starting", "error": "the models are warming up; retry shortly"}

    async def warm_up_all() -> None:
        """Warm each model up on the inference threads, outside admission (requests cannot crowd it out and its
        deadline is ``WARMUP_TIMEOUT_S``); a failing run is retried; then ``/readyz`` says ready or why not."""
        loop = asyncio.get_running_loop()
        for served in registry.models.values():
            for attempt in range(1, WARMUP_ATTEMPTS + 1):
                try:
                    await asyncio.wait_for(loop.run_in_executor(admission.executor, warm_up, served), WARMUP_TIMEOUT_S)
                    break
                except asyncio.TimeoutError:
                    problem = f"warm-up of model {served.name!r} did not finish in {WARMUP_TIMEOUT_S:g} s"
                except Exception as error:  # a model that cannot run: stay unready and say why
                    problem = f"warm-up of model {served.name!r} failed ({attempt} of {WARMUP_ATTEMPTS} tries): {error}"
                    if attempt < WARMUP_ATTEMPTS:
                        log.warning("%s; trying again", problem)
                        await asyncio.sleep(WARMUP_RETRY_PAUSE_S)
                        continue
                log.error("%s; the server stays unready", problem)
                readiness.update(status="failed", error=problem)
                return
        readiness.update(status="ready", error=None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(warm_up_all())
        try:
            yield
        finally:
            task.cancel()
            admission.shutdown()

    app = FastAPI(title="nst-serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.registry, app.state.metrics = settings, registry, metrics
    app.state.admission, app.state.readiness = admission, readiness
    app.add_middleware(MetricsMiddleware, metrics=metrics, mounts=(STATIC_PREFIX,))

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return error_response(error.status, error.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            message = f"nothing at {request.method} {request.url.path}; the routes are {ROUTES}"
        elif error.status_code == 405:
            allowed = (error.headers or {}).get("Allow")  # Starlette lists a route's methods in set order
            message = (f"{request.method} is not allowed on {request.url.path}; "
                       f"use {', '.join(sorted(allowed.split(', '))) if allowed else 'another method'}")
        else:  # e.g. a malformed multipart body (400)
            message = f"bad request: {error.detail}"
        return error_response(error.status_code, message, error.headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, error: ClientDisconnect) -> Response:
        """The client left (mid-upload or while queued): nobody to answer, nothing to log; counted as 499."""
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(StylizeError)
    async def model_error(request: Request, error: StylizeError) -> JSONResponse:
        """The model failed on a valid request (ONNX Runtime out of memory, say): the server's fault, said in a line."""
        log.error("%s %s: %s", request.method, request.url.path, error)
        return error_response(500, f"the model failed: {error}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal server error ({type(error).__name__}); it was logged on the server")

    @app.api_route("/healthz", methods=["GET", "HEAD"])  # load balancers probe with either
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/readyz", methods=["GET", "HEAD"])
    async def readyz() -> JSONResponse:
        if readiness["status"] == "ready":
            return JSONResponse({"status": "ready", "models": list(registry.models)})
        return JSONResponse(dict(readiness), status_code=503)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/styles")
    async def styles() -> dict[str, Any]:
        return registry.describe()

    uploads = {"in_progress": 0}  # requests reading their upload now (event loop only: no lock)

    def busy(reason: str, what: str) -> JSONResponse:
        metrics.rejected.labels(reason).inc()
        return error_response(503, f"the server is busy ({what}); retry after {settings.retry_after_s} s",
                              {"Retry-After": str(settings.retry_after_s)})

    def queue_busy() -> JSONResponse:
        return busy("queue_full", f"{admission.max_concurrent} running, {admission.max_queue} waiting")

    async def read_upload(request: Request) -> StylizeJob:
        """The parsed form, read within ``timeout_s`` (408 after) while counted as an upload in progress."""
        uploads["in_progress"] += 1
        metrics.uploads_in_progress.set(uploads["in_progress"])
        try:
            return await asyncio.wait_for(read_stylize_form(request, registry, settings), settings.timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(408, f"the upload did not arrive within {settings.timeout_s:g} s; send it again "
                                    "over a faster connection, or a smaller file") from None
        finally:
            uploads["in_progress"] -= 1
            metrics.uploads_in_progress.set(uploads["in_progress"])

    async def run_unless_gone(request: Request, job: StylizeJob) -> Stylized:
        """``admission.run`` of the job, given up (``ClientDisconnect``) if the client leaves first: it leaves the
        queue, or, already running, finishes in its thread with its slot (ONNX Runtime cannot stop a run)."""

        async def client_gone() -> None:  # the body is read: the next message is the disconnect
            while (await request.receive())["type"] != "http.disconnect":
                pass

        run = asyncio.ensure_future(admission.run(lambda: stylize_upload(job, settings, metrics)))
        gone = asyncio.ensure_future(client_gone())
        try:
            await asyncio.wait({run, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        if run.cancelled():
            raise ClientDisconnect()
        return run.result()

    @app.post("/v1/stylize")
    async def stylize(request: Request) -> Response:
        # Refused before the upload is read: every slot and queue place taken, or as many uploads coming in as
        # could be queued (each holds up to max_upload_bytes).
        if admission.full:
            return queue_busy()
        if uploads["in_progress"] >= settings.max_uploads:
            return busy("uploads_full", f"{uploads['in_progress']} uploads coming in")
        job = await read_upload(request)
        try:
            result = await run_unless_gone(request, job)
        except Overloaded:  # filled up while the upload came in
            return queue_busy()
        except DeadlineExceeded as error:
            metrics.rejected.labels("timeout").inc()
            where = "waiting for a free inference slot" if error.waited else "stylising"
            return error_response(504, f"timed out after {error.timeout_s:g} s {where}; retry later or send a "
                                       "smaller image (max_size)")
        return Response(result.body, media_type=result.content_type,
                        headers={"X-Inference-Ms": f"{result.inference_ms:.1f}"})

    @app.get("/")
    async def index() -> FileResponse:
        if not (STATIC_DIR / "index.html").is_file():
            raise StarletteHTTPException(404)
        return FileResponse(STATIC_DIR / "index.html")

    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app
