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
import math
import tempfile
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
#: Measured on the held-out photos (bench/README.md): 99.99 gave 2.8 dB more PSNR than 99.999 and kept the
#: held-out style cost within 5% of the float model's (99.999: up to 9% lower); 99.9 clipped too much.
PERCENTILE = 99.99
#: The first convolutions stay float32: the 9x9 conv from RGB (quantised, its output cost 6 dB on the worst
#: held-out photo) and the stride-2 conv after it (quantised, the quantisation noise in flat regions such as a
#: foggy sky was amplified into stylised swirls: worst photo 30.6 dB instead of 33.9). 3% of the FLOPs.
FLOAT_CONVS = 2


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
    return np.ascontiguousarray(photo[:, :, top:top + size, left:left + size])


def calibration_files(folder: str | Path, limit: int) -> list[Path]:
    """Up to ``limit`` photos under ``folder`` (sorted, spread evenly over the list when there are more)."""
    files = list_images(folder)
    if len(files) > limit:
        step = len(files) / limit
        files = [files[math.floor(i * step)] for i in range(limit)]
    return files


def calibration_feeds(photos: Sequence[np.ndarray], weight_cases: Sequence[np.ndarray | None]) -> list[dict[str, np.ndarray]]:
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


def _consumers(model) -> dict[str, list]:
    found: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def normalised_convolutions(model) -> list[tuple[object, int, float]]:
    """``(conv node, group, eps)`` for every ``Conv`` whose output reaches an ``InstanceNormalization`` (whose
    ``epsilon`` is ``eps``) through nothing but a ``DepthToSpace`` (CRD mode, ``group = blocksize^2`` conv
    channels per norm channel) and a ``Pad`` (the crop of the sub-pixel layers); ``group`` is 1 for a conv
    feeding the norm directly."""
    consumers = _consumers(model)

    def only_consumer(name: str):
        nodes = consumers.get(name, [])
        return nodes[0] if len(nodes) == 1 else None

    found = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        group, nxt = 1, only_consumer(node.output[0])
        if nxt is not None and nxt.op_type == "DepthToSpace":
            attributes = {a.name: a for a in nxt.attribute}
            if attributes.get("mode") is None or attributes["mode"].s != b"CRD":
                continue
            group = attributes["blocksize"].i ** 2
            nxt = only_consumer(nxt.output[0])
            if nxt is not None and nxt.op_type == "Pad":
                nxt = only_consumer(nxt.output[0])
        if nxt is not None and nxt.op_type == "InstanceNormalization":
            epsilon = next((a.f for a in nxt.attribute if a.name == "epsilon"), 1e-5)
            found.append((node, group, epsilon))
    return found


#: Equalisation scales only channels whose variance is at least this many times the norm's eps on every
#: calibration input: there the eps changes the normalised output by under 5%.
VARIANCE_OVER_EPS = 10.0


def equalise_before_norms(model, feeds: Sequence[dict[str, np.ndarray]]) -> tuple[object, dict[str, float]]:
    """Rescale the output channels of every convolution that feeds an instance norm so that all its channels
    span the same range on ``feeds`` (the calibration inputs); returns the model and, per conv, the largest
    factor applied.

    Why: ONNX Runtime quantises a conv's output per tensor (one scale), and the instance norm after it divides
    each channel by its own spread, so a channel whose values span a tenth of the tensor's range comes out of
    the norm with ten times the quantisation noise. The norm is invariant to a positive scale ``s`` of its input
    channel up to its ``eps``: ``(s x - s mean) / sqrt(s^2 var + eps)``. So scaling conv channel ``c``'s weights
    and bias by ``s_c = max range / range_c`` (>= 1) changes nothing in float and gives every channel the full
    8 bits; channels whose variance on some calibration input is below ``VARIANCE_OVER_EPS`` times ``eps`` (where
    ``eps`` matters) keep ``s_c = 1``. Channels that share a norm channel through a ``DepthToSpace`` share one
    factor."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    targets = normalised_convolutions(model)
    if not targets:
        return model, {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [node.output[0] for node, _, _ in targets]
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    spreads: list[np.ndarray | None] = [None] * len(targets)
    variances: list[np.ndarray | None] = [None] * len(targets)
    for feed in feeds:
        outputs = session.run(names, feed)
        for index, ((_, group, _), output) in enumerate(zip(targets, outputs)):
            batch, channels, height, width = output.shape
            grouped = output.reshape(batch, channels // group, group * height * width).astype(np.float64)
            centred = grouped - grouped.mean(axis=2, keepdims=True)
            spread = np.abs(centred).max(axis=(0, 2))
            variance = np.square(centred).mean(axis=2).min(axis=0)
            spreads[index] = spread if spreads[index] is None else np.maximum(spreads[index], spread)
            variances[index] = variance if variances[index] is None else np.minimum(variances[index], variance)

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    largest: dict[str, float] = {}
    for (node, group, epsilon), spread, variance in zip(targets, spreads, variances):
        scalable = variance >= VARIANCE_OVER_EPS * epsilon
        factors = np.where(scalable, spread.max() / np.where(scalable, spread, 1.0), 1.0).astype(np.float32)
        per_output = np.repeat(factors, group)
        for position, name in enumerate(node.input[1:3], start=1):
            tensor = initializers.get(name)
            if tensor is None:
                raise ValueError(f"conv {node.name}: input {position} ({name}) is not a constant; run quant_pre_process first")
            values = numpy_helper.to_array(tensor)
            shape = (-1,) + (1,) * (values.ndim - 1)
            tensor.CopyFrom(numpy_helper.from_array((values * per_output.reshape(shape)).astype(values.dtype), name))
        largest[node.name] = float(factors.max())
    return model, largest


#: Operators that only move values (no arithmetic): a per-tensor (de)quantisation commutes with them.
VALUE_MOVING_OPS = ("DepthToSpace", "SpaceToDepth", "Transpose", "Reshape", "Slice", "Pad")


def _producers(model) -> dict[str, object]:
    return {name: node for node in model.graph.node for name in node.output}


def _graph_outputs(model) -> set[str]:
    return {output.name for output in model.graph.output}


def _movable(node, constants: dict) -> bool:
    return node.op_type in VALUE_MOVING_OPS and (node.op_type != "Pad" or _moves_values_only(node, constants))


def move_quantisation_across_data_movement(model) -> tuple[int, int, int]:
    """Rewrite a QDQ model (in place) so that reshuffling runs on uint8 instead of float32; returns how many
    ``DequantizeLinear`` and ``QuantizeLinear`` nodes moved and how many ``Relu`` nodes were dropped.

    * ``DequantizeLinear -> DepthToSpace -> Pad (crop) -> ...`` becomes ``DepthToSpace -> Pad -> DequantizeLinear``:
      the sub-pixel interleave after a quantised conv moves a quarter of the bytes.
    * ``... -> Relu -> Pad (reflect) -> QuantizeLinear`` becomes ``QuantizeLinear -> Pad``, and the ``Relu``
      is dropped when the quantisation's zero point is 0 (quantising clamps negatives to 0 then) and nothing
      else reads it: the padding before each quantised conv moves uint8, and one float pass goes.

    Exact: these operators only move values (``VALUE_MOVING_OPS``; pads that add a constant are left alone),
    and the scales are per tensor."""
    from onnx import numpy_helper

    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    outputs = _graph_outputs(model)
    moved_dq = moved_q = dropped = 0
    for dq in [n for n in model.graph.node if n.op_type == "DequantizeLinear"]:
        consumers = _consumers(model)
        chain = []
        tail = dq.output[0]
        while True:
            after = consumers.get(tail, [])
            if len(after) != 1 or tail in outputs or not _movable(after[0], constants) or after[0].input[0] != tail:
                break
            chain.append(after[0])
            tail = after[0].output[0]
        if not chain or constants.get(dq.input[0]) is not None:
            continue
        users = consumers.get(tail, [])
        chain[0].input[0] = dq.input[0]
        dq.input[0] = tail
        dequantised = f"{tail}_dequantized"
        dq.output[0] = dequantised
        for user in users:
            for position, name in enumerate(user.input):
                if name == tail:
                    user.input[position] = dequantised
        _forget_types(model, {node.output[0] for node in chain})
        moved_dq += 1
    for q in [n for n in model.graph.node if n.op_type == "QuantizeLinear"]:
        producers, consumers = _producers(model), _consumers(model)
        chain: list = []  # the value-moving operators between ``head`` and ``q``, in order
        head = q.input[0]
        while head in producers and _movable(producers[head], constants) and len(consumers.get(head, [])) == 1:
            chain.insert(0, producers[head])
            head = producers[head].input[0]
        relu = producers.get(head)
        zero_point = constants.get(q.input[2]) if len(q.input) > 2 else None
        if (
            relu is not None and relu.op_type == "Relu" and len(consumers.get(head, [])) == 1 and head not in outputs
            and zero_point is not None and numpy_helper.to_array(zero_point).dtype == np.uint8
            and not numpy_helper.to_array(zero_point).any()
        ):
            head = relu.input[0]
            model.graph.node.remove(relu)
            dropped += 1
        quantised = q.output[0]
        q.input[0] = head
        if chain:
            q.output[0] = f"{head}_quantized"
            chain[0].input[0] = q.output[0]
            for user in consumers.get(quantised, []):
                for position, name in enumerate(user.input):
                    if name == quantised:
                        user.input[position] = chain[-1].output[0]
            _forget_types(model, {node.output[0] for node in chain})
            moved_q += 1
    _topological_sort(model)
    return moved_dq, moved_q, dropped


def _forget_types(model, names: set[str]) -> None:
    """Drop the inferred ``value_info`` of tensors whose type changed (float32 -> uint8)."""
    kept = [info for info in model.graph.value_info if info.name not in names]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)


def _moves_values_only(pad, constants: dict) -> bool:
    """Whether a ``Pad`` only crops or reflects/replicates (padding a uint8 tensor with the constant 0 would
    add ``-zero_point * scale``, not 0)."""
    from onnx import numpy_helper

    mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
    if mode != b"constant":
        return True
    pads = constants.get(pad.input[1]) if len(pad.input) > 1 else None
    return pads is not None and bool((numpy_helper.to_array(pads) <= 0).all())


def _topological_sort(model) -> None:
    """Reorder ``model.graph.node`` so that every node comes after the producers of its inputs (in place)."""
    available = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    pending = list(model.graph.node)
    ordered = []
    while pending:
        progress = False
        for node in list(pending):
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                pending.remove(node)
                progress = True
        if not progress:
            raise ValueError(f"graph has a cycle or missing inputs at {pending[0].name}")
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del model.graph.node[:]
    model.graph.node.extend(copies)


def _values_beyond(count: int, percentile: float) -> int:
    """How many of ``count`` values lie beyond the ``percentile`` (at least 1; rounded against float noise)."""
    return max(1, math.ceil(round(count * (100.0 - percentile) / 100.0, 6)))


def percentile_ranges(model, feeds: Sequence[dict[str, np.ndarray]], names: Sequence[str],
                      percentile: float = PERCENTILE) -> dict[str, tuple[float, float]]:
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
        for name, values in zip(names, session.run(list(names), feed)):
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


def quantize_int8(
    float_path: str | Path, out_path: str | Path, photos: Sequence[np.ndarray],
    weight_cases: Sequence[np.ndarray | None] = (None,), *, method: str = "minmax",
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
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"int8 calibration method {method!r} is unknown; choose one of {', '.join(CALIBRATION_METHODS)}")
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
        ranges: dict[str, tuple[float, float]] = {}
        if method == "percentile":
            ranges = percentile_ranges(model, feeds, sorted({t for node in convs[FLOAT_CONVS:] for t in (node.input[0], node.output[0])}))
        ranges |= {node.output[0]: (-OUTPUT_LOGIT_RANGE, OUTPUT_LOGIT_RANGE) for node in convs if _reaches_sigmoid(model, node.output[0])}
        overrides = {name: [{"rmin": np.float32(low), "rmax": np.float32(high)}] for name, (low, high) in ranges.items()}
        with _quiet_root_logger():
            quantize_static(
                str(equalised), str(quantised), _calibration_reader(feeds),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], nodes_to_exclude=[node.name for node in convs[:FLOAT_CONVS]],
                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, extra_options={"TensorQuantOverrides": overrides},
            )
        model = onnx.load(str(quantised))
    moved_dq, moved_q, dropped = move_quantisation_across_data_movement(model)
    properties = {p.key: p.value for p in float_model.metadata_props} | dict(metadata or {})
    del model.metadata_props[:]
    for key, value in properties.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = float_model.doc_string
    onnx.save(model, str(out_path))
    return {"quantised_convs": len(convs) - FLOAT_CONVS, "float_convs": FLOAT_CONVS, "equalised_convs": len(factors),
            "uint8_moves": moved_dq + moved_q, "relus_dropped": dropped, "calibration_runs": len(feeds)}
