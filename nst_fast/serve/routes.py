"""The routes of ``nst-serve``: health, readiness, metrics, the styles, ``POST /v1/stylize`` and the web page.
The HTTP contract is in docs/serve.md. Inference runs in a thread pool under ``limits.Admission``, so the event
loop keeps answering ``/healthz`` and ``/metrics`` under full load."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from nst_fast.serve.errors import RequestError, busy_error
from nst_fast.serve.forms import StylizeJob, read_stylize_form
from nst_fast.serve.inference import Stylized, stylize_upload
from nst_fast.serve.limits import Admission, DeadlineExceeded, Overloaded
from nst_fast.serve.metrics import Metrics
from nst_fast.serve.readiness import Readiness
from nst_fast.serve.registry import ModelRegistry
from nst_fast.serve.settings import ServeSettings
from nst_fast.serve.uploads import UploadBudget
from nst_fast.serve.webfiles import STATIC_DIR, Runtime, styles_body


@dataclass
class Services:
    """What the routes of one app share."""

    settings: ServeSettings
    registry: ModelRegistry
    metrics: Metrics
    admission: Admission
    readiness: Readiness
    budget: UploadBudget
    runtime: Runtime | None = None  # the in-browser mode's runtime, when offered


def add_status_routes(app: FastAPI, services: Services) -> None:
    """``/healthz``, ``/readyz``, ``/metrics`` and ``/v1/styles``: answered on the event loop, never queued."""

    @app.api_route("/healthz", methods=["GET", "HEAD"])  # load balancers probe with either
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/readyz", methods=["GET", "HEAD"])
    async def readyz() -> JSONResponse:
        if services.readiness.ready:
            return JSONResponse({"status": "ready", "models": list(services.registry.models)})
        return JSONResponse(services.readiness.body(), status_code=503)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(services.metrics.render(), media_type=services.metrics.content_type)

    @app.get("/v1/styles")
    async def styles() -> dict[str, Any]:
        return styles_body(services.registry, services.runtime, server=True)


async def run_unless_gone(request: Request, services: Services, job: StylizeJob, deadline: float) -> Stylized:
    """``admission.run`` of the job, given up (``ClientDisconnect``) if the client leaves first: it leaves the
    queue, or, already running, finishes in its thread with its slot (ONNX Runtime cannot stop a run)."""

    async def client_gone() -> None:  # the body is read: the next message is the disconnect
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work = lambda: stylize_upload(job, services.settings, services.metrics)  # noqa: E731
    run = asyncio.ensure_future(services.admission.run(work, deadline))
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


def queue_busy(services: Services, body_read: bool) -> RequestError:
    admission = services.admission
    return busy_error(
        "queue_full",
        f"{admission.max_concurrent} running, {admission.max_queue} waiting",
        services.settings.retry_after_s,
        close=not body_read,
    )


def add_stylize_route(app: FastAPI, services: Services) -> None:
    """``POST /v1/stylize``: refused before its upload is read when every slot and queue place is taken, then
    received (``forms``), queued and run (``limits``) within one deadline of ``timeout_s``."""

    @app.post("/v1/stylize")
    async def stylize(request: Request) -> Response:
        deadline = time.monotonic() + services.settings.timeout_s
        if services.admission.full:
            raise queue_busy(services, body_read=False)
        job = await read_stylize_form(request, services.registry, services.settings, services.budget, deadline)
        try:
            result = await run_unless_gone(request, services, job, deadline)
        except Overloaded:  # filled up while the upload came in
            raise queue_busy(services, body_read=True) from None
        except DeadlineExceeded as error:
            where = "waiting for a free inference slot" if error.waited else "stylising"
            raise RequestError(
                504,
                f"timed out after {error.timeout_s:g} s {where}; retry later or send a smaller image (max_size)",
                reason="timeout",
            ) from None
        return Response(
            result.body, media_type=result.content_type, headers={"X-Inference-Ms": f"{result.inference_ms:.1f}"}
        )


def add_page_route(app: FastAPI) -> None:
    @app.get("/")
    async def index() -> FileResponse:
        if not (STATIC_DIR / "index.html").is_file():
            raise StarletteHTTPException(404)
        return FileResponse(STATIC_DIR / "index.html")
