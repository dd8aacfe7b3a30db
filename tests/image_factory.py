"""Build image files of every awkward kind for the data and inference tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def gradient(width: int, height: int) -> np.ndarray:
    """A uint8 RGB test image: red grows left to right, green top to bottom, blue constant."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    return np.stack([x, y, np.full_like(x, 64)], axis=-1).round().astype(np.uint8)


def write_good_images(folder: Path) -> dict[str, Path]:
    """Readable images in odd formats: grayscale, palette, CMYK, RGBA, 16-bit, EXIF-rotated, tiny."""
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.fromarray(gradient(80, 60))
    files = {
        "rgb": folder / "rgb.jpg",
        "gray": folder / "gray.png",
        "palette": folder / "palette.gif",
        "cmyk": folder / "cmyk.jpg",
        "rgba": folder / "rgba.png",
        "sixteen": folder / "sub" / "sixteen.png",
        "rotated": folder / "rotated.jpg",
        "tiny": folder / "tiny.png",
    }
    base.save(files["rgb"], quality=95)
    base.convert("L").save(files["gray"])
    base.convert("P", palette=Image.Palette.ADAPTIVE).save(files["palette"])
    base.convert("CMYK").save(files["cmyk"], quality=95)
    base.convert("RGBA").save(files["rgba"])
    files["sixteen"].parent.mkdir(exist_ok=True)
    Image.fromarray(gradient(80, 60)[..., 0].astype(np.uint16) * 257).save(files["sixteen"])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    base.save(files["rotated"], exif=exif, quality=95)
    base.resize((10, 7)).save(files["tiny"])
    return files


def write_bad_images(folder: Path) -> dict[str, Path]:
    """Files with image suffixes that cannot be used: truncated, empty, not an image, decompression bomb."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(gradient(200, 150)).save(buffer, format="JPEG", quality=95)
    files = {
        "truncated": folder / "truncated.jpg",
        "empty": folder / "empty.png",
        "text": folder / "text.jpg",
        "bomb": folder / "bomb.png",
    }
    files["truncated"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not a JPEG\n")
    # 1-bit PNG of 20000 x 20000 = 400M pixels, a few kB on disk.
    Image.new("1", (20000, 20000)).save(files["bomb"], optimize=True)
    return files
