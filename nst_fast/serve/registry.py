"""The served models: each ONNX export loaded once (one ONNX Runtime session shared by the inference threads),
named by its file stem, with what ``GET /v1/styles`` says about it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_fast.conventions import META_PRECISION, META_STEPS, META_STYLE_THUMBNAILS, META_TRANSFORMER
from nst_fast.errors import StylizeError
from nst_fast.stylize.models import StyleModel, load_model, resolve_model


class UnknownModelError(StylizeError, LookupError):
    """A model name the server does not hold."""


def style_thumbnails(metadata: dict[str, str], count: int) -> list[str | None]:
    """``data:`` URLs of the style thumbnails in an export's metadata (``nst_fast.style_thumbnails``, a JSON list
    of base64 JPEGs in styles order); ``None`` for each style when the export has none or they do not match."""
    try:
        thumbnails = json.loads(metadata[META_STYLE_THUMBNAILS])
    except (KeyError, json.JSONDecodeError):
        return [None] * count
    if not isinstance(thumbnails, list) or len(thumbnails) != count:
        return [None] * count
    return [f"data:image/jpeg;base64,{t}" if isinstance(t, str) and t else None for t in thumbnails]


def training_steps(metadata: dict[str, str]) -> int | None:
    try:
        return int(metadata[META_STEPS])
    except (KeyError, ValueError):
        return None


#: Speed classes of the exported network (``nst_fast.transformer``), with the words the web page shows.
SPEEDS = {
    "light": "light network: the fastest",
    "small": "small network: fast",
    "standard": "standard network",
    "large": "large network: slower",
}
#: What ``nst_fast.precision`` means for speed and quality.
PRECISIONS = {"int8": "8-bit weights: faster on CPUs", "fp16": "half precision: faster on GPUs"}
#: ``base_channels`` of the default network (``TransformerNet``, ``model=johnson``).
STANDARD_CHANNELS = 32


def speed_class(metadata: dict[str, str]) -> str | None:
    """``light`` (depthwise-separable blocks, ``model=light``), ``small``/``standard``/``large`` (fewer, as many or
    more channels than the default network), or ``None`` when the export does not record its architecture."""
    try:
        architecture = json.loads(metadata[META_TRANSFORMER])
        channels = int(architecture["base_channels"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        return None
    if architecture.get("separable"):
        return "light"
    if channels == STANDARD_CHANNELS:
        return "standard"
    return "small" if channels < STANDARD_CHANNELS else "large"


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{max(1, round(size / 1e3))} kB"


def summary(styles: list[str], blend: bool, identity: bool, speed: str | None, precision: str | None, size: int) -> str:
    """A model in plain words for people choosing one: its styles, whether they blend and have a strength, its
    speed class and its file size, e.g. ``3 styles (starry, wave, udnie) that blend, with a strength control ·
    light network: the fastest · 1.2 MB``."""
    shown = ", ".join(styles[:5]) + (f" and {len(styles) - 5} more" if len(styles) > 5 else "")
    what = f"1 style ({shown})" if len(styles) == 1 else f"{len(styles)} styles ({shown})"
    extras = [
        word
        for flag, word in ((blend and len(styles) > 1, "that blend"), (identity, "with a strength control"))
        if flag
    ]
    parts = [what + (" " + ", ".join(extras) if extras else ""), SPEEDS.get(speed or "", "speed not recorded")]
    if precision in PRECISIONS:
        parts.append(PRECISIONS[precision])
    return " · ".join(parts + [megabytes(size)])


@dataclass
class ServedModel:
    """One loaded model and its public description."""

    name: str
    path: Path
    model: StyleModel

    def describe(self) -> dict[str, Any]:
        """This model's entry in ``GET /v1/styles``."""
        metadata = getattr(self.model, "metadata", {})
        model = self.model
        thumbnails = style_thumbnails(metadata, len(model.styles))
        speed, size = speed_class(metadata), self.path.stat().st_size
        return {
            "name": self.name,
            "file": self.path.name,
            "description": model.description,
            "summary": summary(
                model.styles, model.takes_weights, model.identity, speed, metadata.get(META_PRECISION), size
            ),
            "speed": speed,
            "size_bytes": size,
            "styles": [
                {"name": style, "thumbnail": thumb} for style, thumb in zip(model.styles, thumbnails, strict=True)
            ],
            "identity": model.identity,
            "blend": model.takes_weights,
            "training_steps": training_steps(metadata),
        }


class ModelRegistry:
    """The models a server holds, in the order given (the first is the default)."""

    def __init__(self, models: dict[str, ServedModel]) -> None:
        if not models:
            raise StylizeError("no model to serve: pass at least one --model FILE.onnx")
        self.models = models

    @classmethod
    def load(cls, paths: list[str | os.PathLike], provider: str = "auto", threads: int = 0) -> ModelRegistry:
        """Load ONNX exports (files, or bundled models by name: ``nst_fast.stylize.models.resolve_model``); raises
        ``StylizeError`` for a missing, foreign or non-ONNX file and for two files
        with the same stem (the name clients choose them by)."""
        models: dict[str, ServedModel] = {}
        for path in (resolve_model(spec) for spec in paths):
            if path.suffix.lower() != ".onnx":
                raise StylizeError(
                    f"{path}: nst-serve serves ONNX exports only; export the checkpoint with "
                    "`python export.py ckpt_path=...` and pass the .onnx file"
                )
            name = path.stem
            if name in models:
                raise StylizeError(
                    f"two models are named {name!r} ({models[name].path} and {path}); "
                    "models are chosen by file stem: rename one"
                )
            # No CPU arena: with one, a server keeps its largest request's activations for good.
            models[name] = ServedModel(
                name, path, load_model(path, provider=provider, threads=threads, cpu_arena=False)
            )
        return cls(models)

    @property
    def default(self) -> ServedModel:
        return next(iter(self.models.values()))

    def get(self, name: str | None) -> ServedModel:
        """The model named ``name`` (``None``: the default); raises ``UnknownModelError`` naming those served."""
        if name is None:
            return self.default
        if name not in self.models:
            raise UnknownModelError(f"unknown model {name!r}; this server has: {', '.join(self.models)}")
        return self.models[name]

    def describe(self) -> dict[str, Any]:
        """The body of ``GET /v1/styles``."""
        return {"models": [model.describe() for model in self.models.values()], "default_model": self.default.name}
