"""Build image files of every awkward kind, and small video clips, for the data and inference tests."""

from __future__ import annotations

import io
import struct
import zlib
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


def write_png_16bit(path: Path, array: np.ndarray) -> Path:
    """A 16-bit PNG (grey ``[H, W]`` or RGB ``[H, W, 3]`` uint16), written byte by byte: Pillow cannot write
    16-bit RGB, and this way the file's bit depth is known without trusting the reader under test."""
    height, width = array.shape[:2]
    colour_type = 0 if array.ndim == 2 else 2
    raw = b"".join(b"\x00" + array[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def write_tiff_16bit(path: Path, array: np.ndarray, signed: bool = False) -> Path:
    """An uncompressed 16-bit TIFF (grey or RGB; unsigned, or signed integers when ``signed``), written byte by byte."""
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    pixels = array.astype("<i2" if signed else "<u2").tobytes()
    tags = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, channels, 16),
        (259, 3, 1, 1),
        (262, 3, 1, 1 if channels == 1 else 2),
        (273, 4, 1, 0),
        (277, 3, 1, channels),
        (278, 4, 1, height),
        (279, 4, 1, len(pixels)),
        (284, 3, 1, 1),
        (339, 3, channels, 2 if signed else 1),
    ]
    ifd_end = 8 + 2 + 12 * len(tags) + 4
    extra = b""  # values of more than two shorts live after the IFD
    entries = []
    for tag, kind, count, value in tags:
        if kind == 3 and count > 2:
            entries.append(struct.pack("<HHII", tag, kind, count, ifd_end + len(extra)))
            extra += struct.pack(f"<{count}H", *[value] * count)
        elif kind == 3:
            entries.append(
                struct.pack("<HHI", tag, kind, count) + struct.pack("<2H", *([value] * count + [0] * (2 - count)))
            )
        else:
            entries.append(struct.pack("<HHII", tag, kind, count, value))
    data_offset = ifd_end + len(extra)
    entries[5] = struct.pack("<HHII", 273, 4, 1, data_offset)
    ifd = struct.pack("<H", len(tags)) + b"".join(entries) + struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + extra + pixels)
    return path


def write_pgm_16bit(path: Path, array: np.ndarray) -> Path:
    """A binary 16-bit PGM (maxval 65535) of a grey uint16 ``[H, W]`` array."""
    height, width = array.shape
    path.write_bytes(f"P5 {width} {height} 65535\n".encode() + array.astype(">u2").tobytes())
    return path


def pattern(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, mid-range colour image (no clipping when colours are re-combined)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [0.5 + 0.3 * np.sin(xx / (5 + 3 * c) + yy / (7 + c) + rng.uniform(0, 6)) for c in range(3)]
    return (np.stack(channels, -1) * 255).round().astype(np.uint8)


def write_photos(folder: Path, count: int, width: int = 96, height: int = 64) -> list[Path]:
    """``count`` distinct JPEG photos (``pattern`` with seeds 0, 1, ...), half of them in a subfolder."""
    paths = []
    for index in range(count):
        path = folder / ("odd" if index % 2 else "") / f"photo{index:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pattern(height, width, seed=index)).save(path, quality=95)
        paths.append(path)
    return paths


def write_video(path: Path, rgb_frames: list[np.ndarray], fps: int = 8, audio: bool = True) -> None:
    """An H.264 (yuv444p for odd sizes) + AAC file of these uint8 RGB ``[H, W, 3]`` frames, with a 440 Hz tone
    as long as the frames when ``audio``."""
    import av

    height, width = rgb_frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        if audio:
            sound = container.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for array in rgb_frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        if audio:
            seconds = np.arange(16000 * len(rgb_frames) // fps) / 16000
            samples = (0.3 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32)
            for start in range(0, samples.size, 1024):
                chunk = av.AudioFrame.from_ndarray(
                    samples[None, start : start + 1024].copy(), format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = 16000, start
                container.mux(sound.encode(chunk))
        container.mux(video.encode(None))
        if audio:
            container.mux(sound.encode(None))


def make_video(path: Path, frames: int = 8, width: int = 64, height: int = 48, fps: int = 8) -> list[np.ndarray]:
    """An H.264 + AAC clip of ``pattern`` panning 6 px per frame; returns the frames as encoded (RGB)."""
    rgb_frames = [np.roll(pattern(height, width, 20), 6 * i, axis=1) for i in range(frames)]
    write_video(path, rgb_frames, fps)
    return rgb_frames
