"""Image file reading shared by training and inference: Pillow and NumPy only (no torch), so the ONNX
deployment path stays small.

Handles EXIF orientation, palette, grayscale, CMYK, RGBA/LA and 16-bit images, and refuses
decompression bombs by a pixel limit.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

#: Common still-image suffixes looked for in folders (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Images above this many pixels are refused (a 16k x 16k photo is 268M pixels); Pillow's own default is 89M.
DEFAULT_MAX_PIXELS = 16384 * 16384


class ImageReadError(ValueError):
    """An image file that cannot be used: path and reason in the message."""


def list_images(root: str | os.PathLike) -> list[Path]:
    """All files under ``root`` (recursively, sorted) whose suffix is a common image format."""
    root = Path(root).expanduser()
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _to_8bit_or_float(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer/float modes -> 8-bit 'L' keeping the full range."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0
        return Image.fromarray((array * 255.0 + 0.5).astype(np.uint8), mode="L")
    if image.mode == "I":
        array = np.asarray(image, dtype=np.int64).astype(np.float32)
        scale = 65535.0 if array.max(initial=0) > 255 else 255.0
        return Image.fromarray((np.clip(array / scale, 0, 1) * 255.0 + 0.5).astype(np.uint8), mode="L")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        return Image.fromarray((np.clip(array, 0, 1) * 255.0 + 0.5).astype(np.uint8), mode="L")
    return image


def open_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, Image.Image | None]:
    """Read an image file fully; returns ``(rgb, alpha)``: an 8-bit RGB image with EXIF orientation applied,
    and its alpha channel as an 'L' image, or ``None`` when it has none.

    Raises ``ImageReadError`` for a missing, empty, truncated, non-image or oversized file.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read ({error.strerror or error})") from error
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageReadError(
                        f"{path}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels} "
                        "(decompression bomb guard)"
                    )
                image.load()
                image = ImageOps.exif_transpose(image) or image
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(f"{path}: not a readable image ({type(error).__name__}: {error})") from error
    image = _to_8bit_or_float(image)
    alpha: Image.Image | None = None
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = image.getchannel("A")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image, alpha


def open_rgb(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """``open_image`` without the alpha channel: an 8-bit RGB image."""
    return open_image(path, max_pixels)[0]
