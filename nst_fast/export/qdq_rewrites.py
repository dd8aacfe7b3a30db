"""Exact graph rewrites around int8 quantisation (ONNX, torch-free): equalising the output channels of the
convolutions that feed instance norms before quantising, and moving (de)quantisation across operators that only
move values after it, so that padding and sub-pixel interleaves run on uint8."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
        for index, ((_, group, _), output) in enumerate(zip(targets, outputs, strict=False)):
            batch, channels, height, width = output.shape
            grouped = output.reshape(batch, channels // group, group * height * width).astype(np.float64)
            centred = grouped - grouped.mean(axis=2, keepdims=True)
            spread = np.abs(centred).max(axis=(0, 2))
            variance = np.square(centred).mean(axis=2).min(axis=0)
            spreads[index] = spread if spreads[index] is None else np.maximum(spreads[index], spread)
            variances[index] = variance if variances[index] is None else np.minimum(variances[index], variance)

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    largest: dict[str, float] = {}
    for (node, group, epsilon), spread, variance in zip(targets, spreads, variances, strict=False):
        scalable = variance >= VARIANCE_OVER_EPS * epsilon
        factors = np.where(scalable, spread.max() / np.where(scalable, spread, 1.0), 1.0).astype(np.float32)
        per_output = np.repeat(factors, group)
        for position, name in enumerate(node.input[1:3], start=1):
            tensor = initializers.get(name)
            if tensor is None:
                raise ValueError(
                    f"conv {node.name}: input {position} ({name}) is not a constant; run quant_pre_process first"
                )
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
    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    moved_dq = sum(
        _sink_dequantisation(model, dq, constants)
        for dq in [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    )
    moved_q = dropped = 0
    for q in [n for n in model.graph.node if n.op_type == "QuantizeLinear"]:
        moved, relu_dropped = _hoist_quantisation(model, q, constants)
        moved_q += moved
        dropped += relu_dropped
    _topological_sort(model)
    return moved_dq, moved_q, dropped


def _sink_dequantisation(model, dq, constants: dict) -> int:
    """Move ``dq`` below the chain of value-moving operators that follows it; 1 if it moved, else 0."""
    consumers, outputs = _consumers(model), _graph_outputs(model)
    chain = []
    tail = dq.output[0]
    while True:
        after = consumers.get(tail, [])
        if len(after) != 1 or tail in outputs or not _movable(after[0], constants) or after[0].input[0] != tail:
            break
        chain.append(after[0])
        tail = after[0].output[0]
    if not chain or constants.get(dq.input[0]) is not None:
        return 0
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
    return 1


def _hoist_quantisation(model, q, constants: dict) -> tuple[int, int]:
    """Move ``q`` above the chain of value-moving operators before it, dropping a ``Relu`` above them when the zero
    point is 0; returns (1 if it moved, 1 if a Relu was dropped)."""
    from onnx import numpy_helper

    producers, consumers, outputs = _producers(model), _consumers(model), _graph_outputs(model)
    chain: list = []  # the value-moving operators between ``head`` and ``q``, in order
    head = q.input[0]
    while head in producers and _movable(producers[head], constants) and len(consumers.get(head, [])) == 1:
        chain.insert(0, producers[head])
        head = producers[head].input[0]
    relu = producers.get(head)
    zero_point = constants.get(q.input[2]) if len(q.input) > 2 else None
    dropped = 0
    if (
        relu is not None
        and relu.op_type == "Relu"
        and len(consumers.get(head, [])) == 1
        and head not in outputs
        and zero_point is not None
        and numpy_helper.to_array(zero_point).dtype == np.uint8
        and not numpy_helper.to_array(zero_point).any()
    ):
        head = relu.input[0]
        model.graph.node.remove(relu)
        dropped = 1
    quantised = q.output[0]
    q.input[0] = head
    if not chain:
        return 0, dropped
    q.output[0] = f"{head}_quantized"
    chain[0].input[0] = q.output[0]
    for user in consumers.get(quantised, []):
        for position, name in enumerate(user.input):
            if name == quantised:
                user.input[position] = chain[-1].output[0]
    _forget_types(model, {node.output[0] for node in chain})
    return 1, dropped


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
    for copy, node in zip(copies, ordered, strict=False):
        copy.CopyFrom(node)
    del model.graph.node[:]
    model.graph.node.extend(copies)
