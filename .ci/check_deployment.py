"""CI's deployment check, run by the Python of a venv holding only ``nst-fast[serve]`` (no torch, Lightning or
Hydra): ``nst-stylize`` stylises a photo with the given exported ONNX model and with the bundled model, and
``nst-serve`` answers ``/readyz`` and a stylise request, offers the page's in-browser mode from the installed
onnxruntime-web files (media types, gzip, cross-origin isolation, the model download), then stops cleanly on
SIGTERM.

    python .ci/check_deployment.py MODEL.onnx WORKDIR
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def fail(message: str) -> None:
    print(f"check_deployment: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def multipart(field: str, path: Path) -> tuple[bytes, str]:
    boundary = "nst-fast-ci-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{path.name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def check_stylize(bin_dir: Path, model: Path, photo: Path, work: Path) -> None:
    out = work / "photo_stylised.png"
    subprocess.run([bin_dir / "nst-stylize", "--model", model, photo, "-o", out], check=True)
    if not out.is_file() or out.stat().st_size == 0:
        fail(f"nst-stylize wrote nothing to {out}")
    print(f"check_deployment: nst-stylize --model {model.name}: {out} ({out.stat().st_size} bytes)")


def check_serve(bin_dir: Path, model: Path, photo: Path) -> None:
    port = free_port()
    server = subprocess.Popen([bin_dir / "nst-serve", "--model", model, "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                fail("nst-serve did not become ready")
            time.sleep(0.5)
        body, content_type = multipart("image", photo)
        request = urllib.request.Request(f"{base}/v1/stylize", data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=60) as response:
            image = response.read()
            if response.status != 200 or not image.startswith(b"\x89PNG"):
                fail(f"/v1/stylize answered {response.status} with {image[:40]!r}")
        with urllib.request.urlopen(f"{base}/v1/styles", timeout=5) as response:
            styles = json.load(response)
        print(
            f"check_deployment: nst-serve answered /readyz and /v1/stylize ({len(image)} bytes); "
            f"models {[m['name'] for m in styles['models']]}"
        )
        check_browser_mode(base, styles, model)
    finally:
        server.send_signal(signal.SIGTERM)
        status = server.wait(timeout=60)
    if status != 0:
        fail(f"nst-serve exited {status} after SIGTERM")


def check_browser_mode(base: str, styles: dict, model: Path) -> None:
    """The wheel's runtime files reach the page: /v1/styles offers the in-browser mode, the WebAssembly goes out
    gzip-compressed as application/wasm, the bundle as JavaScript, every answer cross-origin isolated, and the
    model downloads unchanged."""
    if not styles.get("browser"):
        fail(
            f"/v1/styles offers no in-browser mode (browser: {styles.get('browser')!r}): the runtime files are missing"
        )
    expected = {
        "ort-wasm-simd-threaded.wasm": ("application/wasm", "gzip"),
        "ort.wasm.min.mjs": ("text/javascript", None),
    }
    for name, (media_type, encoding) in expected.items():
        request = urllib.request.Request(
            f"{base}/{styles['browser']['runtime']}{name}", headers={"Accept-Encoding": "gzip"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            got = (response.headers.get_content_type(), response.headers.get("Content-Encoding"))
            isolated = (
                response.headers.get("Cross-Origin-Opener-Policy"),
                response.headers.get("Cross-Origin-Embedder-Policy"),
            )
            response.read()
        if got != (media_type, encoding) or isolated != ("same-origin", "require-corp"):
            fail(f"{name}: served as {got} with COOP/COEP {isolated}, not {(media_type, encoding)} and isolated")
    with urllib.request.urlopen(f"{base}/{styles['models'][0]['download']}", timeout=30) as response:
        if response.read() != model.read_bytes():
            fail(f"{styles['models'][0]['download']} is not {model}")
    print(f"check_deployment: in-browser mode offered with onnxruntime-web {styles['browser']['version']}")


def main() -> None:
    model, work = Path(sys.argv[1]), Path(sys.argv[2])
    for heavy in ("torch", "pytorch_lightning", "hydra"):
        if importlib.util.find_spec(heavy) is not None:
            fail(f"{heavy} is installed in the deployment venv; it must not be")
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    from nst_fast.assets import content_folder

    photo = work / "photo.jpg"
    shutil.copy(content_folder() / "rocket.jpg", photo)
    check_stylize(bin_dir, model, photo, work)
    check_serve(bin_dir, model, photo)
    print("check_deployment: OK")


if __name__ == "__main__":
    main()
