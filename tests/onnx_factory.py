"""Tiny ONNX models with the exact interface and metadata of an nst-fast export, built in milliseconds with
``onnx.helper`` (a real ``export_checkpoint`` takes 10-30 s on a 2-core CPU), for the server and bench tests.

The graph is a random 3x3 convolution, plus a per-style colour shift for multi-style models, through a sigmoid:
``stylized = sigmoid(conv(image) + style_weights @ shifts)``, so different weights give different images and the
output stays in [0, 1] at the input's size.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from nst_fast.conventions import (
    EXPORT_FORMAT,
    INPUT_DESCRIPTIONS,
    INPUT_NAME,
    LAYOUT_NCHW_FLOAT,
    META_FORMAT,
    META_IDENTITY,
    META_INPUT,
    META_LAYOUT,
    META_STEPS,
    META_STYLE_NAME,
    META_STYLE_THUMBNAILS,
    META_STYLES,
    META_TRANSFORMER,
    OUTPUT_NAME,
    WEIGHTS_NAME,
)


def thumbnail_base64(color: tuple[int, int, int], size: int = 16) -> str:
    """A small single-colour JPEG as base64, like the export's style thumbnails."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def tiny_onnx_model(
    path: Path,
    styles: list[str],
    *,
    identity: bool = False,
    steps: int = 3,
    seed: int = 0,
    thumbnails: list[str] | None = None,
) -> Path:
    """Write an nst-fast-compatible float32 NCHW model to ``path``: one input ``image`` for a single style without
    the identity, else a second input ``style_weights [N, len(styles)]``."""
    rng = np.random.default_rng(seed)
    conditions = len(styles) + int(identity)
    weight = numpy_helper.from_array(rng.normal(0, 0.5, (3, 3, 3, 3)).astype(np.float32), "conv_weight")
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])]
    nodes = [helper.make_node("Conv", [INPUT_NAME, "conv_weight"], ["conv"], pads=[1, 1, 1, 1])]
    initializers = [weight]
    pre_activation = "conv"
    if conditions > 1:
        inputs.append(helper.make_tensor_value_info(WEIGHTS_NAME, TensorProto.FLOAT, ["N", len(styles)]))
        shifts = rng.uniform(-2, 2, (len(styles), 3)).astype(np.float32)
        initializers += [
            numpy_helper.from_array(shifts, "shifts"),
            numpy_helper.from_array(np.array([-1, 3, 1, 1], dtype=np.int64), "shift_shape"),
        ]
        nodes += [
            helper.make_node("MatMul", [WEIGHTS_NAME, "shifts"], ["shift"]),
            helper.make_node("Reshape", ["shift", "shift_shape"], ["shift4"]),
            helper.make_node("Add", ["conv", "shift4"], ["shifted"]),
        ]
        pre_activation = "shifted"
    nodes.append(helper.make_node("Sigmoid", [pre_activation], [OUTPUT_NAME]))
    graph = helper.make_graph(
        nodes,
        "tiny_style",
        inputs,
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10  # as torch's exporter writes (onnx's newest is beyond what onnxruntime-web reads)
    meta = {
        META_FORMAT: EXPORT_FORMAT,
        META_STYLE_NAME: "+".join(styles),
        META_STYLES: json.dumps(styles),
        META_IDENTITY: "true" if identity else "false",
        META_STEPS: str(steps),
        META_LAYOUT: LAYOUT_NCHW_FLOAT,
        META_INPUT: INPUT_DESCRIPTIONS[LAYOUT_NCHW_FLOAT],
        META_TRANSFORMER: json.dumps({"num_conditions": conditions}),
    }
    if thumbnails is not None:
        meta[META_STYLE_THUMBNAILS] = json.dumps(thumbnails)
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
