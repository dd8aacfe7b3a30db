"""Files bundled with the package (``nst_fast/assets/``): the style paintings (``styles/``) and the sample photos
(``content/``). One place that locates them, independent of the current directory and of how the package was
installed; plain ``pathlib`` (no torch, no Hydra), so every layer can use it."""

from __future__ import annotations

from pathlib import Path

from nst_fast.errors import MissingFileError

#: The folder holding the bundled files.
ASSETS_DIR = Path(__file__).resolve().parent


def asset_path(relative: str) -> str:
    """Absolute path of a bundled file, e.g. ``asset_path("styles/starry_night.jpg")``; ``MissingFileError`` naming
    the folder when there is no such file."""
    path = ASSETS_DIR / relative
    if not path.exists():
        raise MissingFileError(f"no bundled asset {relative!r} in {path.parent}")
    return str(path)


def content_folder() -> Path:
    """The bundled sample photos (the ``data=sample`` training set and the default int8 calibration photos)."""
    return ASSETS_DIR / "content"


def bundled_copy(recorded: str) -> Path | None:
    """The bundled copy of a file that a checkpoint recorded where it was trained: a path inside some
    ``.../nst_fast/assets/`` (another machine's install) or relative to the assets (``styles/X.jpg``); ``None``
    when ``recorded`` is neither or the file is not bundled here."""
    path = Path(recorded)
    parts = path.parts
    inside = [i for i in range(1, len(parts)) if parts[i - 1] == "nst_fast" and parts[i] == "assets"]
    if inside:
        relative = Path(*parts[inside[-1] + 1 :])
    elif not path.is_absolute():
        relative = path
    else:
        return None
    candidate = ASSETS_DIR / relative
    return candidate if candidate.is_file() else None


#: The models that ship with the package (``nst_fast/assets/models/``, model card: its README.md): name -> file.
#: ``paintings``: the five bundled paintings and the identity (strength), Johnson's network; ``paintings-int8``: the
#: same quantised for CPUs.
BUNDLED_MODELS = {
    "paintings": "paintings.onnx",
    "paintings-int8": "paintings.int8.onnx",
}
#: The model ``nst-stylize`` and ``nst-serve`` use without ``--model``.
DEFAULT_MODEL = "paintings"
#: Training checkpoints of the bundled models (weights and styles, no optimiser state), for ``finetune_from=NAME``.
BUNDLED_CHECKPOINTS = {"paintings": "paintings.ckpt"}


def models_folder() -> Path:
    """Where the bundled models live."""
    return ASSETS_DIR / "models"


def bundled_model(name: str) -> Path:
    """The file of a bundled model by name (``BUNDLED_MODELS``); ``MissingFileError`` listing the names otherwise."""
    if name not in BUNDLED_MODELS:
        raise MissingFileError(f"no bundled model {name!r}; the bundled models are {', '.join(BUNDLED_MODELS)}")
    path = models_folder() / BUNDLED_MODELS[name]
    if not path.is_file():
        raise MissingFileError(f"bundled model {name!r} is missing from this install ({path}): reinstall nst-fast")
    return path


def bundled_checkpoint(name: str) -> Path:
    """The training checkpoint of a bundled model (``BUNDLED_CHECKPOINTS``), for fine-tuning a new style into it."""
    if name not in BUNDLED_CHECKPOINTS:
        raise MissingFileError(
            f"no bundled checkpoint {name!r}; fine-tune from one of {', '.join(BUNDLED_CHECKPOINTS)} "
            "or from a .ckpt file"
        )
    path = models_folder() / BUNDLED_CHECKPOINTS[name]
    if not path.is_file():
        raise MissingFileError(f"bundled checkpoint {name!r} is missing from this install ({path}): reinstall nst-fast")
    return path
