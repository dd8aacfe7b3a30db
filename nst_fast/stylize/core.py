"""The inference core shared by ``nst-stylize`` and ``nst-serve``: check, stylise and write images with a loaded
model (``nst_fast.stylize.models``), with colour preservation and batching of same-sized images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from nst_fast.conventions import MIN_SIDE
from nst_fast.errors import StylizeError
from nst_fast.images import DEFAULT_MAX_PIXELS, fit_within, open_image, preserve_color, save_image
from nst_fast.stylize.jobs import Job
from nst_fast.stylize.models import StyleModel


def check_size(width: int, height: int, what: str) -> None:
    if min(width, height) < MIN_SIDE:
        raise StylizeError(f"{what}: {width}x{height} is too small (the network needs at least {MIN_SIDE}x{MIN_SIDE})")


def stylize_array(
    model: StyleModel, rgb: np.ndarray, keep_color: bool = False, weights: np.ndarray | None = None
) -> np.ndarray:
    """Stylise uint8 RGB images ``[N, H, W, 3]`` -> float RGB in [0, 1] with the style ``weights``
    (``parse_style_weights``), optionally keeping their colours."""
    out = model(rgb, weights)
    if out.shape != rgb.shape:
        raise StylizeError(f"the model returned shape {out.shape} for input {rgb.shape}")
    if keep_color:
        out = preserve_color(rgb.astype(np.float32) / 255.0, out)
    return out


@dataclass
class LoadedImage:
    """An input image ready for the model: uint8 RGB ``[H, W, 3]`` and its alpha channel, if any."""

    job: Job
    rgb: np.ndarray
    alpha: Any


def prepare_image(
    rgb: Image.Image, alpha: Image.Image | None, max_size: int | None, what: str
) -> tuple[np.ndarray, Image.Image | None]:
    """A decoded image (``open_image``/``decode_image``) ready for the model: downscaled to ``max_size`` (alpha
    too) and checked to be large enough; returns uint8 RGB ``[H, W, 3]`` and the alpha channel. ``what`` names
    the image in errors."""
    rgb = fit_within(rgb, max_size)
    if alpha is not None:
        alpha = fit_within(alpha, max_size)
    check_size(rgb.width, rgb.height, what)
    return np.asarray(rgb), alpha


def load_image(job: Job, max_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read ``job.source`` (EXIF-upright, RGB, downscaled to ``max_size``) and check it is large enough."""
    rgb, alpha = prepare_image(*open_image(job.source, max_pixels), max_size, str(job.source))
    return LoadedImage(job, rgb, alpha)


def stylize_images(
    model: StyleModel, images: Sequence[LoadedImage], *, keep_color: bool = False, quality: int = 95,
    weights: np.ndarray | None = None,
) -> None:
    """Stylise same-sized images in one model call and write each to its target (same size, alpha kept where
    the output format stores it)."""
    out = stylize_array(model, np.stack([image.rgb for image in images]), keep_color, weights)
    for image, stylized in zip(images, out):
        save_image(image.job.target, stylized, image.alpha, quality=quality)


def stylize_image(
    model: StyleModel, source: Path, target: Path, *, keep_color: bool = False, max_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS, quality: int = 95, weights: np.ndarray | None = None,
) -> None:
    """One image file -> one image file of the same size (or downscaled to ``max_size``)."""
    image = load_image(Job(source, target, video=False), max_size, max_pixels)
    stylize_images(model, [image], keep_color=keep_color, quality=quality, weights=weights)
