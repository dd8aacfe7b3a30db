"""The page's in-browser mode measured in headless Chromium (Debian's, with its fake camera): webcam frame rates in
the browser against the server mode on the same machine, page weight and first-result time, and parity with ONNX
Runtime on the CPU for a photo.

    python bench/browser.py --model export/starry.onnx --light export/starry-light.onnx --photo ../shared/photos/kite.jpg
    python bench/browser.py --model export/starry.onnx --site export/web --webgpu     # + the static site, SwiftShader

For each network (``--model``: Johnson's, ``--light``: ``model=light``), a fresh ``nst-serve`` serves that model
alone; the page's webcam runs at each ``--sizes`` in ``browser`` mode (``?run=browser``) and in ``server`` mode, in
interleaved order (``--repeats`` runs each); a run counts frames for ``--seconds`` after ``--warmup`` frames; the
median over runs is reported. Page weight and first-result time: a fresh profile (cold cache) opens the page, picks ``--photo`` at
once and waits for the result; weight is the bytes on the wire (resource timing ``transferSize``). Parity: the
browser's result for ``--photo`` (as uploaded, and as a PNG of Pillow's decoding, which isolates the network from
the JPEG decoders) against ``nst-stylize``'s core on ONNX Runtime's CPU provider. ``--webgpu``: also with
``--enable-unsafe-webgpu --enable-unsafe-swiftshader`` (a software adapter; forced with ``?provider=webgpu``).
Prints tables and writes ``bench/results/browser-<timestamp>.json``. Needs selenium, Chromium and the
onnxruntime-web files (``python web/build.py``); not torch.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageOps
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
SWIFTSHADER = ("--enable-unsafe-webgpu", "--enable-unsafe-swiftshader")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.2)


@contextlib.contextmanager
def serving(command: list[str], ready: str, port: int) -> Iterator[str]:
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        wait_http(f"http://127.0.0.1:{port}{ready}", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def nst_serve(model: Path) -> contextlib.AbstractContextManager[str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "nst_fast.serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return serving(command, "/readyz", port)


def static_host(folder: Path) -> contextlib.AbstractContextManager[str]:
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)]
    return serving(command, "/", port)


@contextlib.contextmanager
def chromium(*flags: str) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile (cold cache) and a fake camera."""
    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            f"--user-data-dir={profile}",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--window-size=1280,1000",
            *flags,
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.set_script_timeout(120)
        try:
            yield driver
        finally:
            driver.quit()


def open_page(driver, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#style-list input[type=radio]"))


def until(driver, condition, seconds: float = 600, poll: float = 0.2) -> None:
    """Wait for ``condition(driver)``; a message the page shows instead (a failure) ends the wait at once."""

    def done(d) -> bool:
        error = d.find_element(By.ID, "error")
        if error.is_displayed():
            raise RuntimeError(f"the page says: {error.text}")
        return bool(condition(d))

    WebDriverWait(driver, seconds, poll).until(done)


def frames(driver) -> int:
    return int(driver.find_element(By.ID, "webcam-frames").text)


def webcam_fps(driver, url: str, size: int, warmup: int, seconds: float) -> dict[str, Any]:
    """The webcam at ``size`` px: frames a second over ``seconds`` after ``warmup`` frames, and where it ran."""
    open_page(driver, url)
    Select(driver.find_element(By.ID, "webcam-size")).select_by_value(str(size))
    driver.find_element(By.ID, "webcam-start").click()
    until(driver, lambda d: frames(d) >= warmup)
    start_frames, start = frames(driver), time.monotonic()
    time.sleep(seconds)
    fps = (frames(driver) - start_frames) / (time.monotonic() - start)
    where = driver.find_element(By.ID, "webcam-where").text
    driver.find_element(By.ID, "webcam-stop").click()
    return {"fps": fps, "where": where}


def interleaved(repeats: int) -> list[str]:
    """browser, server, server, browser, ...: the machine's other load hits both modes alike."""
    pairs = [("browser", "server") if i % 2 == 0 else ("server", "browser") for i in range(repeats)]
    return [mode for pair in pairs for mode in pair]


def shown_result(driver) -> np.ndarray:
    encoded = driver.execute_async_script(
        """
        const done = arguments[0];
        fetch(document.getElementById("result").src).then((r) => r.arrayBuffer()).then((buffer) => {
          const bytes = new Uint8Array(buffer);
          let text = "";
          for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
          done(btoa(text));
        });
        """
    )
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"))


def worker_loads(url: str, runtime: dict[str, Any] | None, seen: set[str]) -> dict[str, list[int]]:
    """The runtime files the page's worker fetched (resource timing lists only the page's own fetches): the
    WebAssembly provider's glue and binary, sized as this host sends them (gzip where it compresses)."""
    if runtime is None:
        return {}
    loads = {}
    for name in ("ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"):
        if name in seen:
            continue
        response = httpx.get(f"{url}{runtime['runtime']}{name}", headers={"Accept-Encoding": "gzip"})
        loads[name] = [
            len(response.read())
            if "content-encoding" not in response.headers
            else int(response.headers["content-length"]),
            len(response.content),
        ]
    return loads


def first_result(driver, url: str, photo: Path) -> dict[str, Any]:
    """Open ``url`` (cold cache), pick ``photo`` at once; seconds to the result and the bytes loaded by then
    (on the wire, and decoded)."""
    driver.get(url)
    WebDriverWait(driver, 60, 0.05).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#style-list input"))
    driver.find_element(By.ID, "photo-input").send_keys(str(photo))
    until(
        driver,
        lambda d: (
            " ms" in d.find_element(By.ID, "status").text
            and not d.find_element(By.ID, "result").get_attribute("hidden")
        ),
        poll=0.05,
    )
    seconds = driver.execute_script("return performance.now()") / 1000
    entries = driver.execute_script(
        "return performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'))"
        ".map((e) => [e.name, e.transferSize, e.decodedBodySize])"
    )
    by_file = {name.split("/")[-1].split("?")[0] or "index.html": [wire, decoded] for name, wire, decoded in entries}
    root = url.split("?")[0]
    runtime = httpx.get(f"{root}v1/styles").json().get("browser") if "run=server" not in url else None
    by_file.update(worker_loads(root, runtime, set(by_file)))
    return {
        "seconds": seconds,
        "wire_bytes": sum(w for w, _ in by_file.values()),
        "decoded_bytes": sum(d for _, d in by_file.values()),
        "files": by_file,
        "status": driver.find_element(By.ID, "status").text,
    }


def cpu_reference(model: Path, rgb: np.ndarray) -> np.ndarray:
    sys.path.insert(0, str(REPO_ROOT))
    from nst_fast.images import to_uint8
    from nst_fast.stylize import load_model, stylize_array
    from nst_fast.stylize.styles import parse_style_weights

    loaded = load_model(model, provider="cpu")
    weights = parse_style_weights(loaded, loaded.styles[0] if len(loaded.styles) > 1 else None, None)
    return to_uint8(stylize_array(loaded, rgb[None], False, weights)[0])


def parity(driver, url: str, model: Path, photo: Path, folder: Path, side: int = 0) -> dict[str, Any]:
    """Max |difference| (levels) and share of differing values, browser vs ONNX Runtime CPU, for ``photo`` as
    uploaded and as a PNG of Pillow's decoding; ``side``: only that PNG, downscaled to this width (WebGPU on
    SwiftShader takes about a minute for 256 pixels)."""
    image = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
    if side:
        image = image.resize((side, round(image.height * side / image.width)), Image.Resampling.LANCZOS)
    rgb = np.asarray(image)
    png = folder / f"{photo.stem}.png"
    Image.fromarray(rgb).save(png)
    reference = cpu_reference(model, rgb)
    report = {}
    pillow = ("PNG of Pillow's decoding", png)
    for label, upload in [pillow] if side else [("as uploaded", photo), pillow]:
        open_page(driver, url)
        driver.find_element(By.ID, "photo-input").send_keys(str(upload))
        until(driver, lambda d: " ms" in d.find_element(By.ID, "status").text)
        shown = shown_result(driver)
        diff = np.abs(shown.astype(int) - reference.astype(int))
        report[label] = {
            "max_abs_diff": int(diff.max()),
            "share_differing": float((diff > 0).mean()),
            "where": driver.find_element(By.ID, "status").text,
        }
    return report


def measure_network(name: str, model: Path, args: argparse.Namespace, record: dict[str, Any]) -> None:
    with nst_serve(model) as url, chromium() as driver:
        for size in args.sizes:
            for mode in interleaved(args.repeats):
                key = f"{name} {size} px {mode}"
                result = webcam_fps(driver, f"{url}/?run={mode}", size, args.warmup, args.seconds)
                record["webcam"].setdefault(key, []).append(result)
                print(f"  webcam {key}: {result['fps']:.2f} fps ({result['where']})", flush=True)
            if args.threads:
                key = f"{name} {size} px browser threads={args.threads}"
                result = webcam_fps(
                    driver, f"{url}/?run=browser&threads={args.threads}", size, args.warmup, args.seconds
                )
                record["webcam"][key] = [result]
                print(f"  webcam {key}: {result['fps']:.2f} fps ({result['where']})", flush=True)
    for mode in ("browser", "server"):
        with nst_serve(model) as url, chromium() as driver:
            record["first_result"][f"{name} {mode} (nst-serve)"] = first_result(
                driver, f"{url}/?run={mode}", args.photo
            )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="Johnson network export (NAME.onnx)")
    parser.add_argument("--light", type=Path, help="light network export (model=light)")
    parser.add_argument("--photo", type=Path, required=True, help="held-out photo for first result and parity")
    parser.add_argument("--site", type=Path, help="an export.web folder: its page weight and first result too")
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(s) for s in text.split(",")],
        default=[256, 384],
        help="webcam frame sizes, among the page's (256, 384, 512)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="frames before counting (default 3)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each mode per setting, interleaved (default 2)")
    parser.add_argument("--seconds", type=float, default=12.0, help="seconds counted per run (default 12)")
    parser.add_argument("--threads", type=int, default=0, help="also the browser with this many threads")
    parser.add_argument("--webgpu", action="store_true", help="also WebGPU on SwiftShader (slow)")
    parser.add_argument("--webgpu-side", type=int, default=256, help="photo width for WebGPU parity (default 256)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    record: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "chromium": subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True).stdout.strip(),
        "webcam": {},
        "first_result": {},
        "parity": {},
        "args": sys.argv[1:],
    }
    print(f"{record['chromium']} on {record['cpu']} ({record['cores']} cores), load {record['load_average']}")
    networks = {"johnson": args.model, **({"light": args.light} if args.light else {})}
    for name, model in networks.items():
        measure_network(name, model, args, record)
    with tempfile.TemporaryDirectory() as folder, nst_serve(args.model) as url, chromium() as driver:
        record["parity"]["wasm"] = parity(driver, f"{url}/?run=browser", args.model, args.photo, Path(folder))
    if args.site:
        with static_host(args.site) as url, chromium() as driver:
            record["first_result"]["static site (http.server)"] = first_result(driver, f"{url}/", args.photo)
    if args.webgpu:
        model = args.light or args.model
        with tempfile.TemporaryDirectory() as folder, nst_serve(model) as url, chromium(*SWIFTSHADER) as driver:
            record["parity"]["webgpu (SwiftShader)"] = parity(
                driver, f"{url}/?run=browser&provider=webgpu", model, args.photo, Path(folder), args.webgpu_side
            )
    record["load_average_after"] = os.getloadavg()
    for key, runs in record["webcam"].items():
        print(f"webcam {key}: median {statistics.median(r['fps'] for r in runs):.2f} fps")
    for key, result in record["first_result"].items():
        print(
            f"first result {key}: {result['seconds']:.1f} s, {result['wire_bytes'] / 1e6:.2f} MB on the wire "
            f"({result['decoded_bytes'] / 1e6:.2f} MB decoded)"
        )
    print(json.dumps(record["parity"], indent=1))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = args.out_dir / f"browser-{stamp}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"record: {path}")
    return {**record, "record_path": str(path)}


if __name__ == "__main__":
    main()
