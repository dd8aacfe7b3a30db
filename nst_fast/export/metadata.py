"""What an exported file says about itself: ONNX ``metadata_props`` (the keys of ``nst_fast.conventions``) and the
thumbnails of the style paintings."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from nst_fast import __version__
from nst_fast.assets import bundled_copy
from nst_fast.checkpoint import CheckpointInfo
from nst_fast.conventions import (
    EXPORT_FORMAT,
    INPUT_DESCRIPTIONS,
    META_FORMAT,
    META_IDENTITY,
    META_INPUT,
    META_LAYOUT,
    META_PRECISION,
    META_STEPS,
    META_STYLE_IMAGE,
    META_STYLE_IMAGES,
    META_STYLE_NAME,
    META_STYLE_THUMBNAILS,
    META_STYLES,
    META_TRANSFORMER,
    META_VERSION,
    THUMBNAIL_SIZE,
    WEIGHTS_DESCRIPTIONS,
)
from nst_fast.errors import first_line
from nst_fast.images import ImageReadError, open_rgb
from nst_fast.interface import info_conditions

#: JPEG quality of the style thumbnails (a few KB each at 128 pixels).
THUMBNAIL_QUALITY = 80


def find_style_image(recorded: str) -> Path | None:
    """The painting a checkpoint names, on this machine: the recorded path if it is a file; else, for a painting
    bundled with the package (recorded as ``.../nst_fast/assets/styles/X.jpg`` where it was trained, or as a
    path relative to the assets, ``styles/X.jpg``), the bundled copy here; else ``None``."""
    if not recorded:
        return None
    path = Path(recorded).expanduser()
    return path if path.is_file() else bundled_copy(recorded)


def style_thumbnail(path: Path, size: int = THUMBNAIL_SIZE, quality: int = THUMBNAIL_QUALITY) -> str:
    """A base64 JPEG of the image at ``path``, scaled (up or down) so that its longer side is ``size`` pixels.
    Raises ``ImageReadError`` for an unreadable file."""
    image = open_rgb(path)
    scale = size / max(image.size)
    width, height = (max(1, round(side * scale)) for side in image.size)
    thumbnail = image.resize((width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="JPEG", quality=quality, optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def style_thumbnails(info: CheckpointInfo, log: Callable[[str], None] = print) -> list[str | None]:
    """Thumbnails of the checkpoint's style paintings in style order (``nst_fast.style_thumbnails``); ``None``,
    with a one-line note to ``log``, for a painting that is missing here (a checkpoint trained elsewhere) or
    unreadable: a missing thumbnail never fails an export."""
    thumbnails: list[str | None] = []
    for style in info.styles:
        name, recorded = str(style.get("name", "")), str(style.get("image", ""))
        path = find_style_image(recorded)
        thumbnail = None
        if path is None:
            log(f"  note: style {name!r}: painting {recorded!r} not found here; its thumbnail is null")
        else:
            try:
                thumbnail = style_thumbnail(path)
            except ImageReadError as error:
                log(f"  note: style {name!r}: {first_line(error)}; its thumbnail is null")
        thumbnails.append(thumbnail)
    return thumbnails


def onnx_metadata(
    info: CheckpointInfo, layout: str, precision: str, thumbnails: list[str | None] | None = None
) -> dict[str, str]:
    """The ``metadata_props`` of an exported ONNX file (all strings). ``thumbnails``: as ``style_thumbnails``
    returns them (``None``: made here, without notes)."""
    multi = info_conditions(info) > 1
    if thumbnails is None:
        thumbnails = style_thumbnails(info, log=lambda _: None)
    return {
        META_FORMAT: EXPORT_FORMAT,
        META_VERSION: __version__,
        META_STYLE_NAME: "+".join(info.style_names),
        META_STYLE_IMAGE: str(info.style.get("image", "")) if len(info.styles) == 1 else "",
        META_STYLES: json.dumps(info.style_names),
        META_STYLE_IMAGES: json.dumps([str(style.get("image", "")) for style in info.styles]),
        META_IDENTITY: "true" if info.identity else "false",
        META_STEPS: str(info.global_step),
        META_TRANSFORMER: json.dumps(info.transformer, sort_keys=True),
        META_LAYOUT: layout,
        META_PRECISION: precision,
        META_INPUT: INPUT_DESCRIPTIONS[layout] + (f"; {WEIGHTS_DESCRIPTIONS[layout]}" if multi else ""),
        META_STYLE_THUMBNAILS: json.dumps(thumbnails),
    }
