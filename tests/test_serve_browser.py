"""The nst-serve web page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium against a live ``python -m nst_fast.serve`` with two tiny ONNX models that have an export's
interface (``onnx_factory``), a single-style one and a three-style one with the identity. What the page shows is
compared with what the API returns for the same photo and explicit fields, so the page is checked to send what it
claims to."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from onnx_factory import thumbnail_base64, tiny_onnx_model

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing: pip install -e '.[dev]'")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO_ROOT = Path(__file__).resolve().parents[1]
TRIO = ["starry", "wave", "udnie"]
#: Seconds to wait for the page to show an answer (the machine may be busy with other work).
WAIT = 30


@pytest.fixture(scope="module", autouse=True)
def require_chromium() -> None:
    """Skip the module, saying how to install, where Debian's Chromium or its driver is absent."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: the browser tests need Debian's Chromium and its driver "
                    "(`apt-get install chromium chromium-driver`)")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """A live nst-serve on a free local port with a single-style model without thumbnails (the default) and a
    three-style one with the identity and thumbnails; its base URL."""
    root = tmp_path_factory.mktemp("serve")
    single = tiny_onnx_model(root / "wave.onnx", ["wave"])
    thumbnails = [thumbnail_base64(color) for color in [(200, 30, 30), (30, 200, 30), (30, 30, 200)]]
    multi = tiny_onnx_model(root / "trio.onnx", TRIO, identity=True, seed=1, thumbnails=thumbnails)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (root / "server.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "nst_fast.serve", "--model", str(single), "--model", str(multi),
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise AssertionError(f"nst-serve exited with {process.returncode}:\n{log.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                raise AssertionError(f"nst-serve not ready after 60 s:\n{log.read()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a fake camera that needs no permission prompt; nothing is downloaded."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
                     "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, server):
    """The page, freshly loaded, with the server's styles listed."""
    browser.get(server + "/")
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#style-list input[type=radio]"))
    return browser


def pattern(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth colour photo stand-in, uint8 [H, W, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [0.5 + 0.35 * np.sin(xx / (4 + 3 * c) + yy / (6 + c) + rng.uniform(0, 6)) for c in range(3)]
    return (np.stack(channels, -1) * 255).round().astype(np.uint8)


@pytest.fixture
def photo(tmp_path) -> Path:
    """A 75×53 PNG photo (odd sizes: the result must keep them)."""
    path = tmp_path / "photo.png"
    Image.fromarray(pattern(53, 75, 1)).save(path)
    return path


def api_result(server: str, photo: Path, **fields: str) -> np.ndarray:
    """What POST /v1/stylize answers for ``photo`` with ``fields``, as an RGB array."""
    response = httpx.post(f"{server}/v1/stylize", files={"image": (photo.name, photo.read_bytes())}, data=fields,
                          timeout=WAIT)
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def shown_result(driver, element_id: str = "result") -> np.ndarray | None:
    """The image the page shows in ``#element_id`` (fetched from its blob URL), or None before there is one."""
    encoded = driver.execute_async_script(
        """
        const [id, done] = arguments;
        const image = document.getElementById(id);
        if (image.hidden || !image.src) { done(null); return; }
        fetch(image.src).then((r) => r.arrayBuffer()).then((buffer) => {
          const bytes = new Uint8Array(buffer);
          let text = "";
          for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
          done(btoa(text));
        }).catch(() => done(null));
        """,
        element_id,
    )
    return None if encoded is None else np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"))


def wait_until_shown(driver, expected: np.ndarray) -> None:
    """Wait until the page's result is exactly ``expected`` (a later answer may replace an earlier one)."""
    def matches(d) -> bool:
        shown = shown_result(d)
        return shown is not None and shown.shape == expected.shape and np.array_equal(shown, expected)

    WebDriverWait(driver, WAIT).until(matches, "the page never showed the API's result for these choices")


def visible(driver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def set_slider(driver, element_id: str, value: int) -> None:
    """Move a range input as a user would: the value changes, then ``input`` and ``change`` fire."""
    driver.execute_script(
        """
        const slider = document.getElementById(arguments[0]);
        slider.value = arguments[1];
        slider.dispatchEvent(new Event("input", { bubbles: true }));
        slider.dispatchEvent(new Event("change", { bubbles: true }));
        """,
        element_id, str(value),
    )


def test_photo_is_stylised_at_its_size(page, server, photo) -> None:
    assert visible(page, "model-row")  # two models: the selector is offered
    assert not visible(page, "strength-row") and not visible(page, "blend-row")  # the default model has neither
    assert not page.find_elements(By.CSS_SELECTOR, "#style-list img")  # nor thumbnails: a lettered swatch instead
    assert page.find_element(By.CSS_SELECTOR, "#style-list .swatch").text == "W"
    page.find_element(By.ID, "photo-input").send_keys(str(photo))
    wait_until_shown(page, api_result(server, photo))
    result = page.find_element(By.ID, "result")
    size = page.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", result)
    assert size == [75, 53]
    download = page.find_element(By.ID, "download")
    assert download.is_displayed()
    assert download.get_attribute("href") == result.get_attribute("src")
    assert download.get_attribute("download") == "photo_wave.png"


def test_styles_blends_and_strength_reach_the_server(page, server, photo) -> None:
    page.find_element(By.ID, "photo-input").send_keys(str(photo))
    Select(page.find_element(By.ID, "model-select")).select_by_value("trio")
    assert visible(page, "strength-row") and visible(page, "blend-row")
    names = [element.get_attribute("value") for element in page.find_elements(By.CSS_SELECTOR, "#style-list input")]
    assert names == TRIO
    thumbnails = page.find_elements(By.CSS_SELECTOR, "#style-list img")
    assert len(thumbnails) == 3 and all(image.get_attribute("src").startswith("data:image/jpeg;base64,")
                                         for image in thumbnails)
    model = {"model": "trio"}
    wait_until_shown(page, api_result(server, photo, **model, style="starry", strength="1"))

    page.find_element(By.XPATH, "//input[@id='style-1']/parent::label").click()
    wait_until_shown(page, api_result(server, photo, **model, style="wave", strength="1"))

    page.find_element(By.CSS_SELECTOR, "label[for=blend-toggle]").click()
    assert visible(page, "blend-sliders")
    set_slider(page, "weight-0", 30)  # shares 30 : 20 of the blend -> starry 0.6, wave 0.4
    set_slider(page, "weight-1", 20)
    set_slider(page, "strength", 50)
    wait_until_shown(page, api_result(server, photo, **model, style="starry=0.6,wave=0.4", strength="0.5"))
    assert page.find_element(By.ID, "download").get_attribute("download") == "photo_starry+wave_50.png"

    page.find_element(By.CSS_SELECTOR, "label[for=preserve-color]").click()
    Select(page.find_element(By.ID, "format")).select_by_value("jpeg")
    expected = api_result(server, photo, **model, style="starry=0.6,wave=0.4", strength="0.5",
                          preserve_color="true", format="jpeg")
    wait_until_shown(page, expected)
    assert page.find_element(By.ID, "download").get_attribute("download").endswith(".jpg")


def test_api_errors_are_shown_in_words(page, server, tmp_path) -> None:
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"this is a text file, not a PNG\n")
    refusal = httpx.post(f"{server}/v1/stylize", files={"image": (not_an_image.name, not_an_image.read_bytes())})
    assert refusal.status_code == 400
    page.find_element(By.ID, "photo-input").send_keys(str(not_an_image))
    WebDriverWait(page, WAIT).until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert refusal.json()["error"] in page.find_element(By.ID, "error").text
    assert not page.find_element(By.ID, "result").is_displayed()

    # Overload: the next answer is the server's 503 (substituted in the page, as a loaded server is hard to time).
    page.execute_script(
        """
        const realFetch = window.fetch;
        window.fetch = (...args) => {
          window.fetch = realFetch;
          return Promise.resolve(new Response(JSON.stringify({ error: "3 requests are queued already" }),
            { status: 503, headers: { "Retry-After": "2", "Content-Type": "application/json" } }));
        };
        """
    )
    page.find_element(By.ID, "stylize-button").click()
    WebDriverWait(page, WAIT).until(lambda d: "busy" in d.find_element(By.ID, "error").text)
    text = page.find_element(By.ID, "error").text
    assert "3 requests are queued already" in text and "2 s" in text


def count_stylize_requests(page, delay_ms: int = 0) -> None:
    """Wrap the page's ``fetch`` to count stylise requests in flight (``window.inFlight``, most at once in
    ``window.mostInFlight``); ``delay_ms`` holds each one back that long first, ending it early when its request
    is aborted, as ``fetch`` does."""
    page.execute_script(
        """
        const delayMs = arguments[0];
        const realFetch = window.fetch;
        window.inFlight = 0;
        window.mostInFlight = 0;
        window.fetch = async (url, ...rest) => {
          if (!String(url).includes("v1/stylize")) return realFetch(url, ...rest);
          window.inFlight += 1;
          window.mostInFlight = Math.max(window.mostInFlight, window.inFlight);
          try {
            if (delayMs > 0) {
              await new Promise((resolve, reject) => {
                const timer = setTimeout(resolve, delayMs);
                const signal = rest[0] && rest[0].signal;
                if (signal) signal.addEventListener("abort", () => {
                  clearTimeout(timer);
                  reject(new DOMException("The request was aborted", "AbortError"));
                });
              });
            }
            return await realFetch(url, ...rest);
          } finally { window.inFlight -= 1; }
        };
        """,
        delay_ms,
    )


def test_webcam_streams_one_frame_at_a_time(page) -> None:
    count_stylize_requests(page)  # the page must wait for each answer before sending the next frame
    Select(page.find_element(By.ID, "webcam-size")).select_by_value("256")
    page.find_element(By.ID, "webcam-start").click()
    WebDriverWait(page, WAIT).until(lambda d: int(d.find_element(By.ID, "webcam-frames").text) >= 3,
                                    "fewer than 3 webcam frames came back")
    fps = float(page.find_element(By.ID, "fps").text)
    assert 0 < fps < 1000
    camera_width, camera_height = page.execute_script(
        "const video = document.getElementById('webcam-video'); return [video.videoWidth, video.videoHeight]")
    scale = 256 / max(camera_width, camera_height)  # frames go out with the longer side at the chosen 256
    frame = shown_result(page, "webcam-result")
    assert frame.shape[:2] == (round(camera_height * scale), round(camera_width * scale))
    page.find_element(By.ID, "webcam-stop").click()
    time.sleep(0.5)  # an answer already on its way is dropped, not counted
    stopped_at = int(page.find_element(By.ID, "webcam-frames").text)
    time.sleep(1.0)
    assert int(page.find_element(By.ID, "webcam-frames").text) == stopped_at
    assert page.execute_script("return window.mostInFlight") == 1
    assert page.find_element(By.ID, "webcam-start").is_enabled()
    assert not page.find_element(By.ID, "webcam-stop").is_enabled()
    assert not page.find_element(By.ID, "error").is_displayed()

    # A second run counts from zero with a fresh camera stream.
    page.find_element(By.ID, "webcam-start").click()
    assert page.find_element(By.ID, "webcam-frames").text == "0" and page.find_element(By.ID, "fps").text == "–"
    WebDriverWait(page, WAIT).until(lambda d: int(d.find_element(By.ID, "webcam-frames").text) >= 1)
    page.find_element(By.ID, "webcam-stop").click()
    assert page.execute_script("return window.mostInFlight") == 1


def test_webcam_stopped_and_restarted_at_once_runs_one_send_loop(page) -> None:
    """Stop and start again while a frame's request is out: stopping aborts that request and its send loop ends,
    instead of carrying on beside the new one (two requests in flight)."""
    count_stylize_requests(page, delay_ms=1500)  # a slow server: the answer is still out
    Select(page.find_element(By.ID, "webcam-size")).select_by_value("256")
    page.find_element(By.ID, "webcam-start").click()
    WebDriverWait(page, WAIT).until(lambda d: d.execute_script("return window.inFlight") == 1,
                                    "no webcam frame was sent")
    page.execute_script("document.getElementById('webcam-stop').click();"
                        "document.getElementById('webcam-start').click();")
    WebDriverWait(page, WAIT).until(lambda d: int(d.find_element(By.ID, "webcam-frames").text) >= 3,
                                    "fewer than 3 webcam frames came back after the restart")
    page.find_element(By.ID, "webcam-stop").click()
    assert page.execute_script("return window.mostInFlight") == 1
