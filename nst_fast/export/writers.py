"""Writing the exported files: float32 (or float16-inside) ONNX, the uint8 deployment ONNX (the float32 graph wrapped
in uint8 input and output) and TorchScript, all with the metadata of ``nst_fast.export.metadata``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nst_fast import __version__
from nst_fast.checkpoint import CheckpointInfo
from nst_fast.conventions import (
    INPUT_NAME,
    LAYOUT_HWC_UINT8,
    LAYOUT_NCHW_FLOAT,
    META_INPUT,
    OUTPUT_NAME,
    TORCHSCRIPT_META_FILE,
    WEIGHTS_NAME,
)
from nst_fast.export.graphs import Float16Transformer, SizeCheckedTransformer
from nst_fast.export.metadata import onnx_metadata
from nst_fast.interface import exported_interface, info_conditions
from nst_fast.models.transformer import MIN_INPUT_SIZE, TransformerNet


def _export_onnx(
    module: nn.Module,
    examples: tuple[Tensor, ...],
    dynamic: tuple[dict[int, Any] | None, ...],
    path: Path,
    metadata: dict[str, str],
    opset: int,
) -> None:
    with warnings.catch_warnings():
        # The image and the style weights share one batch dimension on purpose; the exporter says so per export.
        warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used", category=UserWarning)
        program = torch.onnx.export(
            module.eval(),
            examples,
            dynamo=True,
            verbose=False,
            opset_version=opset,
            external_data=False,
            input_names=[INPUT_NAME, WEIGHTS_NAME][: len(examples)],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic,
        )
    graph = program.model.graph
    # The exporter names the output's dims by formulas (e.g. "Min(height, 4*((height + ...)//4))"), which equal
    # the input's; name them as the input's so that consumers (TensorRT profiles, shape checks) see it.
    graph.outputs[0].shape = (
        graph.inputs[0].shape.copy() if hasattr(graph.inputs[0].shape, "copy") else graph.inputs[0].shape
    )
    program.model.metadata_props.update(metadata)
    program.model.doc_string = f"nst-fast {__version__} style transfer network; {metadata[META_INPUT]}"
    program.save(path, external_data=False)


def _dims() -> tuple[Any, Any, Any]:
    from torch.export import Dim

    return Dim("batch", min=1), Dim("height", min=MIN_INPUT_SIZE), Dim("width", min=MIN_INPUT_SIZE)


def _example_weights(info: CheckpointInfo, batch: int) -> tuple[Tensor, ...]:
    """An example ``style_weights`` input (``batch`` rows) for multi-condition networks; none else."""
    if info_conditions(info) == 1:
        return ()
    return (torch.full((batch, len(info.styles)), 1.0 / (len(info.styles) + int(info.identity))),)


def export_onnx(
    network: TransformerNet,
    path: Path,
    info: CheckpointInfo,
    *,
    opset: int = 18,
    fp16: bool = False,
    thumbnails: list[str | None] | None = None,
) -> None:
    """The float32-I/O ONNX model (float16 inside when ``fp16``), dynamic batch, height and width; with
    ``style_weights [N, S]`` as second input for multi-condition networks. ``thumbnails``: see ``onnx_metadata``."""
    batch, height, width = _dims()
    module = exported_interface(Float16Transformer(network) if fp16 else network, info)
    examples = (torch.rand(2, 3, 64, 96), *_example_weights(info, 2))
    dynamic = ({0: batch, 2: height, 3: width}, {0: batch})[: len(examples)]
    metadata = onnx_metadata(info, LAYOUT_NCHW_FLOAT, "fp16" if fp16 else "fp32", thumbnails)
    _export_onnx(module, examples, dynamic, path, metadata, opset)


def export_onnx_uint8(
    float_path: Path,
    path: Path,
    info: CheckpointInfo,
    *,
    thumbnails: list[str | None] | None = None,
) -> None:
    """The deployment ONNX model: one uint8 HWC RGB image in (and ``style_weights [S]`` for multi-condition
    networks), one out; dynamic height and width. Built from the float32 file ``float_path`` (``export_onnx``) by
    wrapping its graph, the same maths as ``(network(image[None] / 255) * 255).round().clamp(0, 255)`` in HWC,
    without a second trace of the network."""
    import onnx

    model = onnx.load(str(float_path))
    _wrap_in_uint8_io(model.graph)
    metadata = onnx_metadata(info, LAYOUT_HWC_UINT8, "fp32", thumbnails)
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = f"nst-fast {__version__} style transfer network; {metadata[META_INPUT]}"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _wrap_in_uint8_io(graph: Any) -> None:
    """Give a float32 NCHW graph (``image [N, 3, H, W]`` and optionally ``style_weights [N, S]`` in, ``stylized``
    out) uint8 HWC image input and output and a ``style_weights [S]`` vector, in place: the float graph's inputs and
    output become inner tensors (``<name>_nchw``) fed and read by the new nodes."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nested = sorted({node.op_type for node in graph.node for attribute in node.attribute if attribute.g.node})
    if nested:  # their bodies could read the renamed tensors from the outer scope
        raise ValueError(f"cannot wrap a graph with nested graphs ({', '.join(nested)}) in uint8 input and output")
    inner = {value.name: f"{value.name}_nchw" for value in [*graph.input, *graph.output]}
    for node in graph.node:
        node.input[:] = [inner.get(name, name) for name in node.input]
        node.output[:] = [inner.get(name, name) for name in node.output]
    for value in graph.value_info:
        value.name = inner.get(value.name, value.name)
    image, *weights = graph.input
    height, width = image.type.tensor_type.shape.dim[2:]
    constants = {
        "uint8_io_axis0": np.array([0], dtype=np.int64),
        "uint8_io_255": np.array(255.0, dtype=np.float32),
        "uint8_io_0": np.array(0.0, dtype=np.float32),
    }
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    nodes = [
        helper.make_node("Transpose", [INPUT_NAME], ["uint8_io_chw"], perm=[2, 0, 1]),
        helper.make_node("Unsqueeze", ["uint8_io_chw", "uint8_io_axis0"], ["uint8_io_nchw"]),
        helper.make_node("Cast", ["uint8_io_nchw"], ["uint8_io_float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["uint8_io_float", "uint8_io_255"], [inner[INPUT_NAME]]),
    ]
    new_inputs = [_value_info(INPUT_NAME, TensorProto.UINT8, [height, width, 3])]
    if weights:
        nodes.append(helper.make_node("Unsqueeze", [WEIGHTS_NAME, "uint8_io_axis0"], [inner[WEIGHTS_NAME]]))
        new_inputs.append(_value_info(WEIGHTS_NAME, TensorProto.FLOAT, weights[0].type.tensor_type.shape.dim[1:]))
    network_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(
        [
            *nodes,
            *network_nodes,
            helper.make_node("Mul", [inner[OUTPUT_NAME], "uint8_io_255"], ["uint8_io_scaled"]),
            helper.make_node("Round", ["uint8_io_scaled"], ["uint8_io_rounded"]),
            helper.make_node("Clip", ["uint8_io_rounded", "uint8_io_0", "uint8_io_255"], ["uint8_io_clipped"]),
            helper.make_node("Cast", ["uint8_io_clipped"], ["uint8_io_levels"], to=TensorProto.UINT8),
            helper.make_node("Squeeze", ["uint8_io_levels", "uint8_io_axis0"], ["uint8_io_chw_out"]),
            helper.make_node("Transpose", ["uint8_io_chw_out"], [OUTPUT_NAME], perm=[1, 2, 0]),
        ]
    )
    del graph.input[:]
    graph.input.extend(new_inputs)
    del graph.output[:]
    graph.output.append(_value_info(OUTPUT_NAME, TensorProto.UINT8, [height, width, 3]))


def _value_info(name: str, elem_type: int, dims: list[Any]) -> Any:
    """A tensor's ``ValueInfoProto`` whose dims are copies of ``dims`` (``TensorShapeProto.Dimension``, named,
    numbered or unknown as they are) or the integer 3."""
    from onnx import helper

    value = helper.make_tensor_value_info(name, elem_type, None)
    shape = value.type.tensor_type.shape
    for dim in dims:
        entry = shape.dim.add()
        if isinstance(dim, int):
            entry.dim_value = dim
        else:
            entry.CopyFrom(dim)
    return value


def export_torchscript(
    network: TransformerNet, path: Path, info: CheckpointInfo, thumbnails: list[str | None] | None = None
) -> None:
    """``torch.jit.trace`` at a size that needs padding (the pad is computed from the traced input's shape,
    so other sizes work too; verification checks it), behind the size check (``SizeCheckedTransformer``),
    saved with the metadata as an extra file. Multi-condition networks take ``(image, style_weights [N, S])``
    like the ONNX model."""
    examples = (torch.rand(1, 3, 66, 94), *_example_weights(info, 1))
    with torch.no_grad():
        traced = torch.jit.trace(exported_interface(SizeCheckedTransformer(network), info), examples)
    metadata = onnx_metadata(info, LAYOUT_NCHW_FLOAT, "fp32", thumbnails)
    torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_META_FILE: json.dumps(metadata)})
