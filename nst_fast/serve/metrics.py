"""Prometheus metrics of one app (their own registry, so that several apps in one process do not collide), and
the ASGI middleware that counts every request by route and status."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Latency buckets in seconds: a small image on a GPU (ms) up to a large one on a CPU (a minute).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


#: ``nst_serve_rejected_total`` reasons: 503s for load (``queue_full``, ``uploads_full``, ``connections_full``: a
#: connection past ``max_connections`` asked for more than health), 408 (``slow_upload``), 504 (``timeout``).
REJECT_REASONS = ("queue_full", "uploads_full", "connections_full", "slow_upload", "timeout")
#: ``nst_serve_connections_closed_total`` reasons: connections the server closed or refused itself.
CLOSE_REASONS = ("header_timeout", "evicted", "over_capacity", "bad_request")


class Metrics:
    """``nst_serve_requests_total{route, status}``, ``nst_serve_request_seconds{route}`` (histogram),
    ``nst_serve_inference_seconds{model}`` (histogram of model time), ``nst_serve_inferences_in_flight``,
    ``nst_serve_queue_length``, ``nst_serve_uploads_in_progress``, ``nst_serve_upload_bytes`` (bytes of uploads
    being received), ``nst_serve_rejected_total{reason}`` (``REJECT_REASONS``), ``nst_serve_open_connections``,
    ``nst_serve_connections_closed_total{reason}`` (``CLOSE_REASONS``)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nst_serve_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "nst_serve_request_seconds",
            "HTTP request latency, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "nst_serve_inference_seconds",
            "Model run time per image, by model",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("nst_serve_inferences_in_flight", "Inferences running now", registry=self.registry)
        self.queue_length = Gauge(
            "nst_serve_queue_length", "Requests waiting for an inference slot", registry=self.registry
        )
        self.uploads_in_progress = Gauge(
            "nst_serve_uploads_in_progress", "Requests reading their upload now", registry=self.registry
        )
        self.upload_bytes = Gauge(
            "nst_serve_upload_bytes", "Bytes of uploads being received now", registry=self.registry
        )
        self.rejected = Counter(
            "nst_serve_rejected",
            "Requests refused for load: queue_full, uploads_full and "
            "connections_full (503), slow_upload (408), timeout (504)",
            ["reason"],
            registry=self.registry,
        )
        self.open_connections = Gauge("nst_serve_open_connections", "Open HTTP connections", registry=self.registry)
        self.connections_closed = Counter(
            "nst_serve_connections_closed",
            "Connections the server closed or refused itself: header_timeout, "
            "evicted (the longest waiting for its headers, to make room), over_capacity, bad_request",
            ["reason"],
            registry=self.registry,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)  # exported as 0 from the start
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason)

    def admission_changed(self, running: int, waiting: int) -> None:
        self.in_flight.set(running)
        self.queue_length.set(waiting)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_label(scope: dict[str, Any], mounts: tuple[str, ...] = ()) -> str:
    """The route template that answered (``/v1/stylize``), the mount prefix a path is under (``/static``: mounted
    apps leave no route in the scope), or ``unmatched``: bounded label values whatever paths clients ask for."""
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    path = scope.get("path", "")
    for prefix in mounts:
        if path.startswith(prefix + "/"):
            return prefix
    return "unmatched"


class MetricsMiddleware:
    """Pure ASGI middleware: counts each HTTP request by route and status and observes its latency (also when
    the app raises: counted as 500). ``mounts``: prefixes of mounted apps (``/static``), counted by prefix."""

    def __init__(self, app: Any, metrics: Metrics, mounts: tuple[str, ...] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.mounts = mounts  # path prefixes of mounted apps, each counted as one route

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_and_record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = route_label(scope, self.mounts)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - start)
