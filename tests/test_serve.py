"""nst-serve in-process (FastAPI's TestClient): every route and bad input, outputs checked against the inference
core run on the same model, the models' descriptions, the settings and the command line."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from image_factory import pattern
from onnx_factory import tiny_onnx_model
from PIL import Image, ImageOps
from serve_support import (
    GOOD,
    THUMB_COLORS,
    TRIO,
    check_error,
    core_output,
    decoded,
    encoded,
    max_level_diff,
    metric,
    post,
    serve,
    serve_models,
    wait_ready,
)

from nst_fast.errors import StylizeError
from nst_fast.images import preserve_color, to_uint8
from nst_fast.serve.app import create_app
from nst_fast.serve.cli import build_parser, server_config, settings_from_args
from nst_fast.serve.cli import main as serve_main
from nst_fast.serve.settings import ServeSettings, available_cpus
from nst_fast.stylize import load_model, stylize_array

__all__ = ["serve", "serve_models"]  # fixtures (serve_models is the fixture "models")


# --- Routes ---------------------------------------------------------------------------------------------------


def test_styles_describe_models_with_thumbnails(models, serve) -> None:
    body = serve().get("/v1/styles").json()
    assert body["default_model"] == "wave"
    wave, trio = body["models"]
    assert {k: wave[k] for k in ("name", "file", "identity", "blend", "training_steps")} == {
        "name": "wave",
        "file": "wave.onnx",
        "identity": False,
        "blend": False,
        "training_steps": 3,
    }
    assert wave["styles"] == [{"name": "wave", "thumbnail": None}] and "wave.onnx" in wave["description"]
    assert wave["summary"] == f"1 style (wave) · speed not recorded · {wave['size_bytes'] / 1e3:.0f} kB"
    assert trio["summary"].startswith("3 styles (starry, wave, udnie) that blend, with a strength control · ")
    assert wave["speed"] is None and wave["size_bytes"] > 0
    assert (trio["name"], trio["identity"], trio["blend"], trio["training_steps"]) == ("trio", True, True, 1234)
    assert [s["name"] for s in trio["styles"]] == TRIO
    for style, color in zip(trio["styles"], THUMB_COLORS, strict=True):
        prefix = "data:image/jpeg;base64,"
        assert style["thumbnail"].startswith(prefix)
        thumb = Image.open(io.BytesIO(base64.b64decode(style["thumbnail"][len(prefix) :])))
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


@pytest.mark.parametrize(
    ("fields", "model", "weights"),
    [
        ({}, "wave", None),
        ({"model": "trio", "style": "wave"}, "trio", [0.0, 1.0, 0.0]),
        ({"model": "trio", "style": "starry=0.6,udnie=0.4"}, "trio", [0.6, 0.0, 0.4]),
        ({"model": "trio", "style": "udnie", "strength": "0.3"}, "trio", [0.0, 0.0, 0.3]),
        ({"model": "trio", "style": "starry=0.5,wave=0.5", "strength": "0"}, "trio", [0.0, 0.0, 0.0]),
    ],
    ids=["single", "one-style", "blend", "strength", "strength-0"],
)
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
    check_error(
        post(client, wide, format=image_format),
        400,
        f"the {largest + 1}x6 result is too large for format {image_format}, which stores at most "
        f"{largest} pixels a side; use format png or max_size <= {largest}",
    )
    assert metric(client, "nst_serve_inference_seconds_count", model="wave") == inferences  # the model did not run
    assert Image.open(io.BytesIO(post(client, wide, format=image_format, max_size=str(largest)).content)).size == (
        largest,
        6,
    )


def test_max_side_caps_the_size_stylised_and_requests_may_only_lower_it(models, serve) -> None:
    client, rgb = serve(ServeSettings(max_side=32)), pattern(40, 60, seed=8)
    for fields, size in (({}, (32, 21)), ({"max_size": "100"}, (32, 21)), ({"max_size": "20"}, (20, 13))):
        assert Image.open(io.BytesIO(post(client, encoded(rgb), **fields).content)).size == size, fields
    # The server's ONNX Runtime sessions keep no CPU arena (it would hold the largest request's activations).
    assert not client.app.state.registry.models["wave"].model.session.get_session_options().enable_cpu_mem_arena
    assert (ServeSettings().max_side, ServeSettings().max_pixels) == (8192, 64_000_000)  # a camera's photos
    with pytest.raises(ValueError, match="max_side must be at least 5 pixels, got 4"):
        ServeSettings(max_side=4)


# --- Bad requests: 4xx with {"error": ...}, and the server keeps serving --------------------------------------


def truncated_jpeg() -> bytes:
    data = encoded(pattern(64, 64), "JPEG")
    return data[: len(data) // 2]


def noise_png(side: int) -> bytes:
    return encoded(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))


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


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_a_4xx_json_error(strict_client, case) -> None:
    fields, status, message = BAD_REQUESTS[case]
    fields = dict(fields)
    check_error(post(strict_client, fields.pop("image", GOOD), **fields), status, message)
    assert post(strict_client, GOOD).status_code == 200  # still serving


def test_malformed_requests_are_4xx_json_errors(strict_client) -> None:
    check_error(strict_client.post("/v1/stylize", json={"image": "x"}), 400, "send multipart/form-data")
    check_error(
        strict_client.post("/v1/stylize", files={"style": (None, "wave")}),
        400,
        "no image: send the photo in the file field 'image'",
    )
    check_error(
        strict_client.post("/v1/stylize", data={"image": "text"}, files={"other": ("a", b"b")}),
        400,
        "unknown field 'other'",
    )
    check_error(
        strict_client.post("/v1/stylize", data={"image": "not a file"}, files={"style": ("a", b"b")}),
        400,
        "field 'image' must be one uploaded file",
    )
    check_error(
        strict_client.post("/v1/stylize", files=[("image", ("a.png", GOOD)), ("image", ("b.png", GOOD))]),
        400,
        "Too many files",
    )
    check_error(
        strict_client.post("/v1/stylize", files={"image": ("a.png", GOOD)}, data={"format": ["png", "jpeg"]}),
        400,
        "field 'format' was sent 2 times",
    )
    mixed_case = httpx.Request("POST", "http://x", files={"image": ("a.png", GOOD)})
    response = strict_client.post(
        "/v1/stylize",
        content=mixed_case.read(),
        headers={
            "content-type": mixed_case.headers["content-type"].replace("multipart/form-data", "Multipart/Form-Data")
        },
    )
    assert response.status_code == 200, response.text  # media types are case-insensitive (RFC 9110)
    check_error(
        strict_client.post(
            "/v1/stylize", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"}
        ),
        400,
        "no image",
    )
    check_error(strict_client.get("/v1/stylize"), 405, "GET is not allowed on /v1/stylize; use POST")
    check_error(strict_client.delete("/healthz"), 405, "DELETE is not allowed on /healthz; use GET, HEAD")
    check_error(strict_client.get("/v2/anything"), 404, "nothing at GET /v2/anything; the routes are")

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        request = httpx.Request("POST", "http://x", files={"image": ("big.png", noise_png(150))})
        body = request.read()
        yield from (body[i : i + 8192] for i in range(0, len(body), 8192))

    boundary_request = httpx.Request("POST", "http://x", files={"image": ("big.png", noise_png(150))})
    response = strict_client.post(
        "/v1/stylize", content=chunks(), headers={"content-type": boundary_request.headers["content-type"]}
    )
    check_error(response, 413, "over the limit of 50000 bytes")
    assert post(strict_client, GOOD).status_code == 200


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


@pytest.mark.parametrize(
    ("architecture", "precision", "speed", "words"),
    [
        ({"base_channels": 16, "residual_blocks": 5, "separable": True}, "fp32", "light", "light network: the fastest"),
        (
            {"base_channels": 32, "residual_blocks": 5},
            "int8",
            "standard",
            "standard network · 8-bit weights: faster on",
        ),
        ({"base_channels": 24, "residual_blocks": 3}, "fp32", "small", "small network: fast"),
        ({"base_channels": 64, "residual_blocks": 5}, "fp16", "large", "large network: slower · half precision"),
        (None, None, None, "speed not recorded"),
    ],
)
def test_models_are_described_in_plain_words(architecture, precision, speed, words) -> None:
    from nst_fast.serve.registry import speed_class, summary

    metadata = {} if architecture is None else {"nst_fast.transformer": json.dumps(architecture)}
    assert speed_class(metadata) == speed
    text = summary(["starry"], False, False, speed, precision, 7_755_252)
    assert text.startswith(f"1 style (starry) · {words}") and text.endswith(" · 7.8 MB"), text
    many = summary([f"s{i}" for i in range(7)], True, True, None, None, 2048)
    assert many == (
        "7 styles (s0, s1, s2, s3, s4 and 2 more) that blend, with a strength control · speed not recorded · 2 kB"
    )


def test_an_image_too_thin_once_downscaled_says_so(serve) -> None:
    check_error(
        post(serve(), encoded(pattern(10_000, 5, seed=2))),
        400,
        "photo.png: 5x10000 downscaled to 4x8192 (longest side at most 8192) is too small: the network needs "
        "at least 5x5; crop it to a less elongated shape",
    )


def test_settings_refuse_values_out_of_range() -> None:
    for name, value, message in (
        ("header_timeout_s", 0, "header_timeout_s must be positive, got 0"),
        ("keep_alive_s", -1, "keep_alive_s must be positive, got -1"),
        ("min_upload_rate", -1, "min_upload_rate must be at least 0, got -1"),
        ("upload_grace_s", -1, "upload_grace_s must be at least 0, got -1"),
        ("max_connections", 0, "max_connections must be at least 1, got 0"),
    ):
        with pytest.raises(ValueError, match=message):
            ServeSettings(**{name: value})
    assert ServeSettings(max_concurrent=2, max_queue=8, max_upload_bytes=100).upload_budget_bytes == 1000


def test_cli_options_reach_the_guarded_server(models) -> None:
    """The connection options reach the protocol uvicorn runs (not uvicorn's limit_concurrency, whose 503 is plain
    text for health probes too), WebSocket upgrades are off, and shutdown waits at most timeout + 5 s."""
    from nst_fast.serve.connections import GuardedH11Protocol

    args = build_parser().parse_args(
        [
            "--model",
            "m.onnx",
            "--max-connections",
            "7",
            "--header-timeout",
            "3",
            "--keep-alive",
            "2",
            "--min-upload-rate",
            "8",
            "--upload-grace",
            "1.5",
            "--timeout",
            "20",
        ]
    )
    settings = settings_from_args(args)
    assert (settings.max_connections, settings.header_timeout_s, settings.keep_alive_s) == (7, 3.0, 2.0)
    assert (settings.min_upload_rate, settings.upload_grace_s, settings.timeout_s) == (8192, 1.5, 20.0)
    config = server_config(create_app([models["wave"]], settings), settings, "127.0.0.1", 8000)
    assert issubclass(config.http, GuardedH11Protocol) and config.limit_concurrency is None
    guard = config.http.guard
    assert (guard.max_connections, guard.header_timeout_s) == (7, 3.0)
    assert config.ws == "none" and config.timeout_keep_alive == 2.0 and config.timeout_graceful_shutdown == 25.0
    defaults = ServeSettings()
    assert (defaults.max_connections, defaults.header_timeout_s, defaults.keep_alive_s) == (1000, 10.0, 5.0)
    assert (defaults.min_upload_rate, defaults.upload_grace_s) == (4096, 5.0)
