"""Build step: the onnxruntime-web files the page runs models with, from the npm package pinned in
``web/package-lock.json`` into ``nst_fast/serve/static/ort/`` (git-ignored build output; the wheel packs it).

    python web/build.py            # skips when the folder already holds this version, checked
    python web/build.py --force    # fetch and copy again
    python web/build.py --tarball onnxruntime-web-1.31.1.tgz   # no npm: a tarball fetched before

Two checks, and nothing is written unless both pass: the package tarball (``npm pack``, the registry's ordinary
client) against the lock's ``integrity`` (sha512), then each file taken from it against the sha256 recorded in
``web/runtime-files.json``. The ``.wasm`` files are stored gzip-compressed (a quarter of the size; nst-serve sends
them as they are with ``Content-Encoding: gzip``, and ``export.web`` writes them out decompressed). The folder's
``manifest.json``, written last, lists every file with its checksum: ``nst_fast.serve.runtime`` reads it. Standard
library only, so CI runs it before any install.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

WEB = Path(__file__).resolve().parent
LOCK = WEB / "package-lock.json"
FILES = WEB / "runtime-files.json"
LICENSE = WEB / "ONNXRUNTIME_LICENSE"
OUT = WEB.parent / "nst_fast" / "serve" / "static" / "ort"
MANIFEST = "manifest.json"
LICENSE_NAME = "LICENSE.txt"
#: Files stored gzip-compressed (``NAME.gz``): the WebAssembly binaries, 15 and 29 MB as published.
COMPRESSED_SUFFIXES = (".wasm",)


class BuildError(RuntimeError):
    """Something to fix before the runtime files can be copied; the message says what."""


def locked_package(lock: Path, package: str) -> tuple[str, str]:
    """The version and ``integrity`` (``sha512-BASE64``) that ``lock`` pins for ``package``."""
    try:
        entry = json.loads(lock.read_text())["packages"][f"node_modules/{package}"]
        return entry["version"], entry["integrity"]
    except (OSError, KeyError, json.JSONDecodeError) as error:
        raise BuildError(
            f"{lock}: no pinned {package} ({error}); run `npm install --package-lock-only` in {lock.parent}"
        ) from error


def check_integrity(tarball: Path, integrity: str) -> None:
    """``tarball`` is the one the lock pins: its sha512 equals ``integrity`` (npm's ``sha512-BASE64`` form)."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise BuildError(f"the lock's integrity {integrity[:20]}... is not sha512; regenerate package-lock.json")
    digest = hashlib.sha512()
    with tarball.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    actual = base64.b64encode(digest.digest()).decode()
    if actual != expected:
        raise BuildError(
            f"{tarball.name}: sha512 {actual[:16]}... differs from the lock's {expected[:16]}...: "
            "not the pinned package; delete it (and npm's cache entry) and run again"
        )


def npm_pack(package: str, version: str, folder: Path) -> Path:
    """``npm pack PACKAGE@VERSION`` into ``folder`` (the registry's tarball, through npm's cache)."""
    if shutil.which("npm") is None:
        raise BuildError("npm is not installed (apt-get install npm, or pass --tarball FILE)")
    command = ["npm", "pack", f"{package}@{version}", "--pack-destination", str(folder), "--json", "--silent"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"`{' '.join(command)}` failed: {done.stderr.strip()[-500:]}")
    return folder / json.loads(done.stdout)[0]["filename"]


def read_members(tarball: Path, wanted: dict[str, dict]) -> dict[str, bytes]:
    """The ``dist/`` files named in ``wanted`` from the npm tarball, each checked against its recorded sha256."""
    contents: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as archive:
        for name, record in wanted.items():
            try:
                data = archive.extractfile(f"package/dist/{name}").read()
            except (KeyError, AttributeError) as error:
                raise BuildError(f"{tarball.name} has no dist/{name}; update web/runtime-files.json") from error
            digest = hashlib.sha256(data).hexdigest()
            if digest != record["sha256"]:
                raise BuildError(
                    f"dist/{name}: sha256 {digest[:16]}... differs from web/runtime-files.json "
                    f"({record['sha256'][:16]}...): record the new version's checksums"
                )
            contents[name] = data
    return contents


def write_runtime(contents: dict[str, bytes], wanted: dict[str, dict], version: str, max_ir: int, out: Path) -> None:
    """Replace ``out`` with the files (``.wasm`` as ``.wasm.gz``), the licence and ``manifest.json``, written
    beside it first so that a failure leaves the old folder."""
    staging = Path(tempfile.mkdtemp(prefix=".ort-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would make the installed folder unreadable to other users
    try:
        files = {}
        for name, data in contents.items():
            compressed = name.endswith(COMPRESSED_SUFFIXES)
            stored = f"{name}.gz" if compressed else name
            (staging / stored).write_bytes(gzip.compress(data, 9, mtime=0) if compressed else data)
            files[name] = {
                "stored": stored,
                "encoding": "gzip" if compressed else None,
                "size": len(data),
                "sha256": wanted[name]["sha256"],
                "for": wanted[name]["for"],
            }
        shutil.copyfile(LICENSE, staging / LICENSE_NAME)
        manifest = {
            "package": "onnxruntime-web",
            "version": version,
            "max_ir_version": max_ir,
            "license": LICENSE_NAME,
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def up_to_date(out: Path, version: str, wanted: dict[str, dict], max_ir: int) -> bool:
    """``out`` holds this version's files, by its manifest and the stored files' presence."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    files = manifest.get("files", {})
    return (
        manifest.get("version") == version
        and manifest.get("max_ir_version") == max_ir
        and set(files) == set(wanted)
        and all(
            files[name].get("sha256") == wanted[name]["sha256"] and (out / files[name]["stored"]).is_file()
            for name in wanted
        )
    )


def build(
    out: Path = OUT, tarball: Path | None = None, force: bool = False, lock: Path = LOCK, files: Path = FILES
) -> str:
    """Copy the checked runtime files into ``out``; returns what was done, in words."""
    record = json.loads(files.read_text())
    package, wanted, max_ir = record["package"], record["files"], int(record["max_ir_version"])
    version, integrity = locked_package(lock, package)
    if not force and tarball is None and up_to_date(out, version, wanted, max_ir):
        return f"{out} already holds {package} {version}"
    with tempfile.TemporaryDirectory() as folder:
        tarball = tarball or npm_pack(package, version, Path(folder))
        check_integrity(tarball, integrity)
        contents = read_members(tarball, wanted)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_runtime(contents, wanted, version, max_ir, out)
    size = sum(path.stat().st_size for path in out.iterdir())
    return f"wrote {package} {version} ({len(wanted)} files, {size / 1e6:.1f} MB) to {out}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="copy again even if the folder is up to date")
    parser.add_argument("--tarball", type=Path, help="the package tarball, instead of `npm pack`")
    parser.add_argument("--out", type=Path, default=OUT, help=f"target folder (default {OUT})")
    args = parser.parse_args(argv)
    try:
        print(f"web/build.py: {build(args.out, args.tarball, args.force)}")
    except BuildError as error:
        print(f"web/build.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
