"""Stylise a photo with a Triton server that serves an nst-fast export (``python export.py ... export.triton=true``).

    python examples/triton_client.py photo.jpg -o photo_wave.png --model starry_wave_udnie --style wave
    python examples/triton_client.py photo.jpg -o photo_starry.png --model starry --resize 512x512

Needs NumPy, Pillow and ``tritonclient[http]`` only (not nst-fast). The model's style names are read from its
config (the ``nst_fast.styles`` parameter). Triton's dynamic batcher only puts requests of the same shape into one
batch (same height and width): with ``--resize WxH`` every photo is sent at that size and the result is scaled
back to the photo's size, so that requests from many clients can share batches.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from PIL import Image, ImageOps
from tritonclient.utils import InferenceServerException

IMAGE_INPUT = "image"
WEIGHTS_INPUT = "style_weights"
OUTPUT = "stylized"
STYLES_PARAMETER = "nst_fast.styles"


def model_styles(config: dict) -> tuple[list[str], bool]:
    """The style names (``style_weights`` order) of a model config as Triton's HTTP API returns it, and whether
    the model takes ``style_weights`` (multi-style models and those with the identity)."""
    parameter = config.get("parameters", {}).get(STYLES_PARAMETER, {})
    styles = json.loads(parameter.get("string_value", "[]"))
    takes_weights = any(tensor["name"] == WEIGHTS_INPUT for tensor in config.get("input", []))
    return styles, takes_weights


def style_weights(styles: list[str], style: str | None, strength: float = 1.0) -> np.ndarray:
    """One row ``[1, S]``: ``strength`` for ``style`` (the first style if ``None``), 0 for the others; the rest,
    ``1 - strength``, goes to the identity of models that have it. Raises ``ValueError`` for an unknown style."""
    name = style if style is not None else styles[0]
    if name not in styles:
        raise ValueError(f"style {name!r} is not one of the model's: {', '.join(styles)}")
    weights = np.zeros((1, len(styles)), dtype=np.float32)
    weights[0, styles.index(name)] = strength
    return weights


def request_inputs(image: np.ndarray, weights: np.ndarray | None) -> list[httpclient.InferInput]:
    """The request for one uint8 ``[H, W, 3]`` RGB photo: ``image`` FP32 ``[1, 3, H, W]`` in [0, 1], and
    ``style_weights`` FP32 ``[1, S]`` for models that take it (``weights`` ``None`` for those that do not)."""
    batch = (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
    tensors = [(IMAGE_INPUT, batch)] + ([] if weights is None else [(WEIGHTS_INPUT, weights.astype(np.float32))])
    inputs = []
    for name, array in tensors:
        tensor = httpclient.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    return inputs


def stylize(
    client: httpclient.InferenceServerClient,
    model: str,
    photo: Image.Image,
    style: str | None = None,
    strength: float = 1.0,
    resize: tuple[int, int] | None = None,
) -> Image.Image:
    """``photo`` (RGB) stylised by ``model`` on the server, at the photo's size."""
    styles, takes_weights = model_styles(client.get_model_config(model))
    sent = photo.resize(resize, Image.Resampling.LANCZOS) if resize else photo
    weights = style_weights(styles, style, strength) if takes_weights else None
    result = client.infer(
        model,
        request_inputs(np.asarray(sent), weights),
        outputs=[httpclient.InferRequestedOutput(OUTPUT, binary_data=True)],
    )
    stylized = result.as_numpy(OUTPUT)[0].transpose(1, 2, 0)
    out = Image.fromarray((np.clip(stylized, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return out.resize(photo.size, Image.Resampling.LANCZOS) if out.size != photo.size else out


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photo")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--model", required=True, help="the model's folder name under export/triton/")
    parser.add_argument("--url", default="localhost:8000", help="Triton's HTTP endpoint (default: %(default)s)")
    parser.add_argument("--style", help="a style of a multi-style model (default: its first)")
    parser.add_argument(
        "--strength", type=float, default=1.0, help="0 the photo .. 1 the full style (models with the identity)"
    )
    parser.add_argument(
        "--resize",
        type=_size,
        metavar="WxH",
        help="send the photo at this size (batches with other requests of that size)",
    )
    args = parser.parse_args(argv)
    photo = ImageOps.exif_transpose(Image.open(args.photo)).convert("RGB")
    client = httpclient.InferenceServerClient(url=args.url)
    try:
        stylize(client, args.model, photo, args.style, args.strength, args.resize).save(args.output)
    except (ValueError, InferenceServerException, OSError) as error:  # OSError: no server at --url
        print(f"triton_client: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
