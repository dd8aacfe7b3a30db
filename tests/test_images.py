"""Image reading: 16-bit files are scaled by the bit depth stored in the file, not guessed from pixel values."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_factory import write_pgm_16bit, write_png_16bit, write_tiff_16bit

from nst_fast.images import open_rgb


def sixteen_bit(bright: bool, rgb: bool) -> np.ndarray:
    """A 60x80 uint16 image: dark (every value <= 199, i.e. black on an 8-bit scale) or bright (up to 65535)."""
    rng = np.random.default_rng(int(bright) * 2 + int(rgb))
    peak = 65535 if bright else 199
    return rng.integers(0, peak + 1, (60, 80, 3) if rgb else (60, 80), dtype=np.uint16)


WRITERS = {"png": write_png_16bit, "tiff": write_tiff_16bit, "pgm": write_pgm_16bit}


CASES = [(kind, rgb, bright) for kind in ("png", "tiff") for rgb in (False, True) for bright in (False, True)]
CASES += [("pgm", False, False), ("pgm", False, True)]  # PGM is grey only


@pytest.mark.parametrize(("kind", "rgb", "bright"), CASES,
                         ids=[f"{k}-{'rgb' if c else 'gray'}-{'bright' if b else 'dark'}" for k, c, b in CASES])
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
