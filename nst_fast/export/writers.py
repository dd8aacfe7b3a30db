"""Writing the exported files: float32 (or float16-inside) ONNX, the uint8 deployment ONNX and TorchScript, all with
the metadata of ``nst_fast.export.metadata``."""

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
from nst_fast.export.graphs import Float16Transformer, SizeCheckedTransformer, Uint8Transformer
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


def _example_weights(info: CheckpointInfo, *batch: int) -> tuple[Tensor, ...]:
    """An example ``style_weights`` input (``batch`` rows, or one vector) for multi-condition networks; none else."""
    if info_conditions(info) == 1:
        return ()
    return (torch.full((*batch, len(info.styles)), 1.0 / (len(info.styles) + int(info.identity))),)


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
    network: TransformerNet,
    path: Path,
    info: CheckpointInfo,
    *,
    opset: int = 18,
    thumbnails: list[str | None] | None = None,
) -> None:
    """The deployment ONNX model: one uint8 HWC RGB image in (and ``style_weights [S]`` for multi-condition
    networks), one out; dynamic height and width."""
    _, height, width = _dims()
    examples = (torch.randint(0, 256, (64, 96, 3), dtype=torch.uint8), *_example_weights(info))
    dynamic = ({0: height, 1: width}, None)[: len(examples)]
    module = Uint8Transformer(exported_interface(network, info))
    _export_onnx(module, examples, dynamic, path, onnx_metadata(info, LAYOUT_HWC_UINT8, "fp32", thumbnails), opset)


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
