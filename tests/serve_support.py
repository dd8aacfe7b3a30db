"""Shared by the nst-serve tests: the tiny models, an in-process client, request helpers, a model made slow on
demand, an upload fed to the ASGI app piece by piece, and a live ``python -m nst_fast.serve``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from image_factory import pattern
from onnx_factory import thumbnail_base64, tiny_onnx_model
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from nst_fast.images import to_uint8
from nst_fast.serve.app import create_app
from nst_fast.serve.settings import ServeSettings
from nst_fast.stylize import load_model, stylize_array
from nst_fast.stylize.models import StyleModel

REPO_ROOT = Path(__file__).resolve().parents[1]
TRIO = ["starry", "wave", "udnie"]
THUMB_COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


@pytest.fixture(scope="session", name="models")
def serve_models(tmp_path_factory) -> dict[str, Path]:
    """A single-style model without thumbnails (an older export) and a three-style one with the identity and
    thumbnails."""
    root = tmp_path_factory.mktemp("serve_models")
    return {
        "wave": tiny_onnx_model(root / "wave.onnx", ["wave"], steps=3),
        "trio": tiny_onnx_model(
            root / "trio.onnx",
            TRIO,
            identity=True,
            steps=1234,
            seed=1,
            thumbnails=[thumbnail_base64(c) for c in THUMB_COLORS],
        ),
    }


def wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 10
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.02)


@pytest.fixture
def serve(models):
    """``serve(settings)``: a started TestClient on both models (the single-style one is the default)."""
    with contextlib.ExitStack() as stack:

        def start(settings: ServeSettings | None = None) -> TestClient:
            client = stack.enter_context(TestClient(create_app([models["wave"], models["trio"]], settings)))
            wait_ready(client)
            return client

        yield start


def encoded(array: np.ndarray, image_format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def post(client: TestClient, image: bytes | None, filename: str = "photo.png", **fields: str) -> httpx.Response:
    files = {"image": (filename, image, "application/octet-stream")} if image is not None else None
    return client.post("/v1/stylize", files=files, data=fields)


def decoded(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def core_output(model_path: Path, rgb: np.ndarray, weights: list[float] | None, keep_color: bool = False) -> np.ndarray:
    """``nst-stylize``'s core on the same model with explicit style weights, as uint8."""
    vector = None if weights is None else np.array(weights, dtype=np.float32)
    return to_uint8(stylize_array(load_model(model_path), rgb[None], keep_color, vector)[0])


def max_level_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def metric(client_or_text, name: str, **labels: str) -> float:
    """A sample's value from /metrics (0 when absent)."""
    text = client_or_text if isinstance(client_or_text, str) else client_or_text.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


# --- Routes ---------------------------------------------------------------------------------------------------


GOOD = encoded(pattern(16, 16))


def check_error(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and message in body["error"], body
    assert "Traceback" not in response.text


class GatedModel(StyleModel):
    """Wraps a model; every call waits for ``gate`` (inference made slow deterministically)."""

    def __init__(self, inner: StyleModel) -> None:
        self.inner = inner
        self.styles, self.identity, self.takes_weights = inner.styles, inner.identity, inner.takes_weights
        self.description = inner.description
        self.gate = threading.Event()

    def __call__(self, batch, weights=None):
        assert self.gate.wait(10), "gate never opened"
        return self.inner(batch, weights)


def gate(client: TestClient) -> GatedModel:
    served = client.app.state.registry.models["wave"]
    served.model = GatedModel(served.model)
    return served.model


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def in_background(client: TestClient, results: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(post(client, GOOD)))
    thread.start()
    return thread


class AsgiUpload:
    """One ``POST /v1/stylize`` sent straight to the ASGI app, as a connection would: its body arrives when the
    test sends it, and the client may leave (``http.disconnect``); records the answer's status, headers and
    body. ``declare_length`` sends a ``Content-Length`` header."""

    def __init__(self, app, image: bytes = GOOD, declare_length: bool = False) -> None:
        request = httpx.Request("POST", "http://test/v1/stylize", files={"image": ("p.png", image)})
        self.body = request.read()
        self.incoming: asyncio.Queue = asyncio.Queue()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.answer_body = b""
        headers = [(b"host", b"test"), (b"content-type", request.headers["content-type"].encode())]
        if declare_length:
            headers.append((b"content-length", str(len(self.body)).encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/stylize",
            "raw_path": b"/v1/stylize",
            "root_path": "",
            "query_string": b"",
            "client": ("127.0.0.1", 50000),
            "server": ("test", 80),
            "headers": headers,
        }
        self.task = asyncio.create_task(app(scope, self.incoming.get, self.send))

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        else:
            self.answer_body += message.get("body", b"")

    def send_part(self, end: int = 100, start: int = 0) -> None:
        """Bytes ``start:end`` of the body, more to come."""
        self.incoming.put_nowait({"type": "http.request", "body": self.body[start:end], "more_body": True})

    def send_all(self, start: int = 0) -> None:
        """The body from ``start`` to its end."""
        self.incoming.put_nowait({"type": "http.request", "body": self.body[start:], "more_body": False})

    def leave(self) -> None:
        self.incoming.put_nowait({"type": "http.disconnect"})

    async def answer(self, timeout_s: float = 10) -> int | None:
        """The status answered; the app must not raise (an error escaping it is a 500 and a traceback)."""
        await asyncio.wait_for(asyncio.shield(self.task), timeout_s)
        return self.status

    def error(self) -> str:
        return json.loads(self.answer_body)["error"]


async def until(condition, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def live_server_process(
    *options: str, command: tuple[str, ...] = ("-m", "nst_fast.serve")
) -> Iterator[tuple[subprocess.Popen, str]]:
    """``python -m nst_fast.serve OPTIONS`` (or another ``command`` taking the same options) on a free 127.0.0.1
    port, ready; yields the process and its URL, and kills it if the test left it running."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, *command, *options, "--port", str(port), "--log-level", "warning"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
