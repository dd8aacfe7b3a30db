"""Static int8 quantisation of an exported float32 ONNX model for CPUs (ONNX Runtime, QDQ format).

``quantize_int8(float_path, out_path, photos)`` calibrates the activation ranges on photos and writes a QDQ
model: ``QuantizeLinear``/``DequantizeLinear`` pairs around the operators that are quantised, which ONNX
Runtime's CPU provider fuses into integer kernels (``QLinearConv``, VNNI on x86). Weights are int8 per output
channel (symmetric), activations uint8 per tensor (asymmetric), as ONNX Runtime recommends for x86 CPUs.

What is quantised and what stays float was chosen by measurement (bench/README.md, "int8 model"; see
``quantize_int8``). The input and output stay float32 ``[N, 3, H, W]`` in [0, 1] (and ``style_weights``
float32), so the int8 file is a drop-in for the float32 one. Torch-free: only ONNX, ONNX Runtime, NumPy and
Pillow.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nst_fast.export.calibration import (
    CALIBRATION_METHODS,
    DEFAULT_METHOD,
    _calibration_reader,
    calibration_feeds,
    percentile_ranges,
)
from nst_fast.export.qdq_rewrites import (
    _consumers,
    _movable,
    equalise_before_norms,
    move_quantisation_across_data_movement,
)

#: The first convolutions stay float32: the 9x9 conv from RGB (quantised, its output cost 6 dB on the worst
#: held-out photo) and the stride-2 conv after it (quantised, the quantisation noise in flat regions such as a
#: foggy sky was amplified into stylised swirls: worst photo 30.6 dB instead of 33.9). 3% of the FLOPs.
FLOAT_CONVS = 2


@contextlib.contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantiser logs a warning per 1-D weight (the norms') on the root logger: mute it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


#: Logit range the quantised output conv keeps (the network ends in a sigmoid): sigmoid(-8) = 3.4e-4, so the
#: clip costs under 0.1 grey level while the 8-bit step stays 16 / 255 logits (at most 2 grey levels).
OUTPUT_LOGIT_RANGE = 8.0


def _reaches_sigmoid(model, name: str) -> bool:
    """Whether tensor ``name`` flows into a ``Sigmoid`` through value-moving operators only."""
    consumers = _consumers(model)
    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    while True:
        after = consumers.get(name, [])
        if len(after) != 1:
            return False
        if after[0].op_type == "Sigmoid":
            return True
        if not _movable(after[0], constants):
            return False
        name = after[0].output[0]


def _quantise_convs(
    float_path: Path,
    out_path: Path,
    feeds: list[dict[str, np.ndarray]],
    float_convs: list[str],
    overrides: dict[str, list[dict[str, np.float32]]],
) -> None:
    """ONNX Runtime's static QDQ quantisation of every conv but ``float_convs``: uint8 activations, per-channel
    int8 weights, min-max calibrated on ``feeds`` except for the tensors whose ranges ``overrides`` sets."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with _quiet_root_logger():
        quantize_static(
            str(float_path),
            str(out_path),
            _calibration_reader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=float_convs,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"TensorQuantOverrides": overrides},
        )


def quantize_int8(
    float_path: str | Path,
    out_path: str | Path,
    photos: Sequence[np.ndarray],
    weight_cases: Sequence[np.ndarray | None] = (None,),
    *,
    method: str = DEFAULT_METHOD,
    metadata: dict[str, str] | None = None,
) -> dict[str, object]:
    """Write the int8 QDQ model of the float32 ONNX model ``float_path`` to ``out_path``, calibrated on
    ``photos`` (``[1, 3, H, W]`` float32 in [0, 1]) run with each of ``weight_cases`` (style weights ``[S]``, or
    ``None`` for one-input models). Keeps the metadata (``metadata_props``, doc string) of the float model,
    with the entries of ``metadata`` replaced or added.

    What is quantised (measured, bench/README.md): every conv except the first ``FLOAT_CONVS``, with the output
    channels of each conv that feeds an instance norm equalised first (``equalise_before_norms``); the last
    conv's output range clipped to ``OUTPUT_LOGIT_RANGE`` (it feeds the sigmoid); padding, sub-pixel interleaves
    and the ReLUs before quantised convs moved into uint8 (``move_quantisation_across_data_movement``). Instance
    norms, residual additions and the sigmoid stay float32 (ONNX Runtime's CPU provider has no int8 kernels for them).
    Returns a summary (counts of what was done) for the log."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(
            f"int8 calibration method {method!r} is unknown; choose one of {', '.join(CALIBRATION_METHODS)}"
        )
    if not photos:
        raise ValueError("int8 calibration needs at least one photo")
    float_model = onnx.load(str(float_path))
    with tempfile.TemporaryDirectory(prefix="nst-int8-") as folder:
        prepared = Path(folder) / "prepared.onnx"
        equalised = Path(folder) / "equalised.onnx"
        quantised = Path(folder) / "quantised.onnx"
        # Folds the constant subgraphs (e.g. the sub-pixel kernels) into initializers and infers shapes.
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        feeds = calibration_feeds(photos, weight_cases)
        model, factors = equalise_before_norms(model, feeds)
        onnx.save(model, str(equalised))
        convs = [node for node in model.graph.node if node.op_type == "Conv"]
        overrides = {
            name: [{"rmin": np.float32(low), "rmax": np.float32(high)}]
            for name, (low, high) in _range_overrides(model, feeds, convs, method).items()
        }
        _quantise_convs(equalised, quantised, feeds, [node.name for node in convs[:FLOAT_CONVS]], overrides)
        model = onnx.load(str(quantised))
    moved_dq, moved_q, dropped = move_quantisation_across_data_movement(model)
    _copy_metadata(float_model, model, metadata or {})
    onnx.save(model, str(out_path))
    return {
        "quantised_convs": len(convs) - FLOAT_CONVS,
        "float_convs": FLOAT_CONVS,
        "equalised_convs": len(factors),
        "uint8_moves": moved_dq + moved_q,
        "relus_dropped": dropped,
        "calibration_runs": len(feeds),
    }


def _range_overrides(
    model: Any, feeds: list[dict[str, np.ndarray]], convs: list[Any], method: str
) -> dict[str, tuple[float, float]]:
    """Activation ranges that replace ONNX Runtime's min/max calibration: with ``percentile``, each quantised
    conv's input and output (``percentile_ranges``); always, the output logits of the conv that feeds the
    sigmoid clipped to ``OUTPUT_LOGIT_RANGE``."""
    ranges: dict[str, tuple[float, float]] = {}
    if method == "percentile":
        ranges = percentile_ranges(
            model, feeds, sorted({t for node in convs[FLOAT_CONVS:] for t in (node.input[0], node.output[0])})
        )
    return ranges | {
        node.output[0]: (-OUTPUT_LOGIT_RANGE, OUTPUT_LOGIT_RANGE)
        for node in convs
        if _reaches_sigmoid(model, node.output[0])
    }


def _copy_metadata(source: Any, target: Any, metadata: dict[str, str]) -> None:
    """Give ``target`` the metadata (``metadata_props``, doc string) of ``source``, with ``metadata``'s entries
    replaced or added."""
    properties = {p.key: p.value for p in source.metadata_props} | dict(metadata)
    del target.metadata_props[:]
    for key, value in properties.items():
        target.metadata_props.add(key=key, value=value)
    target.doc_string = source.doc_string
