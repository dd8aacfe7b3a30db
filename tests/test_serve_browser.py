"""The nst-serve web page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium against a live ``python -m nst_fast.serve`` with two tiny ONNX models that have an export's
interface (``onnx_factory``), a single-style one and a three-style one with the identity. What the page shows is
compared with what the API returns for the same photo and explicit fields, so the page is checked to send what it
claims to; server answers that are hard to time (503, a refusal after a success) are substituted in the page's
``fetch``. Without Chromium the module skips, unless ``CI`` or ``NST_FAST_REQUIRE_BROWSER`` is set: then it fails
(``browser_support``). The page stylising in the browser itself is tests/test_browser_mode.py."""

from __future__ import annotations

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
from browser_support import WAIT, browser, error_text, require_chromium, set_slider, shown_result, visible
from onnx_factory import thumbnail_base64, tiny_onnx_model
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

REPO_ROOT = Path(__file__).resolve().parents[1]
TRIO = ["starry", "wave", "udnie"]
pytestmark = pytest.mark.slow
__all__ = ["browser", "require_chromium"]  # fixtures


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
        [
            sys.executable,
            "-m",
            "nst_fast.serve",
            "--model",
            str(single),
            "--model",
            str(multi),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
    response = httpx.post(
        f"{server}/v1/stylize", files={"image": (photo.name, photo.read_bytes())}, data=fields, timeout=WAIT
    )
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def wait_until_shown(driver, expected: np.ndarray) -> None:
    """Wait until the page's result is exactly ``expected`` (a later answer may replace an earlier one)."""

    def matches(d) -> bool:
        shown = shown_result(d)
        return shown is not None and shown.shape == expected.shape and np.array_equal(shown, expected)

    WebDriverWait(driver, WAIT).until(matches, "the page never showed the API's result for these choices")


def intercept(page, fakes: list[dict] | None = None, delay_ms: int = 0) -> None:
    """Wrap the page's ``fetch`` for stylise requests: record each one's text fields (``window.sentForms``), answer
    the next ones with ``fakes`` (``{"status", "body", "headers"}``, a JSON body) instead of the server, and hold
    the real ones back ``delay_ms`` first."""
    page.execute_script(
        """
        const [fakes, delayMs] = arguments;
        const realFetch = window.realFetch || window.fetch;
        window.realFetch = realFetch;
        window.sentForms = [];
        window.fetch = async (url, options) => {
          if (!String(url).includes("v1/stylize")) return realFetch(url, options);
          const fields = {};
          for (const [key, value] of options.body.entries()) if (typeof value === "string") fields[key] = value;
          window.sentForms.push(fields);
          const fake = fakes.shift();
          if (fake) {
            return new Response(JSON.stringify(fake.body),
              { status: fake.status, headers: { ...fake.headers, "Content-Type": "application/json" } });
          }
          if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
          return realFetch(url, options);
        };
        """,
        fakes or [],
        delay_ms,
    )


def sent_forms(page) -> list[dict[str, str]]:
    return page.execute_script("return window.sentForms")


def test_photo_is_stylised_at_its_size(page, server, photo) -> None:
    assert visible(page, "model-row")  # two models: the selector is offered
    assert not visible(page, "strength-row") and not visible(page, "blend-row")  # the default model has neither
    assert not page.find_elements(By.CSS_SELECTOR, "#style-list img")  # nor thumbnails: a lettered swatch instead
    assert page.find_element(By.CSS_SELECTOR, "#style-list .swatch").text == "W"
    assert not visible(page, "viewer") and not visible(page, "format")  # nothing to show or save before a photo
    page.find_element(By.ID, "photo-input").send_keys(str(photo))
    wait_until_shown(page, api_result(server, photo))
    result = page.find_element(By.ID, "result")
    size = page.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", result)
    assert size == [75, 53]
    assert visible(page, "before") and visible(page, "split-row")
    download = page.find_element(By.ID, "download")
    assert download.is_displayed()
    assert download.get_attribute("href") == result.get_attribute("src")
    assert download.get_attribute("download") == "photo_wave.png"


def test_the_page_describes_models_in_plain_words(page, server) -> None:
    models = {model["name"]: model for model in httpx.get(f"{server}/v1/styles", timeout=WAIT).json()["models"]}
    assert page.find_element(By.ID, "model-info").text == f"{models['wave']['summary']} · trained for 3 steps"
    Select(page.find_element(By.ID, "model-select")).select_by_value("trio")
    info = page.find_element(By.ID, "model-info").text
    assert info.startswith("3 styles (starry, wave, udnie) that blend, with a strength control · ")
    assert "nchw" not in info and "ONNX" not in info and "providers" not in info
    shown = [element.text for element in page.find_elements(By.CSS_SELECTOR, "h2, legend") if element.is_displayed()]
    assert shown.count("Style") == 1, shown  # one heading, no legend repeating it
    for option in ("format", "max-size"):  # the photo's options sit with the photo's result, not by the webcam
        assert page.find_elements(By.CSS_SELECTOR, f"#viewer #{option}") and not visible(page, option)


def test_styles_blends_and_strength_reach_the_server(page, server, photo) -> None:
    page.find_element(By.ID, "photo-input").send_keys(str(photo))
    Select(page.find_element(By.ID, "model-select")).select_by_value("trio")
    assert visible(page, "strength-row") and visible(page, "blend-row")
    names = [element.get_attribute("value") for element in page.find_elements(By.CSS_SELECTOR, "#style-list input")]
    assert names == TRIO
    thumbnails = page.find_elements(By.CSS_SELECTOR, "#style-list img")
    assert len(thumbnails) == 3 and all(
        image.get_attribute("src").startswith("data:image/jpeg;base64,") for image in thumbnails
    )
    model = {"model": "trio"}
    wait_until_shown(page, api_result(server, photo, **model, style="starry", strength="1"))

    page.find_element(By.XPATH, "//input[@id='style-1']/parent::label").click()
    wait_until_shown(page, api_result(server, photo, **model, style="wave", strength="1"))

    page.find_element(By.CSS_SELECTOR, "label[for=preserve-color]").click()
    set_slider(page, "strength", 50)
    Select(page.find_element(By.ID, "format")).select_by_value("jpeg")
    wait_until_shown(
        page, api_result(server, photo, **model, style="wave", strength="0.5", preserve_color="true", format="jpeg")
    )
    assert page.find_element(By.ID, "download").get_attribute("download") == "photo_wave_50.jpg"


def shown_shares(page) -> dict[str, tuple[int, str]]:
    """Each blend slider's thumb position and the percentage shown beside it."""
    return {
        slider.get_attribute("data-style"): (
            int(slider.get_attribute("value")),
            slider.find_element(By.XPATH, "following-sibling::output").text,
        )
        for slider in page.find_elements(By.CSS_SELECTOR, "#blend-sliders input[type=range]")
    }


def test_blend_percentages_are_the_weights_sent(page, server, photo) -> None:
    """The blend sliders are the shares: moving one moves the others so they add up to 100%; each shows its thumb's
    percentage, and that is the weight sent (and the image shown is the API's for those weights)."""
    page.find_element(By.ID, "photo-input").send_keys(str(photo))
    Select(page.find_element(By.ID, "model-select")).select_by_value("trio")
    page.find_element(By.CSS_SELECTOR, "label[for=blend-toggle]").click()
    assert visible(page, "blend-sliders")
    intercept(page)
    for moved, value in (("weight-0", 80), ("weight-1", 60), ("weight-2", 0), ("weight-0", 0)):
        set_slider(page, moved, value)
        shares = shown_shares(page)
        assert all(shown == f"{position}%" for position, shown in shares.values()), shares
        assert sum(position for position, _ in shares.values()) == 100, shares
        WebDriverWait(page, WAIT).until(
            lambda d: (
                sent_forms(d)
                and sent_forms(d)[-1]["style"]
                == ",".join(
                    f"{name}={position / 100:.2f}" for name, (position, _) in shown_shares(d).items() if position
                )
            )
        )
    assert shown_shares(page)["wave"] == (100, "100%")  # starry to 0 after udnie to 0: wave takes it all
    assert [form["style"] for form in sent_forms(page)][:2] == [
        "starry=0.80,wave=0.10,udnie=0.10",
        "starry=0.36,wave=0.60,udnie=0.04",
    ]
    set_slider(page, "weight-1", 70)
    style = sent_forms(page)[-1]["style"]
    assert style == "starry=0.15,wave=0.70,udnie=0.15", style  # from 0 and 0: an equal share of what is left
    wait_until_shown(page, api_result(server, photo, model="trio", style=style, strength="1"))
    assert page.find_element(By.ID, "download").get_attribute("download") == "photo_starry+wave+udnie.png"


def test_an_unreadable_file_gets_a_clear_state_and_plain_words(page, server, tmp_path) -> None:
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"this is a text file, not a PNG\n")
    refusal = httpx.post(f"{server}/v1/stylize", files={"image": (not_an_image.name, not_an_image.read_bytes())})
    assert refusal.status_code == 400 and "UnidentifiedImageError" in refusal.json()["error"]  # the API's detail
    page.find_element(By.ID, "photo-input").send_keys(str(not_an_image))
    WebDriverWait(page, WAIT).until(lambda d: error_text(d), "no message for the unreadable file")
    assert error_text(page) == (
        "notes.png could not be read as a photo. Choose a PNG, JPEG, WebP, TIFF, BMP or GIF image."
    )
    for hidden in ("viewer", "before", "result", "split-row", "download"):  # no broken picture, nothing to split
        assert not visible(page, hidden), hidden
    assert "UnidentifiedImageError" not in page.find_element(By.TAG_NAME, "body").text


def test_a_photo_the_browser_cannot_show_is_stylised_alone(page, server, tmp_path) -> None:
    tiff = tmp_path / "scan.tif"  # Chromium shows no TIFF; the server reads it
    Image.fromarray(pattern(40, 30, 2)).save(tiff)
    page.find_element(By.ID, "photo-input").send_keys(str(tiff))
    wait_until_shown(page, api_result(server, tiff))
    assert not visible(page, "before") and not visible(page, "split-row") and visible(page, "download")
    note = page.find_element(By.ID, "preview-note").text
    assert note == "This browser cannot show scan.tif: the result is shown alone."
    assert not visible(page, "error")


BUSY = {
    "status": 503,
    "body": {"error": "the server is busy (1 running, 2 waiting); retry after 2 s"},
    "headers": {"Retry-After": "2"},
}


def test_a_busy_server_is_retried_after_retry_after_with_a_countdown(page, server, photo) -> None:
    intercept(page, [BUSY])
    page.find_element(By.ID, "photo-input").send_keys(str(photo))
    WebDriverWait(page, WAIT).until(lambda d: "Trying again" in error_text(d))
    first = error_text(page)
    assert first in (
        f"The server is busy with other photos right now. Trying again in {seconds} s. Cancel" for seconds in (2, 1)
    )
    assert "server is busy (" not in first  # the server's words are not repeated
    wait_until_shown(page, api_result(server, photo))  # retried by itself
    assert len(sent_forms(page)) == 2 and not visible(page, "error")


def test_a_retry_can_be_cancelled(page, server, photo) -> None:
    intercept(page, [{**BUSY, "headers": {"Retry-After": "30"}}])
    page.find_element(By.ID, "photo-input").send_keys(str(photo))
    WebDriverWait(page, WAIT).until(
        lambda d: "Trying again in 30 s" in error_text(d) or "Trying again in 29 s" in error_text(d)
    )
    page.find_element(By.ID, "retry-cancel").click()
    assert error_text(page) == "The server is busy with other photos right now. Press Stylise to try again."
    time.sleep(1.5)
    assert len(sent_forms(page)) == 1 and not visible(page, "retry-row")
    page.find_element(By.ID, "stylize-button").click()
    wait_until_shown(page, api_result(server, photo))
    assert not visible(page, "error")


def test_errors_clear_the_old_result_and_a_new_request_clears_the_error(page, server, photo) -> None:
    page.find_element(By.ID, "photo-input").send_keys(str(photo))
    wait_until_shown(page, api_result(server, photo))
    intercept(page, [{"status": 400, "body": {"error": "photo.png: 3x3 is too small"}, "headers": {}}], delay_ms=1500)
    Select(page.find_element(By.ID, "max-size")).select_by_value("512")
    WebDriverWait(page, WAIT).until(lambda d: error_text(d))
    assert error_text(page) == "The server could not stylise photo.png: photo.png: 3x3 is too small"
    assert not visible(page, "result") and not visible(page, "download")  # they belonged to other choices
    Select(page.find_element(By.ID, "format")).select_by_value("webp")  # the next request is held back 1.5 s
    WebDriverWait(page, WAIT).until(lambda d: d.find_element(By.ID, "status").text == "Stylising…")
    assert not visible(page, "error")
    wait_until_shown(page, api_result(server, photo, format="webp", max_size="512"))


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
    WebDriverWait(page, WAIT).until(
        lambda d: int(d.find_element(By.ID, "webcam-frames").text) >= 3, "fewer than 3 webcam frames came back"
    )
    fps = float(page.find_element(By.ID, "fps").text)
    assert 0 < fps < 1000
    camera_width, camera_height = page.execute_script(
        "const video = document.getElementById('webcam-video'); return [video.videoWidth, video.videoHeight]"
    )
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
    WebDriverWait(page, WAIT).until(
        lambda d: d.execute_script("return window.inFlight") == 1, "no webcam frame was sent"
    )
    page.execute_script(
        "document.getElementById('webcam-stop').click();document.getElementById('webcam-start').click();"
    )
    WebDriverWait(page, WAIT).until(
        lambda d: int(d.find_element(By.ID, "webcam-frames").text) >= 3,
        "fewer than 3 webcam frames came back after the restart",
    )
    page.find_element(By.ID, "webcam-stop").click()
    assert page.execute_script("return window.mostInFlight") == 1
