"""The page's in-browser mode in headless Chromium (``browser_support``), with WebAssembly, the way visitors get it
from nst-serve (``?run=browser``) and from the static site of ``export.web`` served by ``python -m http.server``:
two small trained-like networks with three styles and the identity, a Johnson-layout one and a light one with the
same styles, are exported with ``web=True`` into one folder (the site then has both). What the page shows is
compared with ONNX Runtime on the CPU (``nst-stylize``'s core) for the same pixels and style weights, within 2 of
255 levels; no request reaches ``/v1/stylize`` (the page's ``fetch`` and the server's metrics say so). Needs the
onnxruntime-web files (``python web/build.py``): without them the module skips, or fails where the browser tests
must run."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from browser_support import (
    SWIFTSHADER_WEBGPU,
    WAIT,
    browser,
    error_text,
    require_chromium,
    require_runtime,
    set_slider,
    shown_result,
    start_chromium,
    visible,
)
from image_factory import pattern
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from serve_support import core_output, live_server_process, max_level_diff, metric

pytestmark = pytest.mark.slow
__all__ = ["browser", "require_chromium"]  # fixtures
TRIO = ["starry", "wave", "udnie"]
STYLES = [
    {"name": name, "image": f"styles/{painting}.jpg", "size": 256}
    for name, painting in zip(TRIO, ("starry_night", "wave", "udnie"), strict=True)
]
#: Largest difference to ONNX Runtime on the CPU, in 8-bit levels.
PARITY = 2
#: Seconds for a first result: the runtime and the model load first (a busy 2-core machine is slow at it).
FIRST_RESULT_WAIT = 120


@pytest.fixture(scope="module", autouse=True)
def runtime_installed() -> None:
    require_runtime()


def save_checkpoint(path: Path, network, identity: bool) -> Path:
    import torch

    from nst_fast.checkpoint import checkpoint_metadata

    path.parent.mkdir(parents=True)
    state = {f"transformer.{key}": value for key, value in network.state_dict().items()}
    torch.save(
        {"state_dict": state, "global_step": 3, "nst_fast": checkpoint_metadata(network, STYLES, identity=identity)},
        path,
    )
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """``trio.onnx`` (the default network, with ``model.input_noise`` and ``model.feature_noise``: its pattern is
    gathered with int64 indices) and ``trio-light.onnx`` (light network, same styles, no noise), exported with
    ``web=True`` into one folder, whose ``web/`` site then holds both."""
    torch = pytest.importorskip("torch")
    from helpers import small_network

    from nst_fast.export import export_checkpoint
    from nst_fast.models import TransformerNet

    root = tmp_path_factory.mktemp("browser_mode")
    trio = TransformerNet(8, 1, num_conditions=4, input_noise=0.1, feature_noise=True)
    loaded = trio.load_state_dict(small_network(3, num_conditions=4).state_dict(), strict=False)
    assert sorted(loaded.missing_keys) == ["noise_pattern", "noise_scale_full", "noise_scale_half"]
    with torch.no_grad():
        trio.noise_scale_half.uniform_(-1, 1)
        trio.noise_scale_full.uniform_(-1, 1)
    networks = {"trio": trio.eval(), "trio-light": small_network(4, num_conditions=4, separable=True)}
    for name, network in networks.items():
        ckpt = save_checkpoint(root / name / "last.ckpt", network, identity=True)
        export_checkpoint(ckpt, root / "export", name=name, torchscript=False, web=True, log=lambda _: None)
    return root / "export"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def static_host(folder: Path) -> Iterator[str]:
    """``python -m http.server`` on ``folder`` (no cross-origin isolation headers: one WebAssembly thread)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "http.server did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module", params=["nst-serve", "static site"])
def site(request, exported) -> Iterator[dict]:
    """Where the page comes from: nst-serve with both models (the page opened with ``?run=browser``), or the
    static site; ``metrics``: the server's metrics URL (``None`` for the static site)."""
    if request.param == "nst-serve":
        models = ["--model", str(exported / "trio.onnx"), "--model", str(exported / "trio-light.onnx")]
        with live_server_process(*models) as (_, url):
            yield {"page": f"{url}/?run=browser", "metrics": f"{url}/metrics", "server": True}
    else:
        with static_host(exported / "web") as url:
            yield {"page": f"{url}/", "metrics": None, "server": False}


def stylize_requests_on_server(site: dict) -> float:
    """Requests the server has answered on ``/v1/stylize``, whatever their status."""
    if site["metrics"] is None:
        return 0.0
    text = httpx.get(site["metrics"], timeout=WAIT).text
    return sum(
        metric(text, "nst_serve_requests_total", route="/v1/stylize", status=str(status)) for status in range(100, 600)
    )


@pytest.fixture
def page(browser, site):
    """The page in its in-browser mode, styles listed, every request to ``v1/stylize`` recorded
    (``window.stylizeRequests``: by ``fetch``, ``XMLHttpRequest`` or ``sendBeacon``)."""
    browser.get(site["page"])
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#style-list input[type=radio]"))
    browser.execute_script(
        """
        window.stylizeRequests = [];
        const note = (url) => { if (String(url).includes("v1/stylize")) window.stylizeRequests.push(String(url)); };
        const realFetch = window.fetch;
        window.fetch = (url, ...rest) => { note(url instanceof Request ? url.url : url); return realFetch(url, ...rest); };
        const realOpen = XMLHttpRequest.prototype.open;
        XMLHttpRequest.prototype.open = function (method, url, ...rest) { note(url); return realOpen.call(this, method, url, ...rest); };
        const realBeacon = navigator.sendBeacon.bind(navigator);
        navigator.sendBeacon = (url, data) => { note(url); return realBeacon(url, data); };
        """
    )
    browser.stylize_requests_before = stylize_requests_on_server(site)
    return browser


def assert_nothing_sent(page, site) -> None:
    assert page.execute_script("return window.stylizeRequests") == []
    assert stylize_requests_on_server(site) == page.stylize_requests_before


@pytest.fixture
def photo(tmp_path) -> tuple[Path, np.ndarray]:
    """A 75×53 PNG photo (odd sizes) and its pixels."""
    rgb = pattern(53, 75, seed=1)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    return path, rgb


def wait_close_to(page, expected: np.ndarray, timeout: float = WAIT) -> np.ndarray:
    """Wait until the page shows a result of ``expected``'s size within ``PARITY`` levels of it; the result."""

    def close(driver) -> bool:
        shown = shown_result(driver)
        return shown is not None and shown.shape == expected.shape and max_level_diff(shown, expected) <= PARITY

    try:
        WebDriverWait(page, timeout).until(close)
    except Exception:
        shown = shown_result(page)
        detail = "nothing" if shown is None else f"{shown.shape}, max |diff| {max_level_diff(shown, expected)}"
        raise AssertionError(
            f"the page never showed ONNX Runtime's result (it showed {detail}; status "
            f"{page.find_element(By.ID, 'status').text!r}; error {error_text(page)!r})"
        ) from None
    return shown_result(page)


def test_a_photo_is_stylised_in_the_browser_as_onnx_runtime_does_on_the_cpu(page, site, exported, photo) -> None:
    path, rgb = photo
    assert visible(page, "run-section") and visible(page, "run-choice") == site["server"]
    page.find_element(By.ID, "photo-input").send_keys(str(path))
    shown = wait_close_to(page, core_output(exported / "trio.onnx", rgb, [1.0, 0.0, 0.0]), FIRST_RESULT_WAIT)
    assert shown.shape == (53, 75, 3)
    status = page.find_element(By.ID, "status").text
    assert status.startswith("75×53 in ") and "in this browser, WebAssembly (SIMD, " in status, status
    info = page.find_element(By.ID, "runtime-info").text
    assert info.startswith("Runs in this browser with WebAssembly (SIMD, ") and "stay on this device" in info
    # nst-serve makes the page cross-origin isolated (threads allowed); http.server sends no such headers: 1 thread
    assert page.execute_script("return self.crossOriginIsolated") == site["server"]
    assert site["server"] or "(SIMD, 1 thread)" in info
    assert page.find_element(By.ID, "download").get_attribute("download") == "photo_starry.png"
    assert_nothing_sent(page, site)


def test_a_multi_style_model_blends_and_doses_in_the_browser(page, site, exported, photo) -> None:
    path, rgb = photo
    page.find_element(By.ID, "photo-input").send_keys(str(path))
    wait_close_to(page, core_output(exported / "trio.onnx", rgb, [1.0, 0.0, 0.0]), FIRST_RESULT_WAIT)
    page.find_element(By.CSS_SELECTOR, "label[for=blend-toggle]").click()
    set_slider(page, "weight-0", 60)  # starry 60%, the others share the rest: 20% each
    set_slider(page, "strength", 50)
    wait_close_to(page, core_output(exported / "trio.onnx", rgb, [0.3, 0.1, 0.1]))
    page.find_element(By.CSS_SELECTOR, "label[for=preserve-color]").click()
    wait_close_to(page, core_output(exported / "trio.onnx", rgb, [0.3, 0.1, 0.1], keep_color=True))
    set_slider(page, "strength", 0)  # the identity alone: the network's reproduction of the photo
    wait_close_to(page, core_output(exported / "trio.onnx", rgb, [0.0, 0.0, 0.0], keep_color=True))
    assert page.find_element(By.ID, "download").get_attribute("download") == "photo_starry+wave+udnie_0.png"
    assert_nothing_sent(page, site)


def test_the_webcam_runs_in_the_browser_on_the_light_network_and_shows_its_rate(page, site) -> None:
    Select(page.find_element(By.ID, "webcam-size")).select_by_value("256")
    page.find_element(By.ID, "webcam-start").click()
    WebDriverWait(page, FIRST_RESULT_WAIT).until(
        lambda d: int(d.find_element(By.ID, "webcam-frames").text) >= 3 or error_text(d),
        "fewer than 3 webcam frames were stylised",
    )
    assert error_text(page) == ""
    assert 0 < float(page.find_element(By.ID, "fps").text) < 1000
    assert page.find_element(By.ID, "webcam-where").text.startswith("in this browser, WebAssembly (SIMD, ")
    assert page.find_element(By.ID, "webcam-model").text == (
        "The webcam runs trio-light, the light network with the same styles, to keep up with live video."
    )
    assert page.find_element(By.ID, "webcam-note").text.startswith("Frames are stylised in this browser")
    camera = page.execute_script(
        "const v = document.getElementById('webcam-video'); return [v.videoWidth, v.videoHeight]"
    )
    canvas = page.find_element(By.ID, "webcam-canvas")
    scale = 256 / max(camera)
    assert [int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))] == [
        round(camera[0] * scale),
        round(camera[1] * scale),
    ]
    assert canvas.is_displayed() and not visible(page, "webcam-result")
    page.find_element(By.ID, "webcam-stop").click()
    time.sleep(1.0)  # a frame being stylised when stopped is dropped, not counted
    stopped_at = page.find_element(By.ID, "webcam-frames").text
    time.sleep(1.0)
    assert page.find_element(By.ID, "webcam-frames").text == stopped_at
    assert_nothing_sent(page, site)


def test_a_photo_this_browser_cannot_read_says_what_to_do(page, site, tmp_path) -> None:
    tiff = tmp_path / "scan.tif"  # Chromium reads no TIFF
    Image.fromarray(pattern(40, 30, seed=2)).save(tiff)
    page.find_element(By.ID, "photo-input").send_keys(str(tiff))
    WebDriverWait(page, FIRST_RESULT_WAIT).until(lambda d: error_text(d), "no message for the TIFF")
    instead = " or let the server stylise it (Where it runs)" if site["server"] else ""
    assert error_text(page) == f"This browser cannot read scan.tif. Choose a PNG, JPEG or WebP photo{instead}."
    assert not visible(page, "viewer")
    assert_nothing_sent(page, site)


def test_nst_serve_offers_the_choice_of_where_to_run_and_keeps_it(browser, site) -> None:
    """nst-serve: the visitor chooses, and the choice holds on the next visit; a static site runs in the browser
    whatever was chosen on a server of the same origin."""
    url = site["page"].removesuffix("?run=browser")
    if not site["server"]:
        browser.get(url)
        browser.execute_script("localStorage.setItem('nst-fast.run-on', 'server')")
        browser.get(url)
        WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "runtime-info").text.startswith("Runs in"))
        assert not visible(browser, "run-choice") and not browser.execute_script("return self.crossOriginIsolated")
        return
    browser.get(url)
    WebDriverWait(browser, WAIT).until(lambda d: visible(d, "run-choice"))
    assert browser.execute_script("return self.crossOriginIsolated")  # COOP and COEP: threads allowed
    browser.find_element(By.CSS_SELECTOR, "label[for=run-server]").click()
    browser.get(url)
    WebDriverWait(browser, WAIT).until(lambda d: visible(d, "run-choice"))
    assert browser.find_element(By.ID, "run-server").is_selected()
    assert browser.find_element(By.ID, "runtime-info").text == (
        "Photos and webcam frames go to the server, which stylises them."
    )
    browser.find_element(By.CSS_SELECTOR, "label[for=run-browser]").click()
    browser.get(url)  # remembered
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "runtime-info").text.startswith("Runs in"))
    assert browser.find_element(By.ID, "run-browser").is_selected()


def test_webgpu_runs_the_model_where_an_adapter_is_given_but_not_a_software_one(exported, tmp_path) -> None:
    """With SwiftShader's adapter (a fallback, WebGPU on the CPU: far slower than WebAssembly) the page keeps
    WebAssembly; asked for WebGPU (``?provider=webgpu``) it runs the model there, as ONNX Runtime does on the CPU."""
    rgb = pattern(12, 16, seed=3)  # small: SwiftShader takes seconds per frame
    path = tmp_path / "small.png"
    Image.fromarray(rgb).save(path)
    driver = start_chromium(tmp_path / "profile", gpu=SWIFTSHADER_WEBGPU)
    try:
        with live_server_process("--model", str(exported / "trio.onnx")) as (_, url):
            driver.get(f"{url}/?run=browser")
            WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return !!navigator.gpu"))
            assert driver.execute_async_script(
                "const done = arguments[0]; navigator.gpu.requestAdapter().then((a) => done(!!a && a.info.isFallbackAdapter))"
            )
            WebDriverWait(driver, FIRST_RESULT_WAIT).until(
                lambda d: d.find_element(By.ID, "runtime-info").text.startswith("Runs in this browser with WebAssembly")
            )
            driver.get(f"{url}/?run=browser&provider=webgpu")
            WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#style-list input"))
            driver.find_element(By.ID, "photo-input").send_keys(str(path))
            wait_close_to(driver, core_output(exported / "trio.onnx", rgb, [1.0, 0.0, 0.0]), FIRST_RESULT_WAIT)
            assert "in this browser, WebGPU (" in driver.find_element(By.ID, "status").text
    finally:
        driver.quit()
