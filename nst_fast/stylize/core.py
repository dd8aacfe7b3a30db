"""The inference core shared by ``nst-stylize`` and ``nst-serve``: check, stylise and write images with a loaded
model (``nst_fast.stylize.models``), with colour preservation and batching of same-sized images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nst_fast.conventions import MIN_SIDE
from nst_fast.errors import StylizeError
from nst_fast.images import DEFAULT_MAX_PIXELS, fit_within, open_image, preserve_color, save_image
from nst_fast.stylize.jobs import Job
from nst_fast.stylize.models import StyleModel
from nst_fast.stylize.tiling import StagedModel, Tiling


def check_size(width: int, height: int, what: str) -> None:
    if min(width, height) < MIN_SIDE:
        raise StylizeError(f"{what}: {width}x{height} is too small (the network needs at least {MIN_SIDE}x{MIN_SIDE})")


def tiles_for(model: StyleModel, tiling: Tiling, height: int, width: int) -> StagedModel | None:
    """The staged model to stylise a ``height x width`` image tile by tile with, or ``None`` for the whole-image pass
    (``tiling.mode`` says no, or ``auto`` on a model that cannot tile). ``StylizeError`` for ``tiling.mode == "on"``
    on a model that cannot."""
    if not tiling.wanted(height, width):
        return None
    staged = model.staged()
    if staged is None and tiling.mode == "on":
        raise StylizeError(f"cannot tile with {model.description}: {model.tiles_missing}")
    return staged


def stylize_array(
    model: StyleModel,
    rgb: np.ndarray,
    keep_color: bool = False,
    weights: np.ndarray | None = None,
    tiling: Tiling | None = None,
) -> np.ndarray:
    """Stylise uint8 RGB images ``[N, H, W, 3]`` -> float RGB in [0, 1] with the style ``weights``
    (``parse_style_weights``), optionally keeping their colours. Where ``tiling`` applies (``tiles_for``), each image
    goes tile by tile instead and the result is uint8, rounded as ``save_image`` rounds floats."""
    staged = None if tiling is None else tiles_for(model, tiling, rgb.shape[1], rgb.shape[2])
    if staged is not None and tiling is not None:
        return np.stack([staged(image, weights, tiling, keep_color) for image in rgb])
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
    width, height = rgb.size
    rgb = fit_within(rgb, max_size)
    if alpha is not None:
        alpha = fit_within(alpha, max_size)
    if rgb.size != (width, height) and min(rgb.size) < MIN_SIDE:  # fine as it came, too thin once downscaled
        raise StylizeError(
            f"{what}: {width}x{height} downscaled to {rgb.width}x{rgb.height} (longest side at most {max_size}) is too "
            f"small: the network needs at least {MIN_SIDE}x{MIN_SIDE}; crop it to a less elongated shape"
        )
    check_size(rgb.width, rgb.height, what)
    return np.asarray(rgb), alpha


def load_image(job: Job, max_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read ``job.source`` (EXIF-upright, RGB, downscaled to ``max_size``) and check it is large enough."""
    rgb, alpha = prepare_image(*open_image(job.source, max_pixels), max_size, str(job.source))
    return LoadedImage(job, rgb, alpha)


def stylize_images(
    model: StyleModel,
    images: Sequence[LoadedImage],
    *,
    keep_color: bool = False,
    quality: int = 95,
    weights: np.ndarray | None = None,
    tiling: Tiling | None = None,
) -> None:
    """Stylise same-sized images in one model call (or tile by tile: ``stylize_array``) and write each to its target
    (same size, alpha kept where the output format stores it)."""
    out = stylize_array(model, np.stack([image.rgb for image in images]), keep_color, weights, tiling)
    for image, stylized in zip(images, out, strict=False):
        save_image(image.job.target, stylized, image.alpha, quality=quality)


def stylize_image(
    model: StyleModel,
    source: Path,
    target: Path,
    *,
    keep_color: bool = False,
    max_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    quality: int = 95,
    weights: np.ndarray | None = None,
    tiling: Tiling | None = None,
) -> None:
    """One image file -> one image file of the same size (or downscaled to ``max_size``); ``tiling``: see
    ``stylize_array``."""
    image = load_image(Job(source, target, video=False), max_size, max_pixels)
    stylize_images(model, [image], keep_color=keep_color, quality=quality, weights=weights, tiling=tiling)
