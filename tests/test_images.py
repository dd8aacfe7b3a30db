"""Image reading: 16-bit files are scaled by the bit depth stored in the file, not guessed from pixel values."""

import io
from pathlib import Path

import numpy as np
import pytest
from image_factory import write_pgm_16bit, write_png_16bit, write_tiff_16bit
from PIL import Image

from nst_fast.images import open_rgb


def sixteen_bit(bright: bool, rgb: bool) -> np.ndarray:
    """A 60x80 uint16 image: dark (every value <= 199, i.e. black on an 8-bit scale) or bright (up to 65535)."""
    rng = np.random.default_rng(int(bright) * 2 + int(rgb))
    peak = 65535 if bright else 199
    return rng.integers(0, peak + 1, (60, 80, 3) if rgb else (60, 80), dtype=np.uint16)


WRITERS = {"png": write_png_16bit, "tiff": write_tiff_16bit, "pgm": write_pgm_16bit}


CASES = [(kind, rgb, bright) for kind in ("png", "tiff") for rgb in (False, True) for bright in (False, True)]
CASES += [("pgm", False, False), ("pgm", False, True)]  # PGM is grey only


@pytest.mark.parametrize(
    ("kind", "rgb", "bright"),
    CASES,
    ids=[f"{k}-{'rgb' if c else 'gray'}-{'bright' if b else 'dark'}" for k, c, b in CASES],
)
def test_16_bit_files_are_scaled_by_their_bit_depth(tmp_path: Path, kind: str, rgb: bool, bright: bool) -> None:
    values = sixteen_bit(bright, rgb)
    path = WRITERS[kind](tmp_path / f"image.{kind}", values)
    got = np.asarray(open_rgb(path)).astype(int)
    want = values.astype(np.float64) / 65535.0 * 255.0
    want = np.repeat(want[..., None], 3, -1) if not rgb else want
    assert got.shape == (60, 80, 3)
    assert np.abs(got - want).max() <= 1, f"{Image.open(path).mode}: max level {got.max()}, expected {want.max():.1f}"


def test_signed_16_bit_tiff_uses_the_positive_range(tmp_path: Path) -> None:
    values = np.array([[0, 100, 32767], [-5, 16384, 200]], dtype=np.int16).repeat(4, 0).repeat(4, 1)
    path = write_tiff_16bit(tmp_path / "signed.tif", values, signed=True)
    assert Image.open(path).mode == "I", "Pillow reads signed 16-bit samples as 32-bit integers"
    got = np.asarray(open_rgb(path))[..., 0].astype(int)
    want = np.clip(values.astype(np.float64), 0, None) / 32767.0 * 255.0
    assert np.abs(got - want).max() <= 1


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".gif", ".bmp"])  # WebP and TIFF: see _open_unguarded
def test_pixel_limit_is_per_call_and_leaves_pillows_global_alone(tmp_path: Path, monkeypatch, suffix: str) -> None:
    from nst_fast.images import ImageReadError, open_image

    path = tmp_path / f"forty_by_thirty{suffix}"
    Image.new("RGB", (40, 30), (200, 100, 50)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own guard would refuse 1200 pixels
    rgb, _ = open_image(path, max_pixels=1200)
    assert rgb.size == (40, 30)
    with pytest.raises(ImageReadError, match="1200 pixels is over the limit of 1199"):
        open_image(path, max_pixels=1199)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_concurrent_reads_with_different_limits(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from nst_fast.images import ImageReadError, open_image

    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 48)).save(path)

    def read(limit: int) -> str:
        try:
            return "read" if open_image(path, max_pixels=limit)[0].size == (64, 48) else "wrong size"
        except ImageReadError:
            return "refused"

    limits = [64 * 48, 64 * 48 - 1] * 100
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(read, limits))
    assert results == ["read", "refused"] * 100


def test_not_an_image_is_refused_with_the_path(tmp_path: Path) -> None:
    from nst_fast.images import ImageReadError, open_image

    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    with pytest.raises(ImageReadError, match="notes.png: not a readable image"):
        open_image(path)


def test_decoding_bytes_is_reading_the_file(tmp_path: Path) -> None:
    """``decode_image`` (uploads) gives what ``open_image`` gives for the same file: EXIF orientation, alpha,
    the per-call pixel limit (``ImageTooLargeError``), the errors."""
    from nst_fast.images import ImageReadError, ImageTooLargeError, decode_image, open_image

    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, (24, 40, 4), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: 24 wide, 40 high
    path = tmp_path / "phone.png"
    Image.fromarray(stored, "RGBA").save(path, exif=exif)
    (rgb, alpha), (file_rgb, file_alpha) = decode_image(path.read_bytes(), name="phone.png"), open_image(path)
    assert rgb.size == (24, 40) and np.array_equal(np.asarray(rgb), np.asarray(file_rgb))
    assert np.array_equal(np.asarray(alpha), np.asarray(file_alpha))
    assert np.array_equal(np.asarray(rgb), np.rot90(stored[..., :3], -1))  # orientation 6: 90 degrees clockwise
    with pytest.raises(ImageTooLargeError, match="upload: 40x24 = 960 pixels is over the limit of 959"):
        decode_image(path.read_bytes(), max_pixels=959)
    with pytest.raises(ImageReadError, match="upload: empty file"):
        decode_image(b"")
    with pytest.raises(ImageReadError, match="photo.jpg: not a readable image"):
        decode_image(path.read_bytes()[:200], name="photo.jpg")


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_encoding_to_bytes_matches_saving_to_a_file(tmp_path: Path, image_format: str) -> None:
    from nst_fast.images import encode_image, save_image

    rgb = np.random.default_rng(1).random((20, 30, 3), dtype=np.float32)
    alpha = Image.fromarray(np.tile(np.arange(30, dtype=np.uint8) * 8, (20, 1)))
    suffix = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}[image_format]
    saved = save_image(tmp_path / f"out{suffix}", rgb, alpha, quality=90)
    data = encode_image(rgb, image_format, alpha, quality=90)
    assert data == saved.read_bytes()
    assert Image.open(saved).mode == ("RGB" if image_format == "JPEG" else "RGBA")
    with pytest.raises(ValueError, match="cannot encode 'GIF'"):
        encode_image(rgb, "gif")
    if image_format != "PNG":
        largest = {"JPEG": 65500, "WEBP": 16383}[image_format]  # the formats' own limits
        with pytest.raises(
            ValueError,
            match=f"a {largest + 1}x2 image is too large for {image_format}, which "
            f"stores at most {largest} pixels a side",
        ):
            encode_image(np.zeros((2, largest + 1, 3), np.uint8), image_format)
        assert len(encode_image(np.zeros((2, largest, 3), np.uint8), image_format)) > 0


SHORT_FILES = [b"a", b"ab", b"abc", b"BM", b"BM\x00", b"\x89PN", b"GIF8", b"\xff\xd8\xff", b"II*\x00"]


@pytest.mark.parametrize("data", SHORT_FILES)
def test_a_few_bytes_are_not_a_readable_image(tmp_path: Path, data: bytes) -> None:
    """Format probes that unpack fields from a too short header (Pillow's BMP one) must not escape as
    ``struct.error``: every reader refuses the bytes and the caller gets an ``ImageReadError``."""
    from nst_fast.images import ImageReadError, decode_image, open_image

    with pytest.raises(ImageReadError, match="upload: not a readable image"):
        decode_image(data)
    path = tmp_path / "short.bmp"
    path.write_bytes(data)
    with pytest.raises(ImageReadError, match="short.bmp: not a readable image"):
        open_image(path)


def test_formats_limit_what_is_decoded(tmp_path: Path) -> None:
    """``formats`` (the server's allowlist) refuses files of other formats, naming those accepted; without it
    every format Pillow reads is read, as ``nst-stylize`` does."""
    from nst_fast.images import ImageReadError, decode_image

    accepted = ("PNG", "JPEG")
    rgb = np.random.default_rng(2).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    for image_format in ("PPM", "EPS", "TGA"):
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format=image_format)
        with pytest.raises(ImageReadError, match=f"{image_format.lower()}: not a readable image .*PNG, JPEG"):
            decode_image(buffer.getvalue(), name=image_format.lower(), formats=accepted)
        if image_format == "PPM":
            assert np.array_equal(np.asarray(decode_image(buffer.getvalue())[0]), rgb)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    assert np.array_equal(np.asarray(decode_image(buffer.getvalue(), formats=accepted)[0]), rgb)
