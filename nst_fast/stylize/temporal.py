"""Temporal blending for videos (``nst-stylize --temporal``): each stylised frame is blended with the previous
output frame carried along the optical flow of the *input* frames, where that flow can be trusted, so that
texture which only flickers between frames settles while moving content follows its motion.

For frames ``t-1, t`` (inputs ``x``, per-frame stylisations ``s``, outputs ``y``)::

    B = flow(x_t -> x_{t-1}),  F = flow(x_{t-1} -> x_t)          (OpenCV DIS, on the inputs' luma)
    trusted = forward-backward consistent (nst_fast.flow.consistency_mask(B, F))
              and |x_t - warp(x_{t-1}, B)| <= PHOTOMETRIC_TOLERANCE           (same content at the far end)
    y_t = weight * warp(y_{t-1}, B) + (1 - weight) * s_t   where trusted,   s_t elsewhere

Occlusions, disocclusions, frame edges entering the view and scene cuts fail one of the tests and keep the new
stylisation; a frame with fewer than ``SCENE_CUT_FRACTION`` of its pixels trusted is taken as a new shot and
blended nowhere (between unrelated photos a few percent of the pixels pass both tests by chance). The recursion
averages each tracked point over about ``1 / (1 - weight)`` frames. Torch-free (NumPy and OpenCV, imported on
first use), so the ONNX path stays without torch.
"""

from __future__ import annotations

import numpy as np

from nst_fast.errors import StylizeError

#: Share of the previous output in trusted pixels (``--temporal-weight``); chosen by measurement (bench/README.md).
DEFAULT_WEIGHT = 0.7
#: DIS optical-flow preset (``nst_fast.flow.optical_flow``); chosen by measurement (bench/README.md).
FLOW_PRESET = "fast"
#: Largest luma difference (levels of 255) between a pixel of the new input frame and the previous input frame
#: warped onto it for the pixel to be blended: rejects scene cuts, lighting changes and flow that is
#: consistent but wrong (flat areas), well above sensor and compression noise.
PHOTOMETRIC_TOLERANCE = 24.0
#: Below this fraction of trusted pixels a frame starts a new shot and nothing of the previous one is blended in.
#: Measured: 0.05-2.4% pass by chance across cuts between held-out photos; at least 38% (median 96-99%) on the
#: noisy known-motion pans of bench/temporal.py, about 98% on a panned H.264 clip.
SCENE_CUT_FRACTION = 0.15


def require_opencv() -> None:
    """Raise a ``StylizeError`` with the install command when OpenCV (the optical flow) is missing."""
    try:
        import cv2  # noqa: F401
    except ImportError as error:
        raise StylizeError(
            f"--temporal needs OpenCV for optical flow, which is not installed ({error}): "
            "pip install opencv-python-headless (or pip install 'nst-fast[video]')"
        ) from error


def check_weight(weight: float) -> float:
    """``weight`` if it is in (0, 1): at 1 the first frame would never change."""
    if not 0.0 < weight < 1.0:
        raise StylizeError(f"--temporal-weight {weight} must be between 0 and 1 (exclusive), e.g. {DEFAULT_WEIGHT}")
    return weight


class TemporalBlender:
    """Blends a video's stylised frames one after another (module docstring). Call it with each frame in
    order; a frame of another size than the previous one starts afresh."""

    def __init__(self, weight: float = DEFAULT_WEIGHT, preset: str = FLOW_PRESET) -> None:
        self.weight = check_weight(weight)
        self.preset = preset
        self.previous_gray: np.ndarray | None = None
        self.previous_output: np.ndarray | None = None
        #: The blended pixels of the last frame, ``[H, W]`` bool (``None`` for a first frame): for tests, benches.
        self.last_mask: np.ndarray | None = None

    def __call__(self, frame: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        """``frame``: the input, uint8 RGB ``[H, W, 3]``; ``stylized``: its stylisation, float RGB ``[H, W, 3]``
        in [0, 1]. Returns the output frame, float32 ``[H, W, 3]`` in [0, 1]."""
        from nst_fast.flow import consistency_mask, optical_flow, to_gray_uint8, warp

        gray = to_gray_uint8(frame)
        stylized = np.asarray(stylized, dtype=np.float32)
        if self.previous_gray is None or self.previous_gray.shape != gray.shape:
            output, self.last_mask = stylized, None
        else:
            backward = optical_flow(gray, self.previous_gray, self.preset)
            forward = optical_flow(self.previous_gray, gray, self.preset)
            previous_gray, _ = warp(self.previous_gray, backward)
            trusted = consistency_mask(backward, forward)
            trusted &= np.abs(previous_gray - gray) <= PHOTOMETRIC_TOLERANCE
            if trusted.mean() < SCENE_CUT_FRACTION:
                trusted[:] = False
            previous_output, _ = warp(self.previous_output, backward)
            blended = self.weight * previous_output + (1.0 - self.weight) * stylized
            output, self.last_mask = np.where(trusted[..., None], blended, stylized), trusted
        self.previous_gray, self.previous_output = gray, output
        return output
