"""What the page's in-browser mode needs from nst-serve: the onnxruntime-web files (``webfiles.Runtime``) with
their media types, the ``.wasm`` files sent as stored, gzip-compressed; the model files (``GET
/v1/models/NAME.onnx``); and the cross-origin isolation headers on every answer, which WebAssembly threads need."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nst_fast.serve.errors import RequestError
from nst_fast.serve.registry import ModelRegistry, UnknownModelError
from nst_fast.serve.webfiles import ISOLATION_HEADERS, RUNTIME_PATH, Runtime, media_type

#: The files change only with a new build or export: browsers keep them and revalidate (a 304 when unchanged).
REVALIDATE = "no-cache"


class CrossOriginIsolation:
    """ASGI middleware: ``ISOLATION_HEADERS`` (COOP same-origin, COEP require-corp) on every answer, so that the
    page is cross-origin isolated and onnxruntime-web may run WebAssembly on several threads. Everything the page
    loads is same-origin (or ``data:``/``blob:``), which ``require-corp`` allows."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_isolated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ISOLATION_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_isolated)


def accepts(request: Request, encoding: str) -> bool:
    """Whether the client's ``Accept-Encoding`` takes ``encoding`` (named, or ``*``, with no ``q=0``)."""
    for part in request.headers.get("accept-encoding", "").split(","):
        token, *parameters = (piece.strip() for piece in part.split(";"))
        if token.lower() not in (encoding, "*"):
            continue
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def unchanged(request: Request, etag: str) -> bool:
    """The client holds this version already (``If-None-Match`` names ``etag``)."""
    return etag in [tag.strip().removeprefix("W/") for tag in request.headers.get("if-none-match", "").split(",")]


def file_answer(request: Request, path: Path, etag: str, name: str, encoding: str | None = None) -> Response:
    """``path`` as ``name``'s media type with ``etag``, or 304 when the client has it; ``encoding``: the stored
    bytes are compressed so (``Content-Encoding``)."""
    headers = {"ETag": etag, "Cache-Control": REVALIDATE}
    if encoding is not None:
        headers.update({"Content-Encoding": encoding, "Vary": "Accept-Encoding"})
    if unchanged(request, etag):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=media_type(name), headers=headers)


def add_runtime_route(app: FastAPI, runtime: Runtime | None) -> None:
    """``GET /static/ort/NAME``: the runtime's files under their published names (and its licence); a client that
    does not take gzip gets the ``.wasm`` files decompressed. Nothing else there (the folder's manifest, its stored
    ``.gz`` names), and nothing at all when the in-browser mode is off (``runtime`` ``None``)."""

    @app.api_route(f"/{RUNTIME_PATH}{{name:path}}", methods=["GET", "HEAD"])
    async def runtime_file(name: str, request: Request) -> Response:
        if runtime is None:
            raise StarletteHTTPException(404)
        if name == runtime.license.name:
            return FileResponse(runtime.license, media_type=media_type(name))
        file = runtime.files.get(name)
        if file is None:
            raise StarletteHTTPException(404)
        etag = f'"{file.sha256[:32]}"'
        if file.encoding is None or accepts(request, file.encoding):
            return file_answer(request, file.stored, etag, name, file.encoding)
        data = await run_in_threadpool(file.read)
        return Response(data, media_type=media_type(name), headers={"ETag": etag, "Vary": "Accept-Encoding"})


def add_model_route(app: FastAPI, registry: ModelRegistry, runtime: Runtime) -> None:
    """``GET /v1/models/NAME.onnx``: a served model's file, for the page to run in the browser (not one that
    ``runtime`` cannot read)."""

    @app.api_route("/v1/models/{filename}", methods=["GET", "HEAD"])
    async def model_file(filename: str, request: Request) -> Response:
        name, dot, suffix = filename.rpartition(".")
        if not dot or suffix != "onnx":
            raise RequestError(404, f"no model file {filename!r}; model files are named NAME.onnx")
        try:
            served = registry.get(name)
        except UnknownModelError as error:
            raise RequestError(404, str(error)) from None
        why = runtime.unreadable(served.path)
        if why:
            raise RequestError(404, f"model {name!r} runs on the server only: {why}")
        stat = served.path.stat()
        return file_answer(request, served.path, f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"', filename)
