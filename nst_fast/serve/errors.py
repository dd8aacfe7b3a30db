"""JSON error answers of ``nst-serve``: ``RequestError`` (a request answered 4xx/5xx with ``{"error": ...}``), the
exception handlers that turn everything else an app raises into one, and the message of a 404.

Every error answer is ``{"error": "..."}``; load refusals carry ``Retry-After`` and count in
``nst_serve_rejected_total{reason}``; answers given before a request's body was read carry ``Connection: close``
(the rest of the body is not worth reading).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from nst_fast.errors import StylizeError
from nst_fast.serve.metrics import Metrics

log = logging.getLogger("nst_fast.serve")

ROUTES = "GET /, GET /v1/styles, POST /v1/stylize, GET|HEAD /healthz, GET|HEAD /readyz, GET /metrics, GET /static/..."
#: Status recorded (in metrics; never sent) for a request whose client went away: nginx's "client closed request".
CLIENT_CLOSED = 499
CLOSE = {"Connection": "close"}


class RequestError(Exception):
    """A request answered ``status`` with ``{"error": message}`` and ``headers``; ``reason``, when given, is
    counted in ``nst_serve_rejected_total``."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.reason = reason


def busy_error(reason: str, what: str, retry_after_s: int, close: bool = True) -> RequestError:
    """A 503 for load, saying what is full and when to retry (``Retry-After``)."""
    headers = {"Retry-After": str(retry_after_s), **(CLOSE if close else {})}
    return RequestError(503, f"the server is busy ({what}); retry after {retry_after_s} s", headers, reason)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def http_error_message(request: Request, error: StarletteHTTPException) -> str:
    """Words for Starlette's own errors: 404 lists the routes, 405 the methods allowed."""
    if error.status_code == 404:
        return f"nothing at {request.method} {request.url.path}; the routes are {ROUTES}"
    if error.status_code == 405:
        allowed = (error.headers or {}).get("Allow")  # Starlette lists a route's methods in set order
        return (
            f"{request.method} is not allowed on {request.url.path}; "
            f"use {', '.join(sorted(allowed.split(', '))) if allowed else 'another method'}"
        )
    return f"bad request: {error.detail}"  # e.g. a malformed multipart body (400)


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """JSON answers for everything a request can raise; only a bug logs a traceback."""

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        if error.reason is not None:
            metrics.rejected.labels(error.reason).inc()
        return error_response(error.status, error.message, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, http_error_message(request, error), error.headers)

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
