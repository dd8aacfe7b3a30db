"""Optical flow, warping and occlusion masks for video frames: plain numpy and OpenCV, no torch.

Used to measure temporal stability (``bench/temporal.py``) and meant for temporally consistent stylisation at
inference, which must not need torch to warp a frame. OpenCV (``opencv-python-headless``) is imported on first
use, so importing this module never fails.

Conventions: images are ``[H, W, C]`` (or ``[H, W]``) float32 numpy arrays; a flow is ``[H, W, 2]`` float32,
``(dx, dy)`` in pixels (OpenCV's order), pointing from a pixel of the first frame to where it is in the
second: ``first[y, x] ~ second[y + dy, x + dx]``.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

#: Forward-backward consistency test of Sundaram et al. (2010), as used by Ruder et al. (2016) for video style
#: transfer: a pixel is occluded (or its flow wrong) when
#: ``|F + B|^2 > RELATIVE * (|F|^2 + |B|^2) + ABSOLUTE`` (pixels^2), with ``B`` the backward flow at ``p + F(p)``.
CONSISTENCY_RELATIVE = 0.01
CONSISTENCY_ABSOLUTE = 0.5


def _cv2() -> ModuleType:
    try:
        import cv2
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "optical flow needs OpenCV, which is not installed: pip install opencv-python-headless "
            "(or pip install -e '.[dev]' in a checkout)"
        ) from error
    return cv2


def _check_flow(flow: np.ndarray, height: int | None = None, width: int | None = None) -> None:
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"a flow must be [H, W, 2] (dx, dy), got shape {flow.shape}")
    if height is not None and flow.shape[:2] != (height, width):
        raise ValueError(f"flow {flow.shape[:2]} and image ({height}, {width}) differ in size")


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` RGB (float in [0, 1], or uint8) as the ``[H, W]`` uint8 luma that DIS flow takes."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] RGB image or [H, W] gray, got shape {image.shape}")
    return _cv2().cvtColor(np.ascontiguousarray(image), _cv2().COLOR_RGB2GRAY)


def optical_flow(first: np.ndarray, second: np.ndarray, preset: str = "medium") -> np.ndarray:
    """Dense flow from ``first`` to ``second`` (``[H, W, 3]`` RGB or ``[H, W]`` gray, same size) with OpenCV's
    DIS optical flow (Kroeger et al. 2016), ``preset`` ``ultrafast``, ``fast`` or ``medium``. ``[H, W, 2]``."""
    cv2 = _cv2()
    presets = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }
    if preset not in presets:
        raise ValueError(f"unknown DIS preset {preset!r}; choose one of {sorted(presets)}")
    a, b = to_gray_uint8(first), to_gray_uint8(second)
    if a.shape != b.shape:
        raise ValueError(f"frames differ in size: {a.shape} and {b.shape}")
    return cv2.DISOpticalFlow_create(presets[preset]).calc(a, b, None).astype(np.float32)


def sample_points(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel's flow points: ``x + dx`` and ``y + dy``, each ``[H, W]`` float32."""
    _check_flow(flow)
    height, width = flow.shape[:2]
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cols + flow[..., 0], rows + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` sampled bilinearly at ``p + flow(p)``: with the flow from frame A to frame B, warping B gives
    B aligned to A (``warp(B, flow_AB) ~ A``). ``image``: ``[H, W]`` or ``[H, W, C]``, any float or uint8 dtype.

    Returns the warped image (float32, same shape; border pixels repeated where the point falls outside) and a
    bool mask ``[H, W]``, True where ``p + flow(p)`` lies inside the image.
    """
    height, width = image.shape[:2]
    _check_flow(flow, height, width)
    map_x, map_y = sample_points(flow)
    warped = _cv2().remap(
        np.ascontiguousarray(image, dtype=np.float32),
        map_x,
        map_y,
        interpolation=_cv2().INTER_LINEAR,
        borderMode=_cv2().BORDER_REPLICATE,
    )
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return warped, inside


def consistency_mask(
    forward: np.ndarray,
    backward: np.ndarray,
    relative: float = CONSISTENCY_RELATIVE,
    absolute: float = CONSISTENCY_ABSOLUTE,
) -> np.ndarray:
    """Pixels of the first frame whose motion is trustworthy, ``[H, W]`` bool: the forward flow (first ->
    second) points inside the second frame, and the backward flow (second -> first) there brings it back:
    ``|F(p) + B(p + F(p))|^2 <= relative * (|F(p)|^2 + |B(p + F(p))|^2) + absolute`` (pixels^2; Sundaram et
    al. 2010). False marks occlusions, disocclusions and flow errors."""
    _check_flow(forward)
    _check_flow(backward, *forward.shape[:2])
    backward_there, inside = warp(backward, forward)
    round_trip = np.square(forward + backward_there).sum(axis=2)
    magnitude = np.square(forward).sum(axis=2) + np.square(backward_there).sum(axis=2)
    return inside & (round_trip <= relative * magnitude + absolute)
