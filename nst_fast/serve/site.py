"""The static site ``export.web`` writes: the nst-serve page running its models in the browser, for any static host
(``python -m http.server``, GitHub Pages, an object store). Its files sit at the URL paths nst-serve answers, so
that one page serves both: ``index.html``, ``static/`` (the page's scripts, the runtime in ``static/ort/``),
``v1/models/NAME.onnx`` and the model list ``v1/styles``, which says ``"server": false`` (no ``POST v1/stylize``
here: the page runs in the browser only). No FastAPI, no torch."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from nst_fast.errors import StylizeError
from nst_fast.serve.registry import ModelRegistry
from nst_fast.serve.webfiles import (
    ISOLATION_HEADERS,
    MODELS_PATH,
    PAGE_FILES,
    RUNTIME_PATH,
    STATIC_DIR,
    Runtime,
    styles_body,
)

#: The model list, at the path the page asks nst-serve for (a JSON file without a suffix).
STYLES_FILE = "v1/styles"
#: Netlify's and Cloudflare Pages' file of response headers: there the page is cross-origin isolated, and the
#: WebAssembly runtime gets its threads; hosts that cannot send headers (``python -m http.server``, GitHub Pages)
#: run it on one thread.
HEADERS_FILE = "_headers"


def site_models(folder: Path) -> list[Path]:
    """The models of the site in ``folder``, in its list's order (none when there is no site there yet)."""
    try:
        listed = json.loads((folder / STYLES_FILE).read_text())["models"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return []
    paths = [folder / MODELS_PATH / f"{model['name']}.onnx" for model in listed if isinstance(model, dict)]
    return [path for path in paths if path.is_file()]


def with_model(models: Sequence[Path], added: Path) -> list[Path]:
    """``models`` with ``added`` in place of the one of the same name, or last: exporting again replaces a model,
    and a new one joins the site after those before it (the first stays the default)."""
    listed = [added if model.stem == added.stem else model for model in models]
    return listed if added in listed else [*listed, added]


def write_site(folder: Path, models: Sequence[Path], runtime: Runtime) -> ModelRegistry:
    """Write the site into ``folder``: the page, ``runtime``'s files (decompressed: static hosts send them as they
    are), ``models`` (ONNX exports, copied unchanged, the first the default) and their list. Loads each copy with
    ONNX Runtime to describe it (raises ``StylizeError`` for a file that is not an nst-fast export, or one that
    ``runtime`` cannot read); returns them."""
    for target, source in PAGE_FILES.items():
        copy(STATIC_DIR / source, folder / target)
    runtime_folder = folder / RUNTIME_PATH
    runtime_folder.mkdir(parents=True, exist_ok=True)
    for file in runtime.files.values():
        (runtime_folder / file.name).write_bytes(file.read())
    shutil.copyfile(runtime.license, runtime_folder / runtime.license.name)
    copies = []
    for model in models:
        why = runtime.unreadable(model)
        if why:
            raise StylizeError(f"{why}: a browser cannot run it")
        target = folder / MODELS_PATH / f"{model.stem}.onnx"
        if model.resolve() != target.resolve():
            copy(model, target)
        copies.append(target)
    registry = ModelRegistry.load(copies, provider="cpu", threads=1)
    (folder / STYLES_FILE).write_text(json.dumps(styles_body(registry, runtime, server=False), indent=1) + "\n")
    headers = "".join(f"  {name}: {value}\n" for name, value in ISOLATION_HEADERS.items())
    (folder / HEADERS_FILE).write_text(f"/*\n{headers}")
    return registry


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
