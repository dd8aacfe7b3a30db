"""What the page's in-browser mode needs from nst-serve (``nst_fast.serve.browser``, ``webfiles``) and the static
site of ``export.web`` (``nst_fast.serve.site``), in-process on tiny models and a stand-in runtime built by
``web/build.py``: media types, gzip as stored, revalidation, cross-origin isolation, model downloads, and the page
working as before without the runtime. The page itself runs in Chromium in tests/test_browser_mode.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from onnx_factory import tiny_onnx_model
from serve_support import GOOD, TRIO, decoded, post, wait_ready
from web_support import DIST, fake_runtime

from nst_fast.errors import StylizeError
from nst_fast.serve.app import create_app
from nst_fast.serve.cli import build_parser, settings_from_args
from nst_fast.serve.site import HEADERS_FILE, STYLES_FILE, site_models, with_model, write_site
from nst_fast.serve.webfiles import PAGE_FILES, STATIC_DIR, Runtime, onnx_ir_version

REPO_ROOT = Path(__file__).resolve().parents[1]
ISOLATED = {"cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp"}


@pytest.fixture(scope="module")
def web_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("web_models")
    return {
        "wave": tiny_onnx_model(root / "wave.onnx", ["wave"]),
        "trio": tiny_onnx_model(root / "trio.onnx", TRIO, identity=True, seed=1),
    }


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory) -> Path:
    return fake_runtime(tmp_path_factory.mktemp("runtime"))


def started(app) -> TestClient:
    client = TestClient(app)
    client.__enter__()
    wait_ready(client)
    return client


@pytest.fixture
def client(web_models, runtime_dir):
    client = started(create_app([web_models["wave"], web_models["trio"]], runtime_dir=runtime_dir))
    yield client
    client.__exit__(None, None, None)


def isolation(response) -> dict[str, str]:
    return {name: response.headers.get(name) for name in ISOLATED}


@pytest.mark.parametrize(
    ("name", "media_type", "encoding"),
    [
        ("ort.wasm.min.mjs", "text/javascript", None),
        ("ort.webgpu.min.mjs", "text/javascript", None),
        ("ort-wasm-simd-threaded.wasm", "application/wasm", "gzip"),
        ("ort-wasm-simd-threaded.asyncify.wasm", "application/wasm", "gzip"),
    ],
)
def test_runtime_files_have_their_media_types_and_go_out_as_stored(
    client, runtime_dir, name, media_type, encoding
) -> None:
    response = client.get(f"/static/ort/{name}", headers={"Accept-Encoding": "gzip, deflate"})
    assert response.status_code == 200 and response.headers["content-type"].split(";")[0] == media_type
    assert response.headers.get("content-encoding") == encoding and response.content == DIST[name]
    if encoding:  # the stored .gz bytes themselves, not compressed again on the fly
        assert int(response.headers["content-length"]) == (runtime_dir / f"{name}.gz").stat().st_size
    assert isolation(response) == ISOLATED
    again = client.get(f"/static/ort/{name}", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    plain = client.get(f"/static/ort/{name}", headers={"Accept-Encoding": "identity"})
    assert plain.headers.get("content-encoding") is None and plain.content == DIST[name]


def test_runtime_licence_is_served_and_other_names_are_not(client) -> None:
    licence = client.get("/static/ort/LICENSE.txt")
    assert licence.status_code == 200 and "MIT License" in licence.text
    for name in ("ort.webgl.min.mjs", "manifest.json", "..%2F..%2Fapp.py"):
        response = client.get(f"/static/ort/{name}")
        assert response.status_code == 404 and response.headers["content-type"] == "application/json", name


def test_every_answer_is_cross_origin_isolated(client) -> None:
    for response in (
        client.get("/"),
        client.get("/static/app.js"),
        client.get("/v1/styles"),
        client.get("/healthz"),
        post(client, GOOD),
        client.get("/nowhere"),
    ):
        assert isolation(response) == ISOLATED, response.url


def test_styles_say_where_models_run_and_the_models_download(client, web_models) -> None:
    body = client.get("/v1/styles").json()
    assert body["server"] is True
    assert body["browser"] == {
        "runtime": "static/ort/",
        "package": "onnxruntime-web",
        "version": "9.9.9",
        "providers": ["webgpu", "wasm"],
    }
    assert [model["download"] for model in body["models"]] == ["v1/models/wave.onnx", "v1/models/trio.onnx"]
    download = client.get("/v1/models/trio.onnx")
    assert download.status_code == 200 and download.content == web_models["trio"].read_bytes()
    assert download.headers["content-type"] == "application/octet-stream"
    assert client.get("/v1/models/trio.onnx", headers={"If-None-Match": download.headers["etag"]}).status_code == 304
    unknown = client.get("/v1/models/nope.onnx")
    assert unknown.status_code == 404 and unknown.json()["error"] == (
        "unknown model 'nope'; this server has: wave, trio"
    )
    assert client.get("/v1/models/trio.pt").status_code == 404


def test_without_the_runtime_the_page_stylises_on_the_server_as_before(web_models, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="nst_fast.serve"):
        client = started(create_app([web_models["wave"]], runtime_dir=tmp_path / "absent"))
    try:
        assert "in-browser mode is off: no onnxruntime-web files in" in caplog.text
        assert "python web/build.py" in caplog.text
        body = client.get("/v1/styles").json()
        assert body["browser"] is None and body["server"] is True and body["models"][0]["download"] is None
        assert client.get("/v1/models/wave.onnx").status_code == 404  # models are not offered
        assert client.get("/static/ort/ort.wasm.min.mjs").status_code == 404
        page = client.get("/")
        assert page.status_code == 200 and "cross-origin-opener-policy" not in page.headers
        assert decoded(post(client, GOOD)).shape == (16, 16, 3)
    finally:
        client.__exit__(None, None, None)


def test_no_browser_keeps_the_models_on_the_server(web_models, runtime_dir) -> None:
    settings = settings_from_args(build_parser().parse_args(["--no-browser"]))
    assert settings.browser is False and settings_from_args(build_parser().parse_args([])).browser is True
    client = started(create_app([web_models["wave"]], settings, runtime_dir=runtime_dir))
    try:
        assert client.get("/v1/styles").json()["browser"] is None
        assert client.get("/v1/models/wave.onnx").status_code == 404
    finally:
        client.__exit__(None, None, None)


def test_static_site_mirrors_the_servers_paths(web_models, runtime_dir, tmp_path) -> None:
    site = tmp_path / "web"
    registry = write_site(site, [web_models["wave"], web_models["trio"]], Runtime.load(runtime_dir))
    assert list(registry.models) == ["wave", "trio"]
    for target, source in PAGE_FILES.items():
        assert (site / target).read_bytes() == (STATIC_DIR / source).read_bytes(), target
    for name in ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.wasm", "ort.webgpu.min.mjs"):
        assert (site / "static" / "ort" / name).read_bytes() == DIST[name]  # decompressed: hosts send them as is
    assert "MIT License" in (site / "static" / "ort" / "LICENSE.txt").read_text()
    body = json.loads((site / STYLES_FILE).read_text())
    assert body["server"] is False and body["default_model"] == "wave"
    assert body["browser"]["runtime"] == "static/ort/" and body["browser"]["version"] == "9.9.9"
    for model in body["models"]:
        assert (site / model["download"]).read_bytes() == web_models[model["name"]].read_bytes()  # unchanged
    assert (site / HEADERS_FILE).read_text() == (
        "/*\n  Cross-Origin-Opener-Policy: same-origin\n  Cross-Origin-Embedder-Policy: require-corp\n"
    )


def test_exporting_again_replaces_a_model_or_adds_one_after_the_others(web_models, runtime_dir, tmp_path) -> None:
    runtime, site = Runtime.load(runtime_dir), tmp_path / "web"
    assert site_models(site) == []
    write_site(site, [web_models["wave"], web_models["trio"]], runtime)
    listed = site_models(site)
    assert [path.name for path in listed] == ["wave.onnx", "trio.onnx"]
    retrained = tiny_onnx_model(tmp_path / "new" / "wave.onnx", ["wave"], seed=7)
    extra = tiny_onnx_model(tmp_path / "new" / "extra.onnx", ["extra"], seed=8)
    assert [p.name for p in with_model(listed, retrained)] == ["wave.onnx", "trio.onnx"]
    assert with_model(listed, retrained)[0] == retrained
    write_site(site, with_model(with_model(listed, retrained), extra), runtime)
    assert [path.name for path in site_models(site)] == ["wave.onnx", "trio.onnx", "extra.onnx"]
    assert (site / "v1" / "models" / "wave.onnx").read_bytes() == retrained.read_bytes()


@pytest.mark.slow
def test_the_site_writer_needs_no_web_framework() -> None:
    """``export.web`` runs in a training install, which has no FastAPI: the site writer and what it uses import
    none of it."""
    code = (
        "import sys, nst_fast.serve.site\n"
        "loaded = sorted(n for n in sys.modules if n.split('.')[0] in ('fastapi', 'starlette', 'uvicorn'))\n"
        "assert loaded == [], loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_model_newer_than_the_runtime_reads_stays_on_the_server(web_models, runtime_dir, tmp_path, caplog) -> None:
    """onnxruntime-web reads ONNX IR versions up to its manifest's ``max_ir_version`` (13 for 1.31.1): a newer
    file is not offered to the page, and the static site refuses it, saying why."""
    import onnx

    assert onnx_ir_version(web_models["wave"]) == 10  # what torch's exporter writes
    newer = onnx.load(str(web_models["wave"]))
    newer.ir_version = 14
    onnx.save(newer, str(tmp_path / "newer.onnx"))
    with caplog.at_level(logging.WARNING, logger="nst_fast.serve"):
        client = started(create_app([web_models["trio"], tmp_path / "newer.onnx"], runtime_dir=runtime_dir))
    try:
        assert (
            "model 'newer' stays on the server: newer.onnx has ONNX IR version 14; onnxruntime-web 9.9.9 reads up to 13"
            in caplog.text
        )
        assert [m["download"] for m in client.get("/v1/styles").json()["models"]] == ["v1/models/trio.onnx", None]
        refused = client.get("/v1/models/newer.onnx")
        assert refused.status_code == 404 and "runs on the server only" in refused.json()["error"]
    finally:
        client.__exit__(None, None, None)
    with pytest.raises(StylizeError, match="newer.onnx has ONNX IR version 14.*: a browser cannot run it"):
        write_site(tmp_path / "web", [tmp_path / "newer.onnx"], Runtime.load(runtime_dir))
