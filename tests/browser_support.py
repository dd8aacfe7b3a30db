"""Shared by the tests that drive the web page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) with a fake camera, through Selenium; the module skips without them, unless ``CI`` or
``NST_FAST_REQUIRE_BROWSER`` is set: then it fails. Also helpers that read what the page shows."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing: pip install -e '.[dev]'")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Set (to anything but "" or "0") where the browser tests must run: a missing Chromium is then a failure.
REQUIRE_BROWSER = ("CI", "NST_FAST_REQUIRE_BROWSER")
#: Seconds to wait for the page to show an answer (the machine may be busy with other work).
WAIT = 30


def browser_required() -> bool:
    return any(os.environ.get(name, "") not in ("", "0") for name in REQUIRE_BROWSER)


def require_runtime() -> None:
    """Skip, or fail where the browser tests must run, without the onnxruntime-web files (``web/build.py``)."""
    from nst_fast.serve.webfiles import RUNTIME_DIR, Runtime

    if Runtime.find(RUNTIME_DIR) is None:
        message = f"no onnxruntime-web files in {RUNTIME_DIR}: run `python web/build.py`"
        if browser_required():
            pytest.fail(
                f"{message}; {' or '.join(REQUIRE_BROWSER)} is set, so the browser tests must run", pytrace=False
            )
        pytest.skip(message)


def require_chromium_here() -> None:
    """Skip, saying how to install, where Debian's Chromium or its driver is absent; fail instead where ``CI`` or
    ``NST_FAST_REQUIRE_BROWSER`` says the browser tests must run."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        message = (
            f"{' and '.join(missing)} not found: the browser tests need Debian's Chromium and its driver "
            "(`apt-get install chromium chromium-driver`)"
        )
        if browser_required():
            pytest.fail(f"{message}; {' or '.join(REQUIRE_BROWSER)} is set, so they must run", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module", autouse=True)
def require_chromium() -> None:
    """``require_chromium_here`` for every test of a module that imports it."""
    require_chromium_here()


#: Chromium's switches for a WebGPU adapter without a GPU: SwiftShader, a software (fallback) adapter.
SWIFTSHADER_WEBGPU = ("--enable-unsafe-webgpu", "--enable-unsafe-swiftshader")


def start_chromium(profile: Path, gpu: tuple[str, ...] = ("--disable-gpu",)):
    """Headless Chromium with a fake camera that needs no permission prompt; nothing is downloaded. ``gpu``: the
    switches for the GPU (none by default; ``SWIFTSHADER_WEBGPU`` for a software WebGPU adapter)."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        *gpu,
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(WAIT)
    return driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """``start_chromium`` for the module's tests."""
    driver = start_chromium(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


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
        element_id,
        str(value),
    )


def error_text(page) -> str:
    """The message shown at the top of the page, its lines joined by spaces ("" when none is shown)."""
    return " ".join(page.find_element(By.ID, "error").text.split()) if visible(page, "error") else ""
