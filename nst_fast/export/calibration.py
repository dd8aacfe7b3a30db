"""Calibration for the int8 model: which photos, how they are cropped and fed (with every style case of a
multi-style model), and the activation ranges (the streamed percentile calibrator). Torch-free."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from nst_fast.conventions import INPUT_NAME, WEIGHTS_NAME
from nst_fast.images import list_images, open_rgb

#: Activation-range calibration: ``minmax`` (ONNX Runtime's MinMax: the extremes seen) or ``percentile`` (the
#: ``PERCENTILE`` of |values| per tensor, clamped to the extremes: what ONNX Runtime's Percentile calibrator
#: computes, but streamed, where ONNX Runtime keeps every activation of every photo in memory).
CALIBRATION_METHODS = ("percentile", "minmax")
#: The method used unless another is asked for (``export.int8.method``).
DEFAULT_METHOD = "percentile"
#: Measured on the held-out photos (bench/README.md): 99.99 gave 2.8 dB more PSNR than 99.999 and kept the
#: held-out style cost within 5% of the float model's (99.999: up to 9% lower); 99.9 clipped too much.
PERCENTILE = 99.99


def photo_array(path: str | Path, shorter_side: int) -> np.ndarray:
    """The photo at ``path`` as float32 ``[1, 3, H, W]`` in [0, 1], scaled so its shorter side is ``shorter_side``
    (aspect kept)."""
    image = open_rgb(path)
    width, height = image.size
    scale = shorter_side / min(width, height)
    size = (max(shorter_side, round(width * scale)), max(shorter_side, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return (np.asarray(image, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def calibration_photo(path: str | Path, size: int) -> np.ndarray:
    """The centre ``size`` x ``size`` square of the photo at ``path`` scaled to shorter side ``size``, float32
    ``[1, 3, size, size]``: one fixed shape, which ONNX Runtime's histogram calibrators need."""
    photo = photo_array(path, size)
    top, left = (photo.shape[2] - size) // 2, (photo.shape[3] - size) // 2
    return np.ascontiguousarray(photo[:, :, top : top + size, left : left + size])


def calibration_files(folder: str | Path, limit: int) -> list[Path]:
    """Up to ``limit`` photos under ``folder`` (sorted, spread evenly over the list when there are more)."""
    files = list_images(folder)
    if len(files) > limit:
        step = len(files) / limit
        files = [files[math.floor(i * step)] for i in range(limit)]
    return files


def calibration_feeds(
    photos: Sequence[np.ndarray], weight_cases: Sequence[np.ndarray | None]
) -> list[dict[str, np.ndarray]]:
    """ONNX Runtime feeds: each photo (``[1, 3, H, W]`` float32) once per style-weight vector of ``weight_cases``
    (``[S]`` each; ``[None]`` for one-input models), so that the activation ranges cover every style."""
    feeds = []
    for photo in photos:
        for weights in weight_cases:
            feed = {INPUT_NAME: photo}
            if weights is not None:
                feed[WEIGHTS_NAME] = np.asarray(weights, dtype=np.float32)[None]
            feeds.append(feed)
    return feeds


def _calibration_reader(feeds: Sequence[dict[str, np.ndarray]]):
    """``feeds`` as ONNX Runtime's ``CalibrationDataReader`` (imported lazily)."""
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    return FeedReader()


def _values_beyond(count: int, percentile: float) -> int:
    """How many of ``count`` values lie beyond the ``percentile`` (at least 1; rounded against float noise)."""
    return max(1, math.ceil(round(count * (100.0 - percentile) / 100.0, 6)))


def percentile_ranges(
    model, feeds: Sequence[dict[str, np.ndarray]], names: Sequence[str], percentile: float = PERCENTILE
) -> dict[str, tuple[float, float]]:
    """``(rmin, rmax)`` of each tensor in ``names`` over ``feeds``: ``t`` = the ``percentile`` of |values| (exact,
    from the largest values kept per tensor), the range ``(max(-t, min), min(t, max))``. Clipping the rare
    extremes gives the 8 bits to the bulk of the values (bench/README.md: +1.6 dB mean PSNR over MinMax)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    largest: dict[str, np.ndarray] = {}
    extremes: dict[str, tuple[float, float]] = {}
    counts = dict.fromkeys(names, 0)
    for feed in feeds:
        for name, values in zip(names, session.run(list(names), feed), strict=False):
            flat = np.abs(values.ravel())
            counts[name] += flat.size
            keep = _values_beyond(flat.size * len(feeds), percentile)
            top = flat if flat.size <= keep else np.partition(flat, flat.size - keep)[-keep:]
            merged = top if name not in largest else np.concatenate([largest[name], top])
            largest[name] = merged if merged.size <= keep else np.partition(merged, merged.size - keep)[-keep:]
            low, high = extremes.get(name, (np.inf, -np.inf))
            extremes[name] = (min(low, float(values.min())), max(high, float(values.max())))
    ranges = {}
    for name in names:
        beyond = _values_beyond(counts[name], percentile)
        kept = np.sort(largest[name])
        threshold = float(kept[max(0, kept.size - beyond)])
        low, high = extremes[name]
        ranges[name] = (max(-threshold, low), min(threshold, high))
    return ranges
