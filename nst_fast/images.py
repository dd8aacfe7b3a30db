"""Image file reading shared by training and inference: Pillow and NumPy only (no torch), so the ONNX
deployment path stays small.

Handles EXIF orientation, palette, grayscale, CMYK, RGBA/LA and 16-bit images, and refuses
decompression bombs by a pixel limit.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Collection
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nst_fast.errors import NstFastError

#: Common still-image suffixes looked for in folders (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Images above this many pixels are refused (a 16k x 16k photo is 268M pixels); Pillow's own default is 89M.
DEFAULT_MAX_PIXELS = 16384 * 16384
#: Formats worth reading from untrusted uploads (Pillow's names; MPO is a multi-picture JPEG from cameras):
#: the common photo formats, none of the rarer readers (EPS runs Ghostscript, PSD, FITS, ICNS, ...).
UPLOAD_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "TIFF", "BMP", "GIF")


class ImageReadError(NstFastError, ValueError):
    """An image file that cannot be used: path and reason in the message."""


class ImageTooLargeError(ImageReadError):
    """An image whose header gives more pixels than the caller's limit (refused before decoding)."""


def list_images(root: str | os.PathLike) -> list[Path]:
    """All files under ``root`` (recursively, sorted) whose suffix is a common image format."""
    root = Path(root).expanduser()
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _integer_range(image: Image.Image) -> int:
    """The largest value an 'I'-mode image's samples can take, from the bit depth stored in the file (read
    before any transposition, which drops the TIFF tags): a TIFF's BitsPerSample and SampleFormat; Pillow
    opens the other 9 to 16-bit files it reads as 'I' (PNG, PGM/PPM) in the 16-bit range."""
    tags = getattr(image, "tag_v2", None)
    if tags is None or 258 not in tags:
        return 65535
    bits, sample_format = tags[258], tags.get(339, 1)
    bits = int(bits[0] if isinstance(bits, tuple) else bits)
    signed = (sample_format[0] if isinstance(sample_format, tuple) else sample_format) == 2
    return 2 ** (bits - 1) - 1 if signed else 2**bits - 1


def _to_8bit_or_float(image: Image.Image, integer_range: int = 65535) -> Image.Image:
    """16-bit and 32-bit integer/float modes -> 8-bit 'L' keeping the full range; 'I' samples are scaled by
    ``integer_range`` (the file's, see ``_integer_range``), never guessed from the pixel values."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0
        return Image.fromarray((array * 255.0 + 0.5).astype(np.uint8))
    if image.mode == "I":
        array = np.asarray(image, dtype=np.int64).astype(np.float64) / integer_range
        return Image.fromarray((np.clip(array, 0, 1) * 255.0 + 0.5).astype(np.uint8))
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        return Image.fromarray((np.clip(array, 0, 1) * 255.0 + 0.5).astype(np.uint8))
    return image


def _open_unguarded(handle: BinaryIO, name: str, formats: Collection[str] | None = None) -> Image.Image:
    """``Image.open`` of an open binary file without Pillow's process-wide decompression-bomb check
    (``Image.MAX_IMAGE_PIXELS``), so that the caller applies its own pixel limit per call from the header's size,
    before decoding, and concurrent calls (a server's threads) with different limits do not race on Pillow's
    global. Tries the registered formats in Pillow's order, as ``Image.open`` does, or only those named in
    ``formats`` (Pillow's names, e.g. ``PNG``); the image closes ``handle``. The WebP and TIFF readers still apply
    Pillow's own guard while decoding (an error above ``2 * Image.MAX_IMAGE_PIXELS``, 179M pixels by default).
    Raises ``UnidentifiedImageError`` (an ``OSError``) when no format reads the file; ``name`` is used in messages
    only."""
    Image.init()
    try:
        prefix = handle.read(16)
        for format_id in Image.ID:
            if formats is not None and format_id not in formats:
                continue
            factory, accept = Image.OPEN[format_id]
            try:  # a format's probe may unpack header fields from a prefix shorter than they are (struct.error)
                accepted = accept(prefix) if accept is not None else True
                if isinstance(accepted, str) or not accepted:  # a string is Pillow's reason for refusing
                    continue
                handle.seek(0)
                image = factory(handle, name)
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
            image._exclusive_fp = True  # closed with the image
            return image
    except BaseException:
        handle.close()
        raise
    handle.close()
    accepted_formats = f" as one of {', '.join(formats)}" if formats is not None else ""
    raise UnidentifiedImageError(f"cannot identify image file {name!r}{accepted_formats}")


def _read_image(
    open_handle: Callable[[], BinaryIO], name: str, max_pixels: int, formats: Collection[str] | None = None
) -> tuple[Image.Image, Image.Image | None]:
    """What ``open_image`` and ``decode_image`` share: open, check the pixel limit from the header, decode,
    apply EXIF orientation, convert to 8-bit RGB and split off the alpha channel."""
    try:
        with _open_unguarded(open_handle(), name, formats) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"{name}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels} "
                    "(decompression bomb guard)"
                )
            image.load()
            integer_range = _integer_range(image)
            image = ImageOps.exif_transpose(image) or image
    except ImageReadError:
        raise
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        TypeError,
        struct.error,
        Image.DecompressionBombError,
    ) as error:  # what Pillow's readers raise for a malformed file
        raise ImageReadError(f"{name}: not a readable image ({type(error).__name__}: {error})") from error
    image = _to_8bit_or_float(image, integer_range)
    alpha: Image.Image | None = None
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = image.getchannel("A")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image, alpha


def open_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, Image.Image | None]:
    """Read an image file fully; returns ``(rgb, alpha)``: an 8-bit RGB image with EXIF orientation applied,
    and its alpha channel as an 'L' image, or ``None`` when it has none.

    Raises ``ImageReadError`` for a missing, empty, truncated, non-image or oversized file
    (``ImageTooLargeError`` above ``max_pixels``).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read ({error.strerror or error})") from error
    return _read_image(lambda: open(path, "rb"), str(path), max_pixels)


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "upload", formats: Collection[str] | None = None
) -> tuple[Image.Image, Image.Image | None]:
    """``open_image`` for an image file's bytes held in memory (an HTTP upload): the same checks and conversions;
    ``name`` stands for the path in error messages. ``formats`` (Pillow's names, e.g. ``SERVED_FORMATS``) limits
    the readers tried: other files are refused as unreadable; ``None`` tries every format Pillow reads."""
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    return _read_image(lambda: io.BytesIO(data), name, max_pixels, formats)


def open_rgb(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """``open_image`` without the alpha channel: an 8-bit RGB image."""
    return open_image(path, max_pixels)[0]


# --- Writing and colour handling for inference (nst-stylize) -------------------------------------------

#: ITU-R BT.601 luma weights (the Y of JPEG's full-range YCbCr), used by ``preserve_color``.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: Suffixes Pillow writes as RGB(A); others (``.gif``, ``.pgm``) are written as ``.png`` in folder mode.
WRITABLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
#: Suffixes whose formats store an alpha channel.
ALPHA_SUFFIXES = (".png", ".tif", ".tiff", ".webp")


def fit_within(image: Image.Image, max_size: int | None, resample: int = Image.Resampling.LANCZOS) -> Image.Image:
    """``image`` downscaled (aspect kept) so that its longer side is at most ``max_size``; unchanged if smaller
    or if ``max_size`` is ``None``."""
    if not max_size or max(image.size) <= max_size:
        return image
    scale = max_size / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, resample)


def preserve_color(content: np.ndarray, stylized: np.ndarray) -> np.ndarray:
    """Colour preservation by luminance-only transfer (Gatys et al. 2016, "Preserving colour in neural
    artistic style transfer"): the luminance Y of ``stylized`` with the chrominance (Cb, Cr) of ``content``.

    Both are float RGB arrays ``[..., H, W, 3]`` in [0, 1]; BT.601 full-range YCbCr, as in JPEG. Since Cb and Cr
    are linear in ``RGB - Y``, this is ``content + (Y_stylized - Y_content)`` per channel, clipped to [0, 1].
    """
    content = np.asarray(content, dtype=np.float32)
    stylized = np.asarray(stylized, dtype=np.float32)
    if content.shape != stylized.shape or content.shape[-1] != 3:
        raise ValueError(f"preserve_color needs two RGB arrays of one shape, got {content.shape} and {stylized.shape}")
    delta = stylized @ LUMA_WEIGHTS - content @ LUMA_WEIGHTS
    return np.clip(content + delta[..., None], 0.0, 1.0)


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 [0, 255], rounded to nearest."""
    return (np.clip(np.asarray(array, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _output_image(rgb: np.ndarray, alpha: Image.Image | None) -> Image.Image:
    """A Pillow image of ``rgb`` (uint8 ``[H, W, 3]``, or float in [0, 1]) with ``alpha`` added (resized to fit)
    when given."""
    if rgb.dtype != np.uint8:
        rgb = to_uint8(rgb)
    image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    if alpha is not None:
        if alpha.size != image.size:
            alpha = alpha.resize(image.size, Image.Resampling.LANCZOS)
        image.putalpha(alpha)
    return image


def _save_options(image_format: str, quality: int) -> dict[str, int]:
    return {"quality": quality} if image_format in ("JPEG", "WEBP") else {}


def save_image(
    path: str | os.PathLike, rgb: np.ndarray, alpha: Image.Image | None = None, *, quality: int = 95
) -> Path:
    """Write an RGB image (uint8 ``[H, W, 3]``, or float in [0, 1]) to ``path``, adding ``alpha`` (an 'L' image
    of the same size) where the format stores one (PNG, TIFF, WebP); parent folders are created.

    The file appears complete or not at all: it is written beside the target under a temporary name and renamed.
    Raises ``OSError`` when it cannot be written and ``ValueError`` for a suffix Pillow does not write.
    """
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"{path}: Pillow cannot write {path.suffix or 'files without a suffix'!r}")
    image = _output_image(rgb, alpha if path.suffix.lower() in ALPHA_SUFFIXES else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        image.save(partial, format=image_format, **_save_options(image_format, quality))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


#: Formats ``encode_image`` writes (Pillow's names), and whether each stores an alpha channel.
ENCODABLE_FORMATS = {"PNG": True, "JPEG": False, "WEBP": True}
#: The longest side in pixels each format can store: libjpeg's JPEG_MAX_DIMENSION, WebP's 14-bit sizes.
MAX_ENCODABLE_SIDE = {"PNG": 2**31 - 1, "JPEG": 65500, "WEBP": 16383}


def encode_image(rgb: np.ndarray, image_format: str, alpha: Image.Image | None = None, *, quality: int = 95) -> bytes:
    """``save_image`` into memory: the file's bytes in ``image_format`` (``PNG``, ``JPEG`` or ``WEBP``), with
    ``alpha`` where the format stores one. Raises ``ValueError`` for another format or an image with a side over
    the format's ``MAX_ENCODABLE_SIDE``."""
    image_format = image_format.upper()
    if image_format not in ENCODABLE_FORMATS:
        raise ValueError(f"cannot encode {image_format!r}; choose one of {', '.join(ENCODABLE_FORMATS)}")
    height, width = rgb.shape[:2]
    if max(width, height) > MAX_ENCODABLE_SIDE[image_format]:
        raise ValueError(
            f"a {width}x{height} image is too large for {image_format}, which stores at most "
            f"{MAX_ENCODABLE_SIDE[image_format]} pixels a side"
        )
    image = _output_image(rgb, alpha if ENCODABLE_FORMATS[image_format] else None)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **_save_options(image_format, quality))
    return buffer.getvalue()
