"""nst-serve's connection hygiene: ``ConnectionGuard``'s bookkeeping with stand-in connections, then uvicorn with
the guarded protocol in this process on real 127.0.0.1 sockets: idle and slow-header connections closed, the
cap making room by closing the connection waiting longest, health answered past the cap, JSON for refusals."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import h11
import httpx
import pytest
from serve_support import GOOD, free_port, metric, serve_models

from nst_fast.serve.app import create_app
from nst_fast.serve.cli import server_config
from nst_fast.serve.connections import HEALTH_RESERVE, ConnectionGuard, Verdict, raw_json_response
from nst_fast.serve.metrics import Metrics
from nst_fast.serve.settings import ServeSettings

__all__ = ["serve_models"]  # the fixture "models"


class Connection:
    """Stands in for a protocol instance: ``evict()`` tells the guard it is gone, as the protocol does."""

    def __init__(self, guard: ConnectionGuard, name: str) -> None:
        self.guard, self.name, self.evicted = guard, name, False

    def evict(self) -> None:
        self.evicted = True
        self.guard.forget(self)
        self.guard.closed_by_us("evicted")


def test_the_guard_makes_room_by_closing_the_connection_waiting_longest() -> None:
    metrics = Metrics()
    guard = ConnectionGuard(ServeSettings(max_connections=3), metrics)
    a, b, c, d = (Connection(guard, name) for name in "abcd")
    for connection in (a, b, c):
        assert guard.admit(connection) is Verdict.SERVE
        guard.wait(connection)
    guard.busy(a)  # a request in progress: never closed to make room
    guard.wait(b)  # b answered a request and waits again: now the newest in line
    assert guard.admit(d) is Verdict.SERVE and c.evicted and not (a.evicted or b.evicted)
    assert guard.open == {a, b, d} and list(guard.waiting) == [b]
    assert metric(metrics.render().decode(), "nst_serve_connections_closed_total", reason="evicted") == 1
    assert metric(metrics.render().decode(), "nst_serve_open_connections") == 3


def test_past_the_cap_connections_are_for_health_then_refused() -> None:
    metrics = Metrics()
    guard = ConnectionGuard(ServeSettings(max_connections=2), metrics)
    busy = [Connection(guard, str(i)) for i in range(2 + HEALTH_RESERVE)]
    verdicts = [guard.admit(connection) for connection in busy]  # none waits: nothing to evict
    assert verdicts == [Verdict.SERVE] * 2 + [Verdict.HEALTH_ONLY] * HEALTH_RESERVE
    assert guard.admit(Connection(guard, "one too many")) is Verdict.REFUSE
    assert metric(metrics.render().decode(), "nst_serve_connections_closed_total", reason="over_capacity") == 1
    guard.forget(busy[0])
    assert guard.admit(Connection(guard, "again")) is Verdict.HEALTH_ONLY


def test_raw_refusals_are_complete_json_answers() -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.receive_data(raw_json_response(503, "too many", retry_after_s=2))
    response, data = client.next_event(), client.next_event()
    assert response.status_code == 503 and (b"retry-after", b"2") in response.headers
    assert (b"connection", b"close") in response.headers and json.loads(data.data) == {"error": "too many"}
    assert isinstance(client.next_event(), h11.EndOfMessage)


# --- uvicorn with the guarded protocol, real sockets -------------------------------------------------------------


@contextlib.contextmanager
def running(app, settings: ServeSettings) -> Iterator[str]:
    """``app`` served by uvicorn as ``nst-serve`` configures it, in a thread of this process; its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(server_config(app, settings, "127.0.0.1", port, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not (server.started and httpx.get(f"{url}/readyz", timeout=5).status_code == 200):
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop"


def connect(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def json_answer(raw: bytes) -> tuple[str, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return status, headers, json.loads(body)


@pytest.mark.slow
def test_idle_and_slow_clients_are_closed_and_health_stays_answered(models) -> None:
    settings = ServeSettings(max_connections=40, header_timeout_s=1.0, keep_alive_s=0.5)
    app = create_app([models["wave"]], settings)
    with running(app, settings) as url:
        port = int(url.rsplit(":", 1)[1])
        slow = connect(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ab")  # never ends its headers
        time.sleep(0.3)  # its bytes are read: closing it says why
        idle = [connect(port) for _ in range(150)]  # past the cap: the ones waiting longest are closed
        assert httpx.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
        response = httpx.post(f"{url}/v1/stylize", files={"image": ("p.png", GOOD)}, timeout=30)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        status, headers, body = json_answer(read_all(slow))  # evicted, or timed out: either way JSON
        assert status.startswith(("HTTP/1.1 408", "HTTP/1.1 503")) and headers["connection"] == "close", status
        assert set(body) == {"error"}
        assert [read_all(sock) for sock in idle] == [b""] * len(idle)  # closed without a word
        bad = connect(port, b"NONSENSE\r\n\r\n")
        status, headers, body = json_answer(read_all(bad))
        assert status == "HTTP/1.1 400 Bad Request" and "not valid HTTP/1.1" in body["error"]
        text = httpx.get(f"{url}/metrics", timeout=5).text
    closed = {
        reason: metric(text, "nst_serve_connections_closed_total", reason=reason)
        for reason in ("evicted", "header_timeout", "bad_request")
    }
    assert closed["evicted"] >= 150 - 40 and closed["evicted"] + closed["header_timeout"] >= 151, closed
    assert closed["bad_request"] == 1


@pytest.mark.slow
def test_a_partial_request_gets_a_json_408_after_the_header_timeout(models) -> None:
    settings = ServeSettings(header_timeout_s=0.5)
    with running(create_app([models["wave"]], settings), settings) as url:
        port = int(url.rsplit(":", 1)[1])
        start = time.monotonic()
        status, headers, body = json_answer(read_all(connect(port, b"POST /v1/stylize HTTP/1.1\r\nHost: x\r\n")))
        assert time.monotonic() - start >= 0.5
        assert status == "HTTP/1.1 408 Request Timeout" and headers["content-type"] == "application/json"
        assert body == {"error": "the request's headers did not arrive within 0.5 s; send them at once"}
        text = httpx.get(f"{url}/metrics", timeout=5).text
    assert metric(text, "nst_serve_connections_closed_total", reason="header_timeout") == 1


@pytest.mark.slow
def test_when_every_connection_is_busy_health_is_still_answered(models) -> None:
    """Connections with an upload in progress cannot be closed to make room: past the cap, a new connection may
    still ask /healthz and /readyz; anything else gets a JSON 503 with Retry-After."""
    settings = ServeSettings(max_connections=5, min_upload_rate=0, retry_after_s=2)
    with running(create_app([models["wave"]], settings), settings) as url:
        port = int(url.rsplit(":", 1)[1])
        head = (
            b"POST /v1/stylize HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 1000\r\n\r\n--b\r\n"
        )
        uploads = [connect(port, head) for _ in range(5)]
        time.sleep(0.5)  # their headers are in: five requests in progress, none waiting to be closed
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 503
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{url}/readyz", timeout=5).json()["status"] == "ready"
        response = httpx.post(f"{url}/v1/stylize", files={"image": ("p.png", GOOD)}, timeout=10)
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert response.json() == {"error": "the server has too many open connections; retry after 2 s"}
        for sock in uploads:
            sock.close()
        deadline = time.monotonic() + 10
        while httpx.post(f"{url}/v1/stylize", files={"image": ("p.png", GOOD)}, timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "stylising did not come back once the uploads left"
            time.sleep(0.1)
        text = httpx.get(f"{url}/metrics", timeout=5).text
    assert metric(text, "nst_serve_rejected_total", reason="connections_full") >= 1
