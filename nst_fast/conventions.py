"""What an exported nst-fast model carries: metadata keys, input and output names, layouts and the smallest
side the network takes. Written by ``nst_fast.export``, read by ``nst_fast.stylize`` and the server.

Plain constants and JSON parsing only (no torch, no NumPy), so that export and the torch-free ONNX inference
path import the same definitions.
"""

from __future__ import annotations

import json

#: Smallest height and width the transformation network takes (its downsampling needs 5 pixels).
MIN_SIDE = 5
#: ONNX ``metadata_props`` keys / TorchScript extra file written by ``nst_fast.export``.
META_FORMAT = "nst_fast.format"
META_VERSION = "nst_fast.version"
META_STYLE_NAME = "nst_fast.style_name"
META_STYLE_IMAGE = "nst_fast.style_image"
META_STEPS = "nst_fast.training_steps"
META_TRANSFORMER = "nst_fast.transformer"
META_LAYOUT = "nst_fast.layout"
META_PRECISION = "nst_fast.precision"
META_INPUT = "nst_fast.input"
#: JSON list of the style names in ``style_weights`` order (every export; one name for single-style models).
META_STYLES = "nst_fast.styles"
#: JSON list of the style images' paths at training time, in the same order.
META_STYLE_IMAGES = "nst_fast.style_images"
#: JSON list, in ``nst_fast.styles`` order, of small JPEG thumbnails of the style paintings (base64 strings, longer
#: side ``THUMBNAIL_SIZE``), for pickers such as ``nst-serve``'s page; absent from older exports.
META_STYLE_THUMBNAILS = "nst_fast.style_thumbnails"
THUMBNAIL_SIZE = 128
#: ``"true"`` when the network has the identity condition (``1 - sum(style_weights)``): strength works.
META_IDENTITY = "nst_fast.identity"
EXPORT_FORMAT = "1"
TORCHSCRIPT_META_FILE = "nst_fast.json"
INPUT_NAME = "image"
#: Second input of multi-condition models: float32 ``[N, S]`` (``[S]`` for the uint8 model), one weight per style.
WEIGHTS_NAME = "style_weights"
OUTPUT_NAME = "stylized"
#: ``image``: float32 ``[N, 3, H, W]`` RGB in [0, 1] -> ``stylized`` of the same shape and range.
LAYOUT_NCHW_FLOAT = "nchw_float32"
#: ``image``: uint8 ``[H, W, 3]`` RGB (one image) -> ``stylized`` uint8 ``[H, W, 3]``.
LAYOUT_HWC_UINT8 = "hwc_uint8"
INPUT_DESCRIPTIONS = {
    LAYOUT_NCHW_FLOAT: f"image: float32 [N, 3, H, W] RGB in [0, 1], H, W >= {MIN_SIDE} -> stylized: same shape, [0, 1]",
    LAYOUT_HWC_UINT8: f"image: uint8 [H, W, 3] RGB, H, W >= {MIN_SIDE} -> stylized: uint8 [H, W, 3] RGB",
}
#: How multi-condition models describe their second input (appended to the layout's description).
WEIGHTS_DESCRIPTIONS = {
    LAYOUT_NCHW_FLOAT: "style_weights: float32 [N, S], one row per image, styles in nst_fast.styles order",
    LAYOUT_HWC_UINT8: "style_weights: float32 [S], styles in nst_fast.styles order",
}


def styles_from_metadata(meta: dict[str, str]) -> tuple[list[str], bool]:
    """Style names and identity flag of an export (exports before multi-style models name one style)."""
    try:
        styles = json.loads(meta[META_STYLES]) if META_STYLES in meta else [meta.get(META_STYLE_NAME, "")]
    except json.JSONDecodeError:
        styles = [meta.get(META_STYLE_NAME, "")]
    return [str(name) for name in styles], meta.get(META_IDENTITY, "false") == "true"


def metadata_conditions(meta: dict[str, str]) -> int:
    """Number of conditions of an exported network (``nst_fast.transformer``'s ``num_conditions``, else 1):
    more than one means the model takes ``style_weights``."""
    try:
        return int(json.loads(meta.get(META_TRANSFORMER, "{}")).get("num_conditions", 1))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1


#: Tiled inference (``nst_fast.stylize.tiling``): ``NAME.onnx`` cut at its instance norms into passes, written beside
#: it by the export as ``NAME.tiles.zip`` (``TILES_PLAN`` describes the passes; each is ``pass_NN.onnx``; a tensor that
#: several passes read, the noise pattern, is stored once as ``NAME.npy`` and fed to them as an input).
TILES_SUFFIX = ".tiles.zip"
TILES_PLAN = "plan.json"
TILES_FORMAT = "2"
#: Formats the runner reads: ``1`` is ``2`` without shared tensors (each pass holds its own noise pattern).
TILES_READABLE_FORMATS = ("1", "2")
#: Tiles are aligned to this many pixels (the network halves the resolution twice).
TILE_ALIGN = 4
#: Inputs and outputs of a norm's pass for its statistics: the valid (non-halo) part of the norm's input, rows and
#: columns ``[start, end)`` (int64 ``[2]`` each) at that tensor's resolution, and the sums over each of its rows of
#: ``x`` and ``x^2`` (``[C, rows]``), which the runner adds up over rows and tiles in float64.
TILE_CROP_STARTS, TILE_CROP_ENDS = "tile_crop_starts", "tile_crop_ends"
TILE_SUM, TILE_SQUARES = "tile_sum", "tile_sum_squares"
#: Networks with ``model.input_noise``: the ONNX initializer holding the noise pattern, and the input of a pass that
#: reads it, where the pass's region starts in the padded image (row, column; int64 ``[2]``), so that each tile
#: adds the pattern the whole image has there.
NOISE_PATTERN_NAME = "noise_pattern"
TILE_NOISE_OFFSET = "tile_noise_offset"


def tiles_name(onnx_name: str) -> str:
    """The staged file of an ONNX file name: ``NAME.int8.onnx`` -> ``NAME.int8.tiles.zip``."""
    stem = onnx_name[: -len(".onnx")] if onnx_name.lower().endswith(".onnx") else onnx_name
    return stem + TILES_SUFFIX
