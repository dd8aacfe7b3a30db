"""A stand-in onnxruntime-web for tests: an npm tarball of small fake files, the pins that ``web/build.py`` checks
it against, and a runtime folder built from them (``nst_fast.serve.webfiles.Runtime``)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Stand-in dist/ files: a bundle and a WebAssembly binary per provider, and a file the page does not need.
DIST = {
    "ort.wasm.min.mjs": b"export const wasm = 1;\n",
    "ort-wasm-simd-threaded.wasm": b"\0asm" + bytes(range(256)) * 64,
    "ort.webgpu.min.mjs": b"export const webgpu = 1;\n",
    "ort-wasm-simd-threaded.asyncify.wasm": b"\0asm" + b"gpu" * 999,
    "ort.webgl.min.mjs": b"not needed",
}
NEEDED = {
    "ort.wasm.min.mjs": "wasm",
    "ort-wasm-simd-threaded.wasm": "wasm",
    "ort.webgpu.min.mjs": "webgpu",
    "ort-wasm-simd-threaded.asyncify.wasm": "webgpu",
}


def load_build():
    spec = importlib.util.spec_from_file_location("web_build", REPO_ROOT / "web" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = load_build()


def sha512_integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def npm_tarball(path: Path, files: dict[str, bytes]) -> bytes:
    """An npm package tarball (``package/dist/NAME``) holding ``files``; its bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/dist/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def make_pins(tmp_path: Path) -> dict[str, Path]:
    """A tarball of ``DIST``, a lock pinning it and a file list with the checksums of ``NEEDED``."""
    tarball = tmp_path / "onnxruntime-web-9.9.9.tgz"
    data = npm_tarball(tarball, DIST)
    lock = tmp_path / "package-lock.json"
    lock.write_text(
        json.dumps(
            {"packages": {"node_modules/onnxruntime-web": {"version": "9.9.9", "integrity": sha512_integrity(data)}}}
        )
    )
    files = tmp_path / "runtime-files.json"
    files.write_text(
        json.dumps(
            {
                "package": "onnxruntime-web",
                "max_ir_version": 13,
                "files": {
                    name: {"sha256": hashlib.sha256(DIST[name]).hexdigest(), "for": provider}
                    for name, provider in NEEDED.items()
                },
            }
        )
    )
    return {"tarball": tarball, "lock": lock, "files": files, "out": tmp_path / "static" / "ort"}


@pytest.fixture
def pins(tmp_path) -> dict[str, Path]:
    """``make_pins`` in the test's folder."""
    return make_pins(tmp_path)


def fake_runtime(folder: Path) -> Path:
    """A runtime folder built by ``web/build.py`` from the stand-in package under ``folder``; its path."""
    made = make_pins(folder)
    build.build(made["out"], tarball=made["tarball"], lock=made["lock"], files=made["files"])
    return made["out"]
