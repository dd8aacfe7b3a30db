"""nst-serve: every route, limit and bad input in-process (FastAPI's TestClient), outputs checked against the
inference core run on the same model, and a live server under concurrent load and SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps
from prometheus_client.parser import text_string_to_metric_families

from image_factory import pattern
from onnx_factory import thumbnail_base64, tiny_onnx_model

from nst_fast.errors import StylizeError
from nst_fast.images import preserve_color, to_uint8
from nst_fast.serve.app import create_app
from nst_fast.serve.cli import main as serve_main
from nst_fast.serve.settings import ServeSettings, available_cpus
from nst_fast.stylize import load_model, stylize_array
from nst_fast.stylize.models import StyleModel

REPO_ROOT = Path(__file__).resolve().parents[1]
TRIO = ["starry", "wave", "udnie"]
THUMB_COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """A single-style model without thumbnails (an older export) and a three-style one with the identity and
    thumbnails."""
    root = tmp_path_factory.mktemp("serve_models")
    return {
        "wave": tiny_onnx_model(root / "wave.onnx", ["wave"], steps=3),
        "trio": tiny_onnx_model(root / "trio.onnx", TRIO, identity=True, steps=1234, seed=1,
                                thumbnails=[thumbnail_base64(c) for c in THUMB_COLORS]),
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


def test_styles_describe_models_with_thumbnails(serve) -> None:
    body = serve().get("/v1/styles").json()
    assert body["default_model"] == "wave"
    wave, trio = body["models"]
    assert {k: wave[k] for k in ("name", "file", "identity", "blend", "training_steps")} == {
        "name": "wave", "file": "wave.onnx", "identity": False, "blend": False, "training_steps": 3}
    assert wave["styles"] == [{"name": "wave", "thumbnail": None}] and "wave.onnx" in wave["description"]
    assert (trio["name"], trio["identity"], trio["blend"], trio["training_steps"]) == ("trio", True, True, 1234)
    assert [s["name"] for s in trio["styles"]] == TRIO
    for style, color in zip(trio["styles"], THUMB_COLORS):
        prefix = "data:image/jpeg;base64,"
        assert style["thumbnail"].startswith(prefix)
        thumb = Image.open(io.BytesIO(base64.b64decode(style["thumbnail"][len(prefix):])))
        assert thumb.format == "JPEG" and max_level_diff(np.asarray(thumb)[8, 8], np.array(color)) <= 8


def test_health_readiness_page_and_metrics(models, serve) -> None:
    unstarted = TestClient(create_app([models["wave"]]))  # lifespan not run: models not warmed up
    assert unstarted.get("/healthz").json() == {"status": "ok"}
    response = unstarted.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "starting" and "error" in response.json()
    assert unstarted.head("/readyz").status_code == 503
    client = serve()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "models": ["wave", "trio"]}
    for route in ("/healthz", "/readyz"):  # load balancers' probes may use HEAD
        response = client.head(route)
        assert response.status_code == 200 and response.content == b""
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get("/static/index.html").content == page.content
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert metric(response.text, "nst_serve_requests_total", route="/readyz", status="200") >= 1
    assert metric(response.text, "nst_serve_inferences_in_flight") == 0
    assert metric(response.text, "nst_serve_requests_total", route="/static", status="200") == 1
    client.get("/static/absent.js")
    client.get("/elsewhere")
    response = client.get("/metrics")
    assert metric(response.text, "nst_serve_requests_total", route="/static", status="404") == 1
    assert metric(response.text, "nst_serve_requests_total", route="unmatched", status="404") == 1


# --- Outputs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "model", "weights"), [
    ({}, "wave", None),
    ({"model": "trio", "style": "wave"}, "trio", [0.0, 1.0, 0.0]),
    ({"model": "trio", "style": "starry=0.6,udnie=0.4"}, "trio", [0.6, 0.0, 0.4]),
    ({"model": "trio", "style": "udnie", "strength": "0.3"}, "trio", [0.0, 0.0, 0.3]),
    ({"model": "trio", "style": "starry=0.5,wave=0.5", "strength": "0"}, "trio", [0.0, 0.0, 0.0]),
], ids=["single", "one-style", "blend", "strength", "strength-0"])
def test_output_matches_the_core_with_the_same_weights(models, serve, fields, model, weights) -> None:
    rgb = pattern(23, 31, seed=4)
    response = post(serve(), encoded(rgb), **fields)
    assert response.headers["content-type"] == "image/png" and float(response.headers["x-inference-ms"]) >= 0
    got = decoded(response)
    assert got.shape == (23, 31, 3)
    assert max_level_diff(got, core_output(models[model], rgb, weights)) <= 1


def test_styles_and_preserve_color_change_the_output(models, serve) -> None:
    client, rgb = serve(), pattern(20, 24, seed=5)
    starry = decoded(post(client, encoded(rgb), model="trio", style="starry"))
    wave = decoded(post(client, encoded(rgb), model="trio", style="wave"))
    assert max_level_diff(starry, wave) > 20  # the weights reach the model
    kept = decoded(post(client, encoded(rgb), model="trio", style="wave", preserve_color="true"))
    stylized = stylize_array(load_model(models["trio"]), rgb[None], False, np.array([0, 1, 0], np.float32))[0]
    assert max_level_diff(kept, to_uint8(preserve_color(rgb / 255.0, stylized))) <= 1


def test_exif_rotated_jpeg_comes_back_upright_at_its_displayed_size(models, serve) -> None:
    stored = pattern(24, 40, seed=3)  # stored 40 wide, 24 high; orientation 6: displayed rotated, 24 x 40
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = encoded(stored, "JPEG", exif=exif, quality=95)
    got = decoded(post(serve(), jpeg, "phone.jpg"))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg))).convert("RGB"))
    assert got.shape == upright.shape == (40, 24, 3)
    assert max_level_diff(got, core_output(models["wave"], upright, None)) <= 1


def test_max_size_formats_and_alpha(serve) -> None:
    client, rgb = serve(), pattern(40, 60, seed=6)
    for image_format, content_type in (("jpeg", "image/jpeg"), ("webp", "image/webp"), ("png", "image/png")):
        response = post(client, encoded(rgb), max_size="20", format=image_format)
        assert response.status_code == 200 and response.headers["content-type"] == content_type
        assert Image.open(io.BytesIO(response.content)).size == (20, 13)
    alpha = np.tile(np.linspace(0, 255, 60).astype(np.uint8), (40, 1))
    out = Image.open(io.BytesIO(post(client, encoded(np.dstack([rgb, alpha])), format="png").content))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], alpha)


@pytest.mark.parametrize(("image_format", "largest"), [("webp", 16383), ("jpeg", 65500)])
def test_too_wide_for_the_format_is_a_400_before_inference(serve, image_format, largest) -> None:
    client, wide = serve(ServeSettings(max_side=100_000)), encoded(pattern(6, largest + 1, seed=7))
    inferences = metric(client, "nst_serve_inference_seconds_count", model="wave")
    check_error(post(client, wide, format=image_format), 400,
                f"the {largest + 1}x6 result is too large for format {image_format}, which stores at most "
                f"{largest} pixels a side; use format png or max_size <= {largest}")
    assert metric(client, "nst_serve_inference_seconds_count", model="wave") == inferences  # the model did not run
    assert Image.open(io.BytesIO(post(client, wide, format=image_format, max_size=str(largest)).content)).size == (
        largest, 6)


def test_max_side_caps_the_size_stylised_and_requests_may_only_lower_it(models, serve) -> None:
    client, rgb = serve(ServeSettings(max_side=32)), pattern(40, 60, seed=8)
    for fields, size in (({}, (32, 21)), ({"max_size": "100"}, (32, 21)), ({"max_size": "20"}, (20, 13))):
        assert Image.open(io.BytesIO(post(client, encoded(rgb), **fields).content)).size == size, fields
    # The server's ONNX Runtime sessions keep no CPU arena (it would hold the largest request's activations).
    assert not client.app.state.registry.models["wave"].model.session.get_session_options().enable_cpu_mem_arena
    assert ServeSettings().max_side == 2048
    with pytest.raises(ValueError, match="max_side must be at least 5 pixels, got 4"):
        ServeSettings(max_side=4)


# --- Bad requests: 4xx with {"error": ...}, and the server keeps serving --------------------------------------


def truncated_jpeg() -> bytes:
    data = encoded(pattern(64, 64), "JPEG")
    return data[: len(data) // 2]


def noise_png(side: int) -> bytes:
    return encoded(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))


GOOD = encoded(pattern(16, 16))
BAD_REQUESTS = {
    "not-an-image": (dict(image=b"hello, not an image"), 400, "not a readable image"),
    "truncated": (dict(image=truncated_jpeg()), 400, "not a readable image"),
    "empty": (dict(image=b""), 400, "empty file"),
    "two-bytes": (dict(image=b"ab"), 400, "not a readable image"),
    "ppm": (dict(image=encoded(pattern(16, 16), "PPM")), 400, "as one of PNG, JPEG, MPO, WEBP, TIFF, BMP, GIF"),
    "upload-too-large": (dict(image=noise_png(150)), 413, "over the limit of 50000 bytes"),
    "too-many-pixels": (dict(image=encoded(np.zeros((250, 250, 3), np.uint8))), 413, "over the limit of 40000"),
    "too-small": (dict(image=encoded(pattern(3, 3))), 400, "too small"),
    "unknown-style": (dict(model="trio", style="monet"), 400, "unknown style 'monet'; this model has: starry, wave"),
    "no-style": (dict(model="trio"), 400, "this model has 3 styles: choose with style NAME"),
    "blend-over-1": (dict(model="trio", style="wave=0.7,udnie=0.6"), 400, "weights sum to 1.3 > 1"),
    "strength-nan": (dict(model="trio", style="wave", strength="abc"), 400, "strength 'abc' is not a number"),
    "strength-range": (dict(model="trio", style="wave", strength="1.5"), 400, "strength 1.5 is out of range"),
    "strength-no-identity": (dict(strength="0.5"), 400, "strength needs a model trained with the identity"),
    "unknown-field": (dict(colour="red"), 400, "unknown field 'colour'; the fields are: image (file)"),
    "unknown-model": (dict(model="monet"), 404, "unknown model 'monet'; this server has: wave, trio"),
    "bad-format": (dict(format="gif"), 400, "format 'gif' is not one of png, jpeg, webp"),
    "bad-max-size": (dict(max_size="big"), 400, "max_size 'big' must be a whole number"),
    "bad-preserve-color": (dict(preserve_color="maybe"), 400, "preserve_color 'maybe' is not a boolean"),
    "form-without-file": (dict(image=None, style="wave"), 400, "send multipart/form-data with the image in"),
}


@pytest.fixture(scope="module")
def strict_client(models):
    settings = ServeSettings(max_upload_bytes=50_000, max_pixels=200 * 200)
    with TestClient(create_app([models["wave"], models["trio"]], settings)) as client:
        wait_ready(client)
        yield client


def check_error(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and message in body["error"], body
    assert "Traceback" not in response.text


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_a_4xx_json_error(strict_client, case) -> None:
    fields, status, message = BAD_REQUESTS[case]
    fields = dict(fields)
    check_error(post(strict_client, fields.pop("image", GOOD), **fields), status, message)
    assert post(strict_client, GOOD).status_code == 200  # still serving


def test_malformed_requests_are_4xx_json_errors(strict_client) -> None:
    check_error(strict_client.post("/v1/stylize", json={"image": "x"}), 400, "send multipart/form-data")
    check_error(strict_client.post("/v1/stylize", files={"style": (None, "wave")}), 400,
                "no image: send the photo in the file field 'image'")
    check_error(strict_client.post("/v1/stylize", data={"image": "text"}, files={"other": ("a", b"b")}), 400,
                "unknown field 'other'")
    check_error(strict_client.post("/v1/stylize", data={"image": "not a file"}, files={"style": ("a", b"b")}),
                400, "field 'image' must be one uploaded file")
    check_error(strict_client.post("/v1/stylize", files=[("image", ("a.png", GOOD)), ("image", ("b.png", GOOD))]),
                400, "Too many files")
    check_error(strict_client.post("/v1/stylize", files={"image": ("a.png", GOOD)}, data={"format": ["png", "jpeg"]}),
                400, "field 'format' was sent 2 times")
    mixed_case = httpx.Request("POST", "http://x", files={"image": ("a.png", GOOD)})
    response = strict_client.post("/v1/stylize", content=mixed_case.read(), headers={
        "content-type": mixed_case.headers["content-type"].replace("multipart/form-data", "Multipart/Form-Data")})
    assert response.status_code == 200, response.text  # media types are case-insensitive (RFC 9110)
    check_error(strict_client.post("/v1/stylize", content=b"--x\r\ngarbage",
                                   headers={"content-type": "multipart/form-data; boundary=x"}), 400, "no image")
    check_error(strict_client.get("/v1/stylize"), 405, "GET is not allowed on /v1/stylize; use POST")
    check_error(strict_client.delete("/healthz"), 405, "DELETE is not allowed on /healthz; use GET, HEAD")
    check_error(strict_client.get("/v2/anything"), 404, "nothing at GET /v2/anything; the routes are")

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        request = httpx.Request("POST", "http://x", files={"image": ("big.png", noise_png(150))})
        body = request.read()
        yield from (body[i:i + 8192] for i in range(0, len(body), 8192))

    boundary_request = httpx.Request("POST", "http://x", files={"image": ("big.png", noise_png(150))})
    response = strict_client.post("/v1/stylize", content=chunks(),
                                  headers={"content-type": boundary_request.headers["content-type"]})
    check_error(response, 413, "over the limit of 50000 bytes")
    assert post(strict_client, GOOD).status_code == 200


# --- Load limits: queue, timeout, metrics -------------------------------------------------------------------------


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


def test_full_queue_gives_503_with_retry_after(serve) -> None:
    client = serve(ServeSettings(max_concurrent=1, max_queue=1, retry_after_s=7))
    model, admission, results = gate(client), client.app.state.admission, []
    first = in_background(client, results)
    wait_for(lambda: admission.running == 1, "the first request to run")
    second = in_background(client, results)
    wait_for(lambda: admission.waiting == 1, "the second request to queue")
    assert client.get("/healthz").status_code == 200  # answered while the slots are taken
    busy = client.get("/metrics").text
    assert metric(busy, "nst_serve_inferences_in_flight") == 1 and metric(busy, "nst_serve_queue_length") == 1
    response = post(client, GOOD)
    check_error(response, 503, "the server is busy")
    assert response.headers["retry-after"] == "7"
    model.gate.set()
    first.join(10)
    second.join(10)
    assert [r.status_code for r in results] == [200, 200]
    text = client.get("/metrics").text
    assert metric(text, "nst_serve_requests_total", route="/v1/stylize", status="200") == 2
    assert metric(text, "nst_serve_requests_total", route="/v1/stylize", status="503") == 1
    assert metric(text, "nst_serve_rejected_total", reason="queue_full") == 1
    assert metric(text, "nst_serve_request_seconds_count", route="/v1/stylize") == 3
    assert metric(text, "nst_serve_inference_seconds_count", model="wave") == 2
    assert metric(text, "nst_serve_inferences_in_flight") == 0 and metric(text, "nst_serve_queue_length") == 0


def test_timeout_gives_504_and_the_slot_is_freed_when_the_run_ends(serve) -> None:
    client = serve(ServeSettings(max_concurrent=1, max_queue=2, timeout_s=0.5))
    model, admission, results = gate(client), client.app.state.admission, []
    first = in_background(client, results)
    wait_for(lambda: admission.running == 1, "the first request to run")
    check_error(post(client, GOOD), 504, "timed out after 0.5 s waiting for a free inference slot")
    first.join(10)
    check_error(results[0], 504, "timed out after 0.5 s stylising")
    assert admission.running == 1  # the run has not ended: its slot stays taken
    model.gate.set()
    wait_for(lambda: admission.running == 0, "the slot to be freed")
    assert post(client, GOOD).status_code == 200
    assert metric(client, "nst_serve_rejected_total", reason="timeout") == 2


def test_admission_runs_in_arrival_order_and_refuses_past_the_queue() -> None:
    from nst_fast.serve.limits import Admission, Overloaded

    async def scenario() -> tuple[list[str], list[tuple[int, int]]]:
        counts: list[tuple[int, int]] = []
        admission = Admission(1, 2, timeout_s=10, on_change=lambda running, waiting: counts.append((running, waiting)))
        order, release = [], threading.Event()

        def work(name: str) -> str:
            release.wait(10)
            order.append(name)
            return name

        tasks = [asyncio.create_task(admission.run(lambda n=n: work(n))) for n in "abc"]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await admission.run(lambda: work("d"))
        release.set()
        assert await asyncio.gather(*tasks) == ["a", "b", "c"]
        admission.shutdown()
        return order, counts

    order, counts = asyncio.run(scenario())
    assert order == ["a", "b", "c"]
    assert counts == [(1, 0), (1, 1), (1, 2), (1, 1), (1, 0), (0, 0)]


class AsgiUpload:
    """One ``POST /v1/stylize`` sent straight to the ASGI app, as a connection would: its body arrives when the
    test sends it, and the client may leave (``http.disconnect``); records the status the app answers."""

    def __init__(self, app, image: bytes = GOOD) -> None:
        request = httpx.Request("POST", "http://test/v1/stylize", files={"image": ("p.png", image)})
        self.body = request.read()
        self.incoming: asyncio.Queue = asyncio.Queue()
        self.status: int | None = None
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/stylize", "raw_path": b"/v1/stylize", "root_path": "",
                 "query_string": b"", "client": ("127.0.0.1", 50000), "server": ("test", 80),
                 "headers": [(b"host", b"test"), (b"content-type", request.headers["content-type"].encode())]}
        self.task = asyncio.create_task(app(scope, self.incoming.get, self.send))

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]

    def send_part(self, end: int = 100) -> None:
        self.incoming.put_nowait({"type": "http.request", "body": self.body[:end], "more_body": True})

    def send_all(self) -> None:
        self.incoming.put_nowait({"type": "http.request", "body": self.body, "more_body": False})

    def leave(self) -> None:
        self.incoming.put_nowait({"type": "http.disconnect"})

    async def answer(self, timeout_s: float = 10) -> int | None:
        """The status answered; the app must not raise (an error escaping it is a 500 and a traceback)."""
        await asyncio.wait_for(asyncio.shield(self.task), timeout_s)
        return self.status


async def until(condition, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_a_client_leaving_mid_upload_is_no_error(models, caplog) -> None:
    app = create_app([models["wave"]])

    async def scenario() -> int | None:
        upload = AsgiUpload(app)
        upload.send_part()
        await asyncio.sleep(0.05)
        upload.leave()
        return await upload.answer()

    with caplog.at_level("WARNING"):
        assert asyncio.run(scenario()) == 499  # recorded only: the client is gone
    app.state.admission.shutdown()
    assert [record.getMessage() for record in caplog.records] == []
    text = app.state.metrics.render().decode()
    assert metric(text, "nst_serve_requests_total", route="/v1/stylize", status="499") == 1
    assert metric(text, "nst_serve_requests_total", route="/v1/stylize", status="500") == 0
    assert metric(text, "nst_serve_uploads_in_progress") == 0


def test_uploads_in_progress_are_limited_and_must_arrive_in_time(models) -> None:
    """At most max_concurrent + max_queue uploads are read at once (503 for more, before reading), and an upload
    that stalls gets 408 after timeout_s, freeing its place."""
    app = create_app([models["wave"]], ServeSettings(max_concurrent=1, max_queue=1, timeout_s=1.0))
    metrics = app.state.metrics

    async def scenario() -> tuple[list, int | None, int | None]:
        stalled = [AsgiUpload(app), AsgiUpload(app)]
        for upload in stalled:
            upload.send_part()
        await until(lambda: metrics.uploads_in_progress._value.get() == 2, "two uploads in progress")
        refused = AsgiUpload(app)
        refused.send_all()
        refused_status = await refused.answer()
        statuses = [await upload.answer() for upload in stalled]
        later = AsgiUpload(app)
        later.send_all()
        return statuses, refused_status, await later.answer()

    start = time.monotonic()
    stalled, refused, later = asyncio.run(scenario())
    app.state.admission.shutdown()
    assert refused == 503 and stalled == [408, 408] and later == 200
    assert time.monotonic() - start < 5
    text = metrics.render().decode()
    assert metric(text, "nst_serve_rejected_total", reason="uploads_full") == 1
    assert metric(text, "nst_serve_uploads_in_progress") == 0


def test_a_client_leaving_the_queue_frees_its_place_and_never_runs(models) -> None:
    app = create_app([models["wave"]], ServeSettings(max_concurrent=1, max_queue=1))
    served = app.state.registry.models["wave"]
    served.model = model = GatedModel(served.model)
    admission, metrics = app.state.admission, app.state.metrics

    async def scenario() -> list[int | None]:
        running, leaving = AsgiUpload(app), AsgiUpload(app)
        running.send_all()
        await until(lambda: admission.running == 1, "the first request to run")
        leaving.send_all()
        await until(lambda: admission.waiting == 1, "the second request to queue")
        leaving.leave()
        left = await leaving.answer(timeout_s=5)
        assert admission.waiting == 0 and admission.running == 1
        queued = AsgiUpload(app)  # the queue place is free again
        queued.send_all()
        await until(lambda: admission.waiting == 1, "the third request to queue")
        model.gate.set()
        return [left, await running.answer(), await queued.answer()]

    assert asyncio.run(scenario()) == [499, 200, 200]
    admission.shutdown()
    assert metric(metrics.render().decode(), "nst_serve_inference_seconds_count", model="wave") == 2


class BrokenModel(GatedModel):
    """A model whose every run fails, as ONNX Runtime does when it runs out of memory."""

    def __call__(self, batch, weights=None):
        raise StylizeError("ONNX Runtime failed on input (1, 64, 64, 3) (out of memory)")


def test_a_failing_model_is_reported_by_readiness_and_as_a_500(models) -> None:
    app = create_app([models["wave"]])
    served = app.state.registry.models["wave"]
    served.model = BrokenModel(served.model)
    with TestClient(app) as client:
        wait_for(lambda: client.get("/readyz").json()["status"] != "starting", "the warm-up to end")
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["status"] == "failed"
        assert response.json()["error"] == ("warm-up of model 'wave' failed (3 of 3 tries): ONNX Runtime failed on "
                                            "input (1, 64, 64, 3) (out of memory)")
        response = post(client, GOOD)
        assert response.status_code == 500 and response.json() == {
            "error": "the model failed: ONNX Runtime failed on input (1, 64, 64, 3) (out of memory)"}
        assert client.get("/healthz").status_code == 200


def test_warm_up_has_its_own_deadline_and_does_not_queue(models) -> None:
    """A first run slower than the requests' timeout, with the only queue place taken, still makes the server
    ready: the warm-up runs outside admission with its own deadline."""
    app = create_app([models["wave"]], ServeSettings(max_concurrent=1, max_queue=0, timeout_s=0.2))
    served = app.state.registry.models["wave"]
    served.model = model = GatedModel(served.model)
    with TestClient(app) as client:
        time.sleep(0.5)  # the warm-up's run is held past the requests' timeout
        assert client.get("/readyz").json()["status"] == "starting"
        model.gate.set()
        wait_for(lambda: client.get("/readyz").json()["status"] != "starting", "the warm-up to end")
        assert client.get("/readyz").json() == {"status": "ready", "models": ["wave"]}
        assert metric(client, "nst_serve_inference_seconds_count", model="wave") == 0  # not a request


# --- Settings, models, command line -------------------------------------------------------------------------------


def test_threads_default_shares_the_cores(models) -> None:
    assert ServeSettings(max_concurrent=2).intra_op_threads == max(1, available_cpus() // 2)
    assert ServeSettings(max_concurrent=64).intra_op_threads == 1
    app = create_app([models["wave"]], ServeSettings(threads=3))
    session = app.state.registry.models["wave"].model.session
    assert session.get_session_options().intra_op_num_threads == 3
    with pytest.raises(ValueError, match="max_concurrent must be at least 1, got 0"):
        ServeSettings(max_concurrent=0)


def test_models_that_cannot_be_served_are_refused(models, tmp_path) -> None:
    with pytest.raises(StylizeError, match="two models are named 'wave'"):
        create_app([models["wave"], tiny_onnx_model(tmp_path / "wave.onnx", ["wave"])])
    (tmp_path / "m.ckpt").write_bytes(b"x")
    with pytest.raises(StylizeError, match="serves ONNX exports only"):
        create_app([tmp_path / "m.ckpt"])
    with pytest.raises(StylizeError, match="does not exist"):
        create_app([tmp_path / "absent.onnx"])


def test_cli_usage_errors(tmp_path, capsys) -> None:
    assert serve_main(["--model", str(tmp_path / "absent.onnx")]) == 2
    assert "nst-serve: error: model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        serve_main(["--model", "m.onnx", "--max-concurrent", "0"])
    assert exit_info.value.code == 2 and "max_concurrent must be at least 1" in capsys.readouterr().err


def test_cli_limits_open_connections(monkeypatch) -> None:
    import uvicorn

    from nst_fast.serve.cli import build_parser, run_server, settings_from_args

    configs = []

    class Server:  # records the config uvicorn would run with
        def __init__(self, config) -> None:
            configs.append(config)

        def run(self) -> None:
            pass

    monkeypatch.setattr(uvicorn, "Server", Server)
    settings = settings_from_args(build_parser().parse_args(["--model", "m.onnx", "--max-connections", "7"]))
    run_server(object(), settings, "127.0.0.1", 8000)
    assert settings.max_connections == 7 and configs[0].limit_concurrency == 7
    assert ServeSettings().max_connections == 100


# --- A live server: concurrent load, SIGTERM ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_server(models):
    """``python -m nst_fast.serve`` on 127.0.0.1: one inference at a time, a queue of 4."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nst_fast.serve", "--model", str(models["wave"]), "--port", str(port),
         "--max-concurrent", "1", "--max-queue", "4", "--log-level", "warning"],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
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
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_live_server_under_concurrent_load(live_server) -> None:
    process, url = live_server
    image = encoded(pattern(96, 128))
    # Outcomes are collected in the threads and checked here: an assert in a thread would only be a warning.
    answers: list[tuple[int, str]] = []  # (status, what was wrong with the answer, or "")
    health: list[int | str] = []  # statuses, or the exception a probe met
    errors: list[str] = []
    stop = time.monotonic() + 3.0

    def check(response: httpx.Response) -> str:
        if response.status_code == 200:
            size = Image.open(io.BytesIO(response.content)).size
            return "" if size == (128, 96) else f"size {size}"
        if response.status_code == 503:
            ok = response.headers.get("retry-after") == "1" and "busy" in response.json()["error"]
            return "" if ok else f"503 {response.headers.get('retry-after')} {response.text}"
        return response.text

    def client() -> None:
        try:
            with httpx.Client(base_url=url, timeout=30) as http:
                while time.monotonic() < stop:
                    response = http.post("/v1/stylize", files={"image": ("p.png", image)})
                    answers.append((response.status_code, check(response)))
        except Exception as error:
            errors.append(repr(error))

    def probe() -> None:
        with httpx.Client(base_url=url, timeout=5) as http:
            while time.monotonic() < stop:
                try:
                    health.append(http.get("/healthz").status_code)
                except httpx.HTTPError as error:  # a timeout is a failed probe, not the end of probing
                    health.append(repr(error))
                time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(16)] + [threading.Thread(target=probe)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a client thread is still running after 60 s"
    assert errors == []
    statuses = [status for status, _ in answers]
    assert statuses and set(statuses) <= {200, 503}, sorted(set(statuses))
    assert [answer for answer in answers if answer[1]] == []
    assert 200 in statuses and len(health) >= 10 and set(health) == {200}, health
    text = httpx.get(f"{url}/metrics").text
    assert metric(text, "nst_serve_requests_total", route="/v1/stylize", status="200") == statuses.count(200)
    refused = metric(text, "nst_serve_rejected_total", reason="queue_full")
    assert refused + metric(text, "nst_serve_rejected_total", reason="uploads_full") == statuses.count(503)


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(live_server) -> None:
    process, url = live_server
    request = httpx.Request("POST", f"{url}/v1/stylize", files={"image": ("p.png", encoded(pattern(40, 50)))})
    body = request.read()
    first_part_sent, rest_allowed = threading.Event(), threading.Event()

    def slow_body():
        yield body[:100]
        first_part_sent.set()
        assert rest_allowed.wait(30)
        yield body[100:]

    results: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: results.append(httpx.post(
        f"{url}/v1/stylize", content=slow_body(), headers={"content-type": request.headers["content-type"]},
        timeout=30)))
    sender.start()
    assert first_part_sent.wait(10)
    wait_for(lambda: metric(httpx.get(f"{url}/metrics").text, "nst_serve_uploads_in_progress") == 1,
             "the server to start reading the upload")
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while True:  # shutting down: no new connections, while the upload is still in flight
        try:
            httpx.get(f"{url}/healthz", timeout=1)
        except httpx.TransportError:
            break
        assert time.monotonic() < deadline, "the server still accepts connections after SIGTERM"
        time.sleep(0.05)
    rest_allowed.set()
    sender.join(30)
    assert results and results[0].status_code == 200 and results[0].headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(results[0].content)).size == (50, 40)
    assert process.wait(30) == 0
    assert "Traceback" not in process.communicate()[1]


def test_server_path_never_imports_torch(models) -> None:
    code = ("import sys; from fastapi.testclient import TestClient; from nst_fast.serve.app import create_app; "
            f"client = TestClient(create_app([{str(models['trio'])!r}])); "
            "assert client.get('/v1/styles').status_code == 200; "
            "assert 'torch' not in sys.modules and 'pytorch_lightning' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
