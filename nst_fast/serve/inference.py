"""One upload through a model, on an inference thread: decode, downscale, stylise, encode. The same core as
``nst-stylize`` (``nst_fast.images``, ``nst_fast.stylize``); a file or size the client got wrong is a
``RequestError`` that says what happened to the image."""

from __future__ import annotations

import time
from dataclasses import dataclass

from nst_fast.errors import StylizeError
from nst_fast.images import (
    MAX_ENCODABLE_SIDE,
    UPLOAD_FORMATS,
    ImageReadError,
    ImageTooLargeError,
    decode_image,
    encode_image,
)
from nst_fast.serve.errors import RequestError
from nst_fast.serve.forms import OUTPUT_FORMATS, StylizeJob
from nst_fast.serve.metrics import Metrics
from nst_fast.serve.settings import ServeSettings
from nst_fast.stylize.core import prepare_image, stylize_array
from nst_fast.stylize.models import StyleModel
from nst_fast.stylize.tiling import Tiling

#: Peak memory per pixel of the whole-image pass (bench/README.md, "Memory per pixel"), and of a tiled pass per
#: pixel of its tile, halo included (docs/tiling.md: 0.6 GB above the process at rest with 512-pixel tiles).
WHOLE_BYTES_PER_PIXEL = 420
TILE_BYTES_PER_PIXEL = 2000

READABLE = "PNG, JPEG, WebP, TIFF, BMP or GIF"


@dataclass
class Stylized:
    body: bytes
    content_type: str
    inference_ms: float


def stylize_upload(job: StylizeJob, settings: ServeSettings, metrics: Metrics) -> Stylized:
    """Decode, stylise and encode one upload (runs in an inference thread)."""
    try:
        rgb, alpha = decode_image(job.data, settings.max_pixels, job.filename, UPLOAD_FORMATS)
    except ImageTooLargeError as error:
        raise RequestError(413, f"{error}; send a smaller image") from None
    except ImageReadError as error:
        raise RequestError(400, f"{error}; send a {READABLE} file") from None
    try:
        array, alpha = prepare_image(
            rgb, alpha, min(job.max_size or settings.max_side, settings.max_side), job.filename
        )
    except StylizeError as error:
        raise RequestError(400, str(error)) from None
    pillow_format, content_type = OUTPUT_FORMATS[job.output_format]
    height, width = array.shape[:2]
    largest = MAX_ENCODABLE_SIDE[pillow_format]
    if max(width, height) > largest:  # refused before the model runs, not when encoding fails after it
        raise RequestError(
            400,
            f"the {width}x{height} result is too large for format {job.output_format}, which "
            f"stores at most {largest} pixels a side; use format png or max_size <= {largest}",
        )
    tiling = inference_tiling(job.model.model, height, width, settings.max_inference_mb, job.filename)
    start = time.perf_counter()
    stylized = stylize_array(job.model.model, array[None], job.preserve_color, job.weights, tiling)[0]
    seconds = time.perf_counter() - start
    metrics.inference_seconds.labels(job.model.name).observe(seconds)
    return Stylized(encode_image(stylized, pillow_format, alpha), content_type, seconds * 1000.0)


def inference_tiling(model: StyleModel, height: int, width: int, budget_mb: int, name: str) -> Tiling | None:
    """``None`` when the whole ``height x width`` image fits ``budget_mb`` (``WHOLE_BYTES_PER_PIXEL``), else tiles as
    large as fit it (``TILE_BYTES_PER_PIXEL``); ``RequestError`` 413 when none fits, or the model cannot tile."""
    budget = budget_mb * 2**20
    if WHOLE_BYTES_PER_PIXEL * height * width <= budget:
        return None
    staged = model.staged()
    if staged is None:
        raise RequestError(
            413,
            f"{name}: {width}x{height} needs about {WHOLE_BYTES_PER_PIXEL * height * width / 2**20:.0f} MiB to stylise "
            f"whole, over this server's {budget_mb} MiB per inference, and this model cannot tile "
            f"({model.tiles_missing}); send max_size <= {int((budget / WHOLE_BYTES_PER_PIXEL) ** 0.5)} or a smaller image",
        )
    side = int((budget / TILE_BYTES_PER_PIXEL) ** 0.5) - 2 * staged.halo
    side -= side % staged.align
    if side < staged.halo:
        raise RequestError(413, f"{name}: this server's {budget_mb} MiB per inference is too little to tile this model")
    return Tiling("on", side)
