"""Connection hygiene for ``nst-serve``: a header timeout, a connection cap that never starves health probes,
and JSON for every refusal, in a subclass of uvicorn's h11 protocol (one instance per connection).

- A connection must send its request's headers within ``header_timeout_s`` of opening or of its previous
  answer: one that sent nothing is closed silently, one that sent part of them gets a JSON 408 and is closed.
  Idle keep-alive connections are closed after ``keep_alive_s`` (uvicorn's timer).
- ``ConnectionGuard`` counts open connections. Past ``max_connections``, a new connection closes the one that
  has waited longest for its request's headers (idle, trickling or fresh: it costs nothing to drop and its
  client can reconnect). When every connection has a request in progress, up to ``HEALTH_RESERVE`` more are
  kept for ``/healthz`` and ``/readyz`` only (anything else: JSON 503 with ``Retry-After``); past that a
  connection gets a JSON 503 at once and is closed.
- uvicorn's own plain-text answers are replaced: a malformed request gets a JSON 400; uvicorn's
  ``limit_concurrency`` (a plain 503 for every request, health included) is not used.

Every connection the server closes or refuses is counted in ``nst_serve_connections_closed_total{reason}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from enum import Enum
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from nst_fast.serve.metrics import Metrics
from nst_fast.serve.settings import ServeSettings

log = logging.getLogger("nst_fast.serve")

#: Paths answered on connections past ``max_connections`` (when no waiting connection could be closed instead).
HEALTH_PATHS = ("/healthz", "/readyz")
#: Connections kept past ``max_connections`` for health probes.
HEALTH_RESERVE = 32
#: File descriptors kept free beside the connections (models, temporary upload files, logs, the listening socket).
FD_HEADROOM = 256


def raw_json_response(status: int, message: str, retry_after_s: int | None = None) -> bytes:
    """A complete HTTP/1.1 answer ``{"error": message}`` that closes the connection, written straight to the
    socket (for refusals before or outside any request the app sees)."""
    body = json.dumps({"error": message}).encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after_s is not None:
        lines.append(f"retry-after: {retry_after_s}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Verdict(Enum):
    SERVE = "serve"
    HEALTH_ONLY = "health_only"
    REFUSE = "refuse"


class ConnectionGuard:
    """The open connections of one server and, oldest first, those waiting for a request's headers (event loop
    only: no lock)."""

    def __init__(self, settings: ServeSettings, metrics: Metrics, max_connections: int | None = None) -> None:
        self.max_connections = max_connections or settings.max_connections
        self.header_timeout_s = settings.header_timeout_s
        self.retry_after_s = settings.retry_after_s
        self.metrics = metrics
        self.open: set[Any] = set()
        self.waiting: dict[Any, None] = {}  # insertion order: the longest waiting first

    def admit(self, connection: Any) -> Verdict:
        """A new connection: make room by closing the longest-waiting one if at the cap; then serve it, keep it for
        health probes only, or refuse it."""
        if len(self.open) >= self.max_connections and self.waiting:
            next(iter(self.waiting)).evict()
        if len(self.open) >= self.max_connections + HEALTH_RESERVE:
            self.closed_by_us("over_capacity")
            return Verdict.REFUSE
        self.open.add(connection)
        self.metrics.open_connections.set(len(self.open))
        return Verdict.HEALTH_ONLY if len(self.open) > self.max_connections else Verdict.SERVE

    def wait(self, connection: Any) -> None:
        """``connection`` now waits for a request's headers (it goes to the end of the line)."""
        self.waiting.pop(connection, None)
        self.waiting[connection] = None

    def busy(self, connection: Any) -> None:
        """``connection`` has a request in progress: not to be evicted."""
        self.waiting.pop(connection, None)

    def forget(self, connection: Any) -> None:
        self.waiting.pop(connection, None)
        self.open.discard(connection)
        self.metrics.open_connections.set(len(self.open))

    def closed_by_us(self, reason: str) -> None:
        self.metrics.connections_closed.labels(reason).inc()


class HealthOnly:
    """The app as seen from a connection past ``max_connections``: health probes pass, anything else gets a JSON
    503 with ``Retry-After``; every answer closes the connection."""

    def __init__(self, app: Any, guard: ConnectionGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_and_close(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        if scope.get("path") in HEALTH_PATHS:
            await self.app(scope, receive, send_and_close)
            return
        self.guard.metrics.rejected.labels("connections_full").inc()
        retry = self.guard.retry_after_s
        body = json.dumps({"error": f"the server has too many open connections; retry after {retry} s"}).encode()
        await send_and_close(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(retry).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout, ``ConnectionGuard``'s cap and JSON refusals (``guard`` is set
    on the subclass ``protocol_class`` makes)."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.header_timer: asyncio.TimerHandle | None = None
        self.heard = False  # bytes arrived while waiting for the headers
        verdict = self.guard.admit(self)
        if verdict is Verdict.REFUSE:
            transport.write(
                raw_json_response(
                    503,
                    f"the server has too many open connections; retry after {self.guard.retry_after_s} s",
                    self.guard.retry_after_s,
                )
            )
            transport.close()
            return
        if verdict is Verdict.HEALTH_ONLY:
            self.app = HealthOnly(self.app, self.guard)
        self.await_request()

    def await_request(self) -> None:
        """Wait for the next request's headers: in the guard's line, with the header timer armed."""
        self.cancel_header_timer()
        self.heard = False
        self.guard.wait(self)
        self.header_timer = self.loop.call_later(self.guard.header_timeout_s, self.header_timeout)

    def cancel_header_timer(self) -> None:
        if getattr(self, "header_timer", None) is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def data_received(self, data: bytes) -> None:
        if self.header_timer is not None:
            self.heard = True
        super().data_received(data)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle and not self.transport.is_closing():  # a request's headers are complete
            self.cancel_header_timer()
            self.guard.busy(self)

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self.await_request()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_header_timer()
        self.guard.forget(self)
        super().connection_lost(exc)

    def close_with(self, reason: str, answer: bytes | None) -> None:
        """Close the connection ourselves, writing ``answer`` first if any; counted by ``reason``."""
        self.cancel_header_timer()
        self.guard.forget(self)
        self.guard.closed_by_us(reason)
        if not self.transport.is_closing():
            if answer is not None:
                self.transport.write(answer)
            self.transport.close()

    def header_timeout(self) -> None:
        self.header_timer = None
        answer = (
            raw_json_response(
                408, f"the request's headers did not arrive within {self.guard.header_timeout_s:g} s; send them at once"
            )
            if self.heard
            else None
        )
        self.close_with("header_timeout", answer)

    def evict(self) -> None:
        """Closed to make room for a new connection (it was waiting longest for its request's headers)."""
        retry = self.guard.retry_after_s
        answer = (
            raw_json_response(503, f"the server has too many open connections; retry after {retry} s", retry)
            if self.heard
            else None
        )
        self.close_with("evicted", answer)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a malformed request, as JSON."""
        self.close_with(
            "bad_request",
            raw_json_response(
                400, "the request is not valid HTTP/1.1 (malformed request line or headers, or headers over 16 KiB)"
            ),
        )


def protocol_class(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """A ``GuardedH11Protocol`` subclass bound to ``guard``, for ``uvicorn.Config(http=...)``."""
    return type("NstServeProtocol", (GuardedH11Protocol,), {"guard": guard})


def connections_allowed(max_connections: int) -> int:
    """``max_connections``, or fewer where the open-file limit cannot hold them: raises the soft limit
    (``ulimit -n``) up to the hard one as needed, and says so when it must lower the cap."""
    needed = max_connections + HEALTH_RESERVE + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    allowed = max(1, soft - HEALTH_RESERVE - FD_HEADROOM)
    log.warning(
        "--max-connections %d lowered to %d: the open-file limit is %d (raise it with ulimit -n)",
        max_connections,
        allowed,
        soft,
    )
    return allowed
