"""web/build.py, the build step that copies the onnxruntime-web files into the package: on a stand-in npm tarball,
it writes what ``nst_fast.serve.webfiles.Runtime`` reads, and refuses a tarball or a file that is not the pinned
one. Also: the repository's pins agree with each other, and an installed runtime matches its manifest."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from web_support import DIST, NEEDED, build, npm_tarball, pins

from nst_fast.serve.webfiles import RUNTIME_DIR, Runtime, RuntimeMissing

REPO_ROOT = Path(__file__).resolve().parents[1]


__all__ = ["pins"]  # a fixture


def run_build(pins: dict[str, Path], **options):
    return build.build(
        pins["out"], tarball=options.pop("tarball", pins["tarball"]), lock=pins["lock"], files=pins["files"], **options
    )


def test_build_writes_the_checked_files_that_the_server_reads(pins) -> None:
    said = run_build(pins)
    assert said.startswith("wrote onnxruntime-web 9.9.9 (4 files")
    runtime = Runtime.load(pins["out"])
    assert (runtime.version, runtime.max_ir_version, runtime.providers) == ("9.9.9", 13, ["webgpu", "wasm"])
    assert set(runtime.files) == set(NEEDED)  # ort.webgl.min.mjs is not taken
    for name, file in runtime.files.items():
        assert file.read() == DIST[name] and file.size == len(DIST[name])
        assert (file.stored.name, file.encoding) == ((f"{name}.gz", "gzip") if name.endswith(".wasm") else (name, None))
    wasm = runtime.files["ort-wasm-simd-threaded.wasm"].stored
    assert gzip.decompress(wasm.read_bytes()) == DIST["ort-wasm-simd-threaded.wasm"]
    assert "MIT License" in runtime.license.read_text() and oct(pins["out"].stat().st_mode)[-3:] == "755"
    assert build.up_to_date(pins["out"], "9.9.9", json.loads(pins["files"].read_text())["files"], 13)


def test_a_tarball_that_is_not_the_pinned_one_is_refused(pins, tmp_path) -> None:
    other = tmp_path / "other.tgz"
    npm_tarball(other, {**DIST, "ort.wasm.min.mjs": b"export const tampered = 1;\n"})
    with pytest.raises(build.BuildError, match=r"other.tgz: sha512 .* differs from the lock's"):
        run_build(pins, tarball=other)
    assert not pins["out"].exists()  # nothing written


def test_a_file_that_differs_from_its_recorded_checksum_is_refused(pins) -> None:
    record = json.loads(pins["files"].read_text())
    record["files"]["ort.wasm.min.mjs"]["sha256"] = "0" * 64
    pins["files"].write_text(json.dumps(record))
    with pytest.raises(build.BuildError, match=r"dist/ort.wasm.min.mjs: sha256 .* differs from web/runtime-files"):
        run_build(pins)
    assert not pins["out"].exists()


def test_a_missing_file_says_which_and_an_incomplete_folder_is_not_a_runtime(pins) -> None:
    record = json.loads(pins["files"].read_text())
    record["files"]["ort.jspi.min.mjs"] = {"sha256": "0" * 64, "for": "wasm"}
    pins["files"].write_text(json.dumps(record))
    with pytest.raises(build.BuildError, match="has no dist/ort.jspi.min.mjs"):
        run_build(pins)
    with pytest.raises(RuntimeMissing, match=r"no onnxruntime-web files in .*python web/build.py"):
        Runtime.load(pins["out"])
    record["files"].pop("ort.jspi.min.mjs")
    pins["files"].write_text(json.dumps(record))
    run_build(pins)
    (pins["out"] / "ort.webgpu.min.mjs").unlink()
    with pytest.raises(RuntimeMissing, match=r"incomplete .* missing .*ort.webgpu.min.mjs"):
        Runtime.load(pins["out"])


def test_the_repository_pins_one_version_of_the_files_the_page_loads() -> None:
    """package.json pins an exact version, the lock pins the same with a sha512 integrity, and the file list
    holds the bundles the page imports (browser.js) with their WebAssembly."""
    package = json.loads((REPO_ROOT / "web" / "package.json").read_text())
    version = package["dependencies"]["onnxruntime-web"]
    assert version[0].isdigit(), f"pin an exact version, not {version!r}"
    locked, integrity = build.locked_package(REPO_ROOT / "web" / "package-lock.json", "onnxruntime-web")
    assert locked == version and integrity.startswith("sha512-")
    files = json.loads((REPO_ROOT / "web" / "runtime-files.json").read_text())["files"]
    page = (REPO_ROOT / "nst_fast" / "serve" / "static" / "browser.js").read_text()
    for bundle in ("ort.wasm.min.mjs", "ort.webgpu.min.mjs"):
        assert f'"{bundle}"' in page and bundle in files
    assert {"ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.asyncify.wasm"} <= set(files)


def test_the_installed_runtime_matches_its_manifest() -> None:
    """Where the build has run (CI runs it first), every file decompresses to its recorded checksum."""
    runtime = Runtime.find(RUNTIME_DIR)
    if runtime is None:
        pytest.skip(f"no onnxruntime-web files in {RUNTIME_DIR} (python web/build.py)")
    for file in runtime.files.values():
        data = file.read()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (file.size, file.sha256), file.name
