"""The files of the web page, as nst-serve serves them and ``export.web`` writes them: the page (``static/``), the
onnxruntime-web runtime of its in-browser mode (``static/ort/``, put there by ``web/build.py``), and the model list
the page reads (``GET v1/styles``) with where each model file can be downloaded. No FastAPI: the static site
export uses it from a training install."""

from __future__ import annotations

import gzip
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_fast.serve.registry import ModelRegistry

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The page: ``index.html`` at the site's root, the rest under ``static/`` (URL paths relative to the root).
PAGE_FILES = {
    "index.html": "index.html",
    "static/app.js": "app.js",
    "static/browser.js": "browser.js",
    "static/style.css": "style.css",
}
RUNTIME_DIR = STATIC_DIR / "ort"
#: Where the page finds the runtime, relative to its root (the folder the build writes, served as is).
RUNTIME_PATH = "static/ort/"
MANIFEST = "manifest.json"
#: Where the page downloads a model for the in-browser mode, relative to its root: ``v1/models/NAME.onnx``.
MODELS_PATH = "v1/models/"
#: Media types by suffix, so that they do not depend on the host's mimetypes tables: browsers compile
#: WebAssembly streaming only from ``application/wasm``, and load ES modules only with a JavaScript type.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".css": "text/css",
    ".json": "application/json",
    ".onnx": "application/octet-stream",
    ".txt": "text/plain; charset=utf-8",
}
#: Headers that make the page cross-origin isolated, which WebAssembly threads (SharedArrayBuffer) need.
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


def media_type(name: str) -> str:
    return MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def onnx_ir_version(path: Path) -> int | None:
    """The IR version of an ONNX file (``ModelProto`` field 1, which serialisers write first), read without the
    ``onnx`` package; ``None`` when the file does not start with it."""
    with path.open("rb") as handle:
        head = handle.read(11)
    if not head or head[0] != 0x08:  # field 1, varint
        return None
    value, shift = 0, 0
    for byte in head[1:]:
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        shift += 7
    return None


class RuntimeMissing(LookupError):
    """The runtime folder is absent or incomplete; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class RuntimeFile:
    """One onnxruntime-web file: its published name, where it is stored (``NAME.gz`` when ``encoding`` is
    ``"gzip"``), its published size and sha256, and the provider it belongs to (``wasm`` or ``webgpu``)."""

    name: str
    stored: Path
    encoding: str | None
    size: int
    sha256: str
    provider: str

    def read(self) -> bytes:
        """The file's bytes as published (decompressed)."""
        data = self.stored.read_bytes()
        return gzip.decompress(data) if self.encoding == "gzip" else data


@dataclass(frozen=True)
class Runtime:
    """The onnxruntime-web files in ``folder``, by their published names, its licence file, and the newest ONNX IR
    version it reads."""

    folder: Path
    version: str
    files: dict[str, RuntimeFile]
    license: Path
    max_ir_version: int

    @classmethod
    def load(cls, folder: Path = RUNTIME_DIR) -> Runtime:
        """The runtime ``web/build.py`` wrote into ``folder``; ``RuntimeMissing`` when it is absent or a file is."""
        if not (folder / MANIFEST).is_file():
            raise RuntimeMissing(
                f"no onnxruntime-web files in {folder}: in a checkout, run `python web/build.py`; "
                "or install a wheel that has them"
            )
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            files = {
                name: RuntimeFile(
                    name, folder / entry["stored"], entry["encoding"], int(entry["size"]), entry["sha256"], entry["for"]
                )
                for name, entry in manifest["files"].items()
            }
            version, license_file = str(manifest["version"]), folder / manifest["license"]
            max_ir = int(manifest["max_ir_version"])
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise RuntimeMissing(
                f"unreadable {folder / MANIFEST} ({type(error).__name__}: {error}); run `python web/build.py --force`"
            ) from None
        missing = [str(f.stored) for f in files.values() if not f.stored.is_file()]
        if missing or not license_file.is_file():
            raise RuntimeMissing(
                f"incomplete onnxruntime-web files in {folder}: missing "
                f"{', '.join(missing or [str(license_file)])}; run `python web/build.py --force`"
            )
        return cls(folder, version, files, license_file, max_ir)

    @classmethod
    def find(cls, folder: Path = RUNTIME_DIR) -> Runtime | None:
        try:
            return cls.load(folder)
        except RuntimeMissing:
            return None

    @property
    def providers(self) -> list[str]:
        """The execution providers these files give the page, preferred first: ``webgpu``, ``wasm``."""
        held = {f.provider for f in self.files.values()}
        return [provider for provider in ("webgpu", "wasm") if provider in held]

    def unreadable(self, model: Path) -> str | None:
        """Why this runtime cannot load ``model`` (an ONNX IR version newer than it reads), or ``None``."""
        ir_version = onnx_ir_version(model)
        if ir_version is not None and ir_version > self.max_ir_version:
            return (
                f"{model.name} has ONNX IR version {ir_version}; onnxruntime-web {self.version} reads up to "
                f"{self.max_ir_version} (nst-fast's exporter writes 10)"
            )
        return None

    def describe(self) -> dict[str, Any]:
        """``browser`` in ``GET v1/styles``: where the page loads the runtime from and what it offers."""
        return {
            "runtime": RUNTIME_PATH,
            "package": "onnxruntime-web",
            "version": self.version,
            "providers": self.providers,
        }


def model_path(name: str) -> str:
    """The URL path of a model's file, relative to the page: ``v1/models/NAME.onnx`` (``NAME`` quoted)."""
    return f"{MODELS_PATH}{urllib.parse.quote(name)}.onnx"


def styles_body(registry: ModelRegistry, runtime: Runtime | None, server: bool) -> dict[str, Any]:
    """``GET v1/styles``: the models (``ModelRegistry.describe``), each with its ``download`` path for the
    in-browser mode (``None`` without a runtime, or for a model it cannot read: ``Runtime.unreadable``);
    ``server``: whether ``POST v1/stylize`` is there to use; ``browser``: the runtime (``Runtime.describe``), or
    ``None`` when the page can only use the server."""
    body = registry.describe()
    for model in body["models"]:
        offered = runtime is not None and runtime.unreadable(registry.models[model["name"]].path) is None
        model["download"] = model_path(model["name"]) if offered else None
    body["server"] = server
    body["browser"] = runtime.describe() if runtime is not None else None
    return body
