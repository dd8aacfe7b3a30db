"""``NAME.int8.onnx``: the float32 ONNX model statically quantised for CPUs (``nst_fast.export.quantize``), calibrated
on photos and verified against the float32 model by PSNR."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from nst_fast.assets import content_folder
from nst_fast.checkpoint import CheckpointInfo
from nst_fast.conventions import INPUT_NAME, LAYOUT_NCHW_FLOAT, META_PRECISION, WEIGHTS_NAME
from nst_fast.export.calibration import (
    CALIBRATION_METHODS,
    DEFAULT_METHOD,
    calibration_files,
    calibration_photo,
    photo_array,
)
from nst_fast.export.quantize import quantize_int8
from nst_fast.export.results import ExportedFile, ExportError, ExportUsageError
from nst_fast.export.verify import check_onnx_file, ort_session, verification_weights
from nst_fast.images import open_rgb

#: Verification of the int8 model: PSNR (dB) to the float32 model below which the export fails.
INT8_MIN_PSNR = 30.0
#: Verification photos: the first calibration photo resized to this odd size (height, width), and the last one
#: with its shorter side at this many pixels (aspect kept).
INT8_VERIFY_ODD_SIZE = (181, 243)
INT8_VERIFY_SHORTER_SIDE = 720


@dataclass
class Int8Settings:
    """How ``NAME.int8.onnx`` is calibrated and checked (``export.int8.*`` in the export config).

    ``calibration``: a folder of photos (default: the bundled content photos, ``nst_fast/assets/content``);
    ``photos``: at most this many of them, spread over the folder; ``size``: the side of the centre square (pixels)
    of each photo calibrated on; ``method``: ``percentile`` or ``minmax`` (``nst_fast.export.quantize``);
    ``min_psnr``: the verification threshold in dB."""

    calibration: str | None = None
    photos: int = 16
    size: int = 512
    method: str = DEFAULT_METHOD
    min_psnr: float = INT8_MIN_PSNR


def _odd_size_photo(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The photo at ``path`` resized to exactly ``size`` (height, width), float32 ``[1, 3, H, W]`` in [0, 1]."""
    image = open_rgb(path).resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return (np.asarray(image, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def int8_calibration_files(settings: Int8Settings) -> list[Path]:
    """The photos ``settings`` calibrate on; ``ExportUsageError`` (before anything is exported) for unusable
    settings or a folder without photos."""
    if settings.size < 16 or settings.photos < 1:
        raise ExportUsageError(
            f"export.int8.size must be >= 16 and export.int8.photos >= 1, got {settings.size} and {settings.photos}"
        )
    if settings.method not in CALIBRATION_METHODS:
        raise ExportUsageError(
            f"export.int8.method={settings.method!r} is unknown; choose one of {', '.join(CALIBRATION_METHODS)}"
        )
    folder = Path(settings.calibration).expanduser() if settings.calibration else content_folder()
    files = calibration_files(folder, settings.photos) if folder.is_dir() else []
    if not files:
        raise ExportUsageError(
            f"no photos for int8 calibration in {folder}: set export.int8.calibration to a folder of photos "
            "(jpg, png, ...) like those the model will stylise"
        )
    return files


def export_int8(
    float_path: Path,
    path: Path,
    info: CheckpointInfo,
    settings: Int8Settings,
    files: list[Path],
    opset: int,
    log: Callable[[str], None],
) -> ExportedFile:
    """Quantise the verified float32 model ``float_path`` into ``path`` (``nst_fast.quantize.quantize_int8``),
    calibrated on ``files`` (``int8_calibration_files``), then verify it against the float32 model on photos:
    ``ExportError`` when the PSNR of any photo and style case is below ``settings.min_psnr``. The returned
    file's ``tolerance`` is that PSNR threshold (dB)."""
    photos = [calibration_photo(file, settings.size) for file in files]
    cases = verification_weights(info)
    summary = quantize_int8(float_path, path, photos, cases, method=settings.method, metadata={META_PRECISION: "int8"})
    check_onnx_file(path, opset, LAYOUT_NCHW_FLOAT)

    reference, quantised = ort_session(float_path), ort_session(path)
    checks = [
        (files[0], _odd_size_photo(files[0], INT8_VERIFY_ODD_SIZE)),
        (files[-1], photo_array(files[-1], INT8_VERIFY_SHORTER_SIDE)),
    ]
    worst_psnr, worst_diff, shapes = float("inf"), 0.0, []
    for file, photo in checks:
        shapes.append(photo.shape)
        for weights in cases:
            feeds = {INPUT_NAME: photo} if weights is None else {INPUT_NAME: photo, WEIGHTS_NAME: weights[None]}
            want = reference.run(None, feeds)[0].astype(np.float64)
            got = quantised.run(None, feeds)[0].astype(np.float64)
            if got.shape != want.shape or not np.isfinite(got).all():
                raise ExportError(
                    f"{path.name}: output {got.shape} (finite: {np.isfinite(got).all()}) for input {photo.shape}"
                )
            mse = float(np.mean((got - want) ** 2))
            psnr = float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)
            worst_diff = max(worst_diff, float(np.abs(got - want).max()))
            if psnr < settings.min_psnr:
                dose = "" if weights is None else f", style weights {np.round(weights, 3).tolist()}"
                raise ExportError(
                    f"{path.name}: int8 verification failed: PSNR to the float32 model {psnr:.1f} dB < "
                    f"export.int8.min_psnr {settings.min_psnr:g} dB on {file.name} at "
                    f"{photo.shape[2]}x{photo.shape[3]}{dose}; calibrate on photos like yours "
                    f"(export.int8.calibration=FOLDER, export.int8.photos=N), accept a lower PSNR "
                    f"(export.int8.min_psnr; model=light measures about 27 dB) or deploy {float_path.name}"
                )
            worst_psnr = min(worst_psnr, psnr)
    shown = ", ".join(f"{s[2]}x{s[3]}" for s in shapes)
    log(
        f"  {path.name}: OK, PSNR to {float_path.name} >= {worst_psnr:.1f} dB (threshold {settings.min_psnr:g}), "
        f"max |diff| {worst_diff:.3f} on {len(checks)} photos at {shown}, {len(cases)} style case(s); "
        f"{summary['quantised_convs']} int8 convs, calibrated on {len(files)} photos at {settings.size} px "
        f"({settings.method})"
    )
    return ExportedFile(path, "onnx_int8", worst_diff, settings.min_psnr, tuple(tuple(s) for s in shapes))
