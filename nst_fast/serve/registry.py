"""The served models: each ONNX export loaded once (one ONNX Runtime session shared by the inference threads),
named by its file stem, with what ``GET /v1/styles`` says about it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_fast.conventions import META_STEPS, META_STYLE_THUMBNAILS
from nst_fast.errors import StylizeError
from nst_fast.stylize.models import StyleModel, load_model


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


@dataclass
class ServedModel:
    """One loaded model and its public description."""

    name: str
    path: Path
    model: StyleModel

    def describe(self) -> dict[str, Any]:
        """This model's entry in ``GET /v1/styles``."""
        metadata = getattr(self.model, "metadata", {})
        thumbnails = style_thumbnails(metadata, len(self.model.styles))
        return {
            "name": self.name,
            "file": self.path.name,
            "description": self.model.description,
            "styles": [{"name": style, "thumbnail": thumb} for style, thumb in zip(self.model.styles, thumbnails)],
            "identity": self.model.identity,
            "blend": self.model.takes_weights,
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
        """Load ONNX exports; raises ``StylizeError`` for a missing, foreign or non-ONNX file and for two files
        with the same stem (the name clients choose them by)."""
        models: dict[str, ServedModel] = {}
        for path in map(Path, paths):
            if path.suffix.lower() != ".onnx":
                raise StylizeError(
                    f"{path}: nst-serve serves ONNX exports only; export the checkpoint with "
                    "`python export.py ckpt_path=...` and pass the .onnx file"
                )
            name = path.stem
            if name in models:
                raise StylizeError(f"two models are named {name!r} ({models[name].path} and {path}); "
                                   "models are chosen by file stem: rename one")
            # No CPU arena: with one, a server keeps its largest request's activations for good.
            models[name] = ServedModel(name, path, load_model(path, provider=provider, threads=threads,
                                                              cpu_arena=False))
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
