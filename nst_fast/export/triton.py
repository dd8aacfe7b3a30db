"""A Triton Inference Server model repository for an exported float32 NCHW ONNX model, checked against the graph.

``write_triton_model(onnx_path, repository, name, options)`` writes ``repository/NAME/config.pbtxt`` and
``repository/NAME/1/model.onnx`` (a copy of the ONNX file) for Triton's ONNX Runtime backend
(``platform: "onnxruntime_onnx"``), with dynamic batching, one instance group and, optionally, ONNX Runtime's
TensorRT execution provider in fp16 with an optimisation profile covering the batch and image sizes served.
Input and output names, data types and dims are read from the ONNX graph (``-1`` for dynamic dims; the batch
dim is left out of ``dims``, as Triton requires when ``max_batch_size > 0``).

The written text is then parsed with Triton's own ``ModelConfig`` protobuf schema (``tritonclient``, an optional
dependency: ``pip install 'nst-fast[triton]'``) and compared with the graph by ``check_triton_config``, so that a
config that Triton would refuse to load, or that disagrees with the model, fails the export instead.

Only the float32 ``[N, 3, H, W]`` model is served: the uint8 model takes one ``[H, W, 3]`` image and cannot batch.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_fast.conventions import MIN_SIDE
from nst_fast.errors import NstFastError

#: Triton's backend for ONNX files (the ``platform`` of a ``config.pbtxt``).
ONNX_PLATFORM = "onnxruntime_onnx"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
MODEL_VERSION = "1"
INSTANCE_KINDS = ("KIND_GPU", "KIND_CPU")
#: Keys under which ``config.pbtxt``'s ``parameters`` carry the style names and identity flag (JSON / ``true``,
#: ``false``), so that clients can read them from Triton's model-config endpoint. ONNX Runtime's backend looks
#: up its own keys only and ignores these.
PARAM_STYLES = "nst_fast.styles"
PARAM_IDENTITY = "nst_fast.identity"
#: ONNX ``TensorProto`` element types -> Triton data types (those an nst-fast export can have).
ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 10: "TYPE_FP16", 6: "TYPE_INT32", 7: "TYPE_INT64"}
#: Keys of the ``tensorrt`` accelerator's ``parameters`` that the ONNX Runtime backend documents (README of
#: triton-inference-server/onnxruntime_backend, "Parameter mapping"); the ones written here are a subset.
TENSORRT_PARAMETERS = frozenset(
    {
        "precision_mode",
        "max_workspace_size_bytes",
        "trt_max_partition_iterations",
        "trt_min_subgraph_size",
        "int8_calibration_table_name",
        "int8_use_native_calibration_table",
        "trt_dla_enable",
        "trt_dla_core",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_engine_cache_prefix",
        "trt_dump_subgraphs",
        "trt_force_sequential_engine_build",
        "trt_context_memory_sharing_enable",
        "trt_layer_norm_fp32_fallback",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_force_timing_cache",
        "trt_detailed_build_log",
        "trt_build_heuristics_enable",
        "trt_sparsity_enable",
        "trt_builder_optimization_level",
        "trt_auxiliary_streams",
        "trt_tactic_sources",
        "trt_extra_plugin_lib_paths",
        "trt_profile_min_shapes",
        "trt_profile_max_shapes",
        "trt_profile_opt_shapes",
        "trt_cuda_graph_enable",
        "trt_dump_ep_context_model",
        "trt_ep_context_file_path",
        "trt_ep_context_embed_mode",
    }
)
PROFILE_KEYS = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
INSTALL_HINT = "pip install 'nst-fast[triton]' (or: pip install 'tritonclient[grpc]')"


class TritonConfigError(NstFastError, ValueError):
    """Unusable Triton options, a missing ``tritonclient``, or a ``config.pbtxt`` that Triton's schema refuses or
    that does not match the ONNX graph: one line saying what and what to do."""


@dataclass(frozen=True)
class TritonOptions:
    """How the model is served (``export.triton.*`` in the export config).

    ``max_batch_size``: largest batch dynamic batching forms (>= 1); ``max_queue_delay_us``: how long a request
    may wait for others to batch with, in microseconds; ``instance_kind``: ``KIND_GPU`` or ``KIND_CPU``;
    ``tensorrt``: ONNX Runtime's TensorRT provider in fp16 (GPU instances), with an optimisation profile from
    batch 1 and ``MIN_SIDE`` pixels to ``max_batch_size`` and ``trt_max_side`` pixels, tuned for
    ``max_batch_size`` images of ``trt_opt_side`` x ``trt_opt_side``.
    """

    max_batch_size: int = 8
    max_queue_delay_us: int = 2000
    instance_kind: str = "KIND_GPU"
    tensorrt: bool = False
    trt_opt_side: int = 512
    trt_max_side: int = 1024

    def check(self) -> None:
        """Raise ``TritonConfigError`` naming the ``export.triton.*`` key of an unusable value."""
        _check_int("export.triton.max_batch_size", self.max_batch_size, 1)
        _check_int("export.triton.max_queue_delay_us", self.max_queue_delay_us, 0)
        if self.instance_kind not in INSTANCE_KINDS:
            raise TritonConfigError(
                f"export.triton.instance_kind={self.instance_kind!r} is not one of {', '.join(INSTANCE_KINDS)}"
            )
        _check_int("export.triton.trt_opt_side", self.trt_opt_side, MIN_SIDE)
        _check_int("export.triton.trt_max_side", self.trt_max_side, self.trt_opt_side)
        if not isinstance(self.tensorrt, bool):
            raise TritonConfigError(f"export.triton.tensorrt={self.tensorrt!r} must be true or false")
        if self.tensorrt and self.instance_kind != "KIND_GPU":
            raise TritonConfigError(
                f"export.triton.tensorrt=true needs GPU instances, but export.triton.instance_kind={self.instance_kind}: "
                "set export.triton.instance_kind=KIND_GPU or export.triton.tensorrt=false"
            )


def _check_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TritonConfigError(f"{key}={value!r} must be an integer >= {minimum}")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, Triton data type, dims with ``-1`` where the graph's dim is dynamic."""

    name: str
    data_type: str
    dims: tuple[int, ...]


def triton_model_name(name: str) -> str:
    """A Triton model name (the folder name, and a path segment of its URLs) from an export's file stem:
    characters other than letters, digits, ``_``, ``.`` and ``-`` become ``_`` (``starry+wave`` -> ``starry_wave``),
    since ``+`` reads as a space in URL queries."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "model"


def graph_tensors(model: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ``onnx.ModelProto`` (initializers listed as inputs are left out)."""
    initializers = {tensor.name for tensor in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type not in ONNX_TO_TRITON:
            raise TritonConfigError(
                f"{value.name!r} has ONNX element type {tensor_type.elem_type}, not one Triton is given here"
            )
        dims = tuple(
            dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else -1 for dim in tensor_type.shape.dim
        )
        return TensorSpec(value.name, ONNX_TO_TRITON[tensor_type.elem_type], dims)

    inputs = [spec(value) for value in model.graph.input if value.name not in initializers]
    return inputs, [spec(value) for value in model.graph.output]


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    from google.protobuf import text_encoding

    return '"' + text_encoding.CEscape(text, as_utf8=True) + '"'


def _dims(dims: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def profile_shapes(inputs: list[TensorSpec], options: TritonOptions) -> dict[str, str]:
    """The TensorRT optimisation profile (``trt_profile_{min,opt,max}_shapes``, ``name:AxBx...`` joined by ``,``):
    the batch dim from 1 to ``max_batch_size`` (opt: ``max_batch_size``), other dynamic dims (height and width)
    from ``MIN_SIDE`` to ``trt_max_side`` (opt: ``trt_opt_side``), static dims as they are."""
    batch = options.max_batch_size
    bounds = {"min": (1, MIN_SIDE), "opt": (batch, options.trt_opt_side), "max": (batch, options.trt_max_side)}
    shapes = {}
    for which, (batch_size, side) in bounds.items():
        parts = []
        for tensor in inputs:
            dims = [batch_size] + [side if d == -1 else d for d in tensor.dims[1:]]
            parts.append(f"{tensor.name}:" + "x".join(str(d) for d in dims))
        shapes[f"trt_profile_{which}_shapes"] = ",".join(parts)
    return shapes


def triton_config_text(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    options: TritonOptions,
    styles: list[str],
    identity: bool,
) -> str:
    """The ``config.pbtxt`` for the graph's ``inputs`` and ``outputs`` (batch dim first, dynamic)."""
    lines = [
        "# Written by nst-fast's export (export.triton.enabled=true): Triton's ONNX Runtime backend serving model.onnx,",
        "# the float32 [N, 3, H, W] model (see README.md, 'Serve with Triton'). Names, types and dims are the",
        "# ONNX graph's; the batch dim is left out of dims since max_batch_size > 0.",
        f"name: {_quote(name)}",
        f"platform: {_quote(ONNX_PLATFORM)}",
        f"max_batch_size: {options.max_batch_size}",
    ]
    for section, tensors in (("input", inputs), ("output", outputs)):
        lines.append(f"{section} [")
        entries = [
            f"  {{ name: {_quote(t.name)} data_type: {t.data_type} dims: {_dims(t.dims[1:])} }}" for t in tensors
        ]
        lines.append(",\n".join(entries))
        lines.append("]")
    lines += [
        "# Batches requests of the same shape only (same H and W): resize on the client to a fixed size.",
        f"dynamic_batching {{ max_queue_delay_microseconds: {options.max_queue_delay_us} }}",
        f"instance_group [ {{ count: 1 kind: {options.instance_kind} }} ]",
        f"parameters {{ key: {_quote(PARAM_STYLES)} value: {{ string_value: {_quote(json.dumps(styles))} }} }}",
        f"parameters {{ key: {_quote(PARAM_IDENTITY)} value: {{ string_value: {_quote(str(identity).lower())} }} }}",
    ]
    if options.tensorrt:
        parameters = {"precision_mode": "FP16", **profile_shapes(inputs, options)}
        lines += [
            "# ONNX Runtime's TensorRT provider in fp16; its engine is built once per model load (can take minutes)",
            "# for the profile below: requests outside its batch and size range are outside what it was built for.",
            "optimization { execution_accelerators {",
            "  gpu_execution_accelerator: [ {",
            '    name: "tensorrt"',
            *(f"    parameters {{ key: {_quote(k)} value: {_quote(v)} }}" for k, v in parameters.items()),
            "  } ]",
            "} }",
        ]
    return "\n".join(lines) + "\n"


def model_config_schema() -> Any:
    """Triton's ``ModelConfig`` protobuf class; ``TritonConfigError`` with an install hint without tritonclient."""
    try:
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError) as error:  # tritonclient.grpc raises RuntimeError without grpcio
        raise TritonConfigError(
            f"export.triton.enabled=true validates config.pbtxt with Triton's ModelConfig schema from tritonclient, which "
            f"cannot be imported ({type(error).__name__}: {error}): {INSTALL_HINT}"
        ) from error
    return model_config_pb2.ModelConfig


def parse_triton_config(text: str) -> Any:
    """``text`` parsed as Triton's ``ModelConfig`` (protobuf text format); ``TritonConfigError`` if it does not."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, model_config_schema()())
    except text_format.ParseError as error:
        raise TritonConfigError(f"does not parse as Triton's ModelConfig: {error}") from error


def check_triton_config(text: str, model: Any, name: str) -> Any:
    """Parse ``text`` with Triton's schema and check it against the ONNX ``model`` served as ``name``: platform,
    batch dim, input and output names, data types and dims, instance kinds, and the TensorRT parameters and
    profile. Returns the parsed ``ModelConfig``; raises ``TritonConfigError`` listing every mismatch."""
    config = parse_triton_config(text)
    from tritonclient.grpc import model_config_pb2

    inputs, outputs = graph_tensors(model)
    problems: list[str] = []
    if config.name and config.name != name:
        problems.append(f"name {config.name!r} is not the model folder's name {name!r}")
    if config.platform != ONNX_PLATFORM and config.backend != "onnxruntime":
        problems.append(f"platform {config.platform!r} is not {ONNX_PLATFORM!r}")
    batching = config.max_batch_size > 0
    if config.max_batch_size < 0:
        problems.append(f"max_batch_size {config.max_batch_size} is negative")
    if config.HasField("dynamic_batching") and not batching:
        problems.append("dynamic_batching needs max_batch_size > 0")
    for section, declared, graph in (("input", config.input, inputs), ("output", config.output, outputs)):
        problems += _compare_tensors(section, declared, graph, batching, model_config_pb2)
    kinds = [model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) for group in config.instance_group]
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    if accelerators and kinds and all(kind == "KIND_CPU" for kind in kinds):
        problems.append("a GPU execution accelerator is set but every instance group is KIND_CPU")
    for accelerator in accelerators:
        if accelerator.name == "tensorrt":
            problems += _check_tensorrt(dict(accelerator.parameters), inputs, config.max_batch_size)
    if problems:
        raise TritonConfigError("; ".join(problems))
    return config


def _compare_tensors(section: str, declared: Any, graph: list[TensorSpec], batching: bool, schema: Any) -> list[str]:
    problems = []
    declared_names = [tensor.name for tensor in declared]
    graph_names = [tensor.name for tensor in graph]
    if sorted(declared_names) != sorted(graph_names):
        return [f"{section} names {declared_names} are not the ONNX graph's {graph_names}"]
    by_name = {tensor.name: tensor for tensor in declared}
    for tensor in graph:
        entry = by_name[tensor.name]
        data_type = schema.DataType.Name(entry.data_type)
        if data_type != tensor.data_type:
            problems.append(
                f"{section} {tensor.name!r} data_type {data_type} is not the ONNX graph's {tensor.data_type}"
            )
        expected = list(tensor.dims)
        if batching:
            if not expected or expected[0] != -1:
                problems.append(
                    f"{section} {tensor.name!r}: max_batch_size > 0 needs a dynamic first (batch) dim, but the ONNX "
                    f"graph's dims are {expected}"
                )
                continue
            expected = expected[1:]
        if list(entry.dims) != expected:
            note = f" (its {list(tensor.dims)} without the batch dim)" if batching else ""
            problems.append(
                f"{section} {tensor.name!r} dims {list(entry.dims)} are not the ONNX graph's {expected}{note}"
            )
        if entry.HasField("reshape"):
            problems.append(f"{section} {tensor.name!r} has a reshape, which the ONNX graph does not need")
    return problems


def _parse_profile(text: str) -> dict[str, list[int]]:
    shapes = {}
    for part in text.split(","):
        tensor, _, dims = part.rpartition(":")
        shapes[tensor] = [int(d) for d in dims.split("x")]
    return shapes


def _check_tensorrt(parameters: dict[str, str], inputs: list[TensorSpec], max_batch_size: int) -> list[str]:
    """The TensorRT accelerator's parameters: known keys, a valid precision, and a profile that names every input
    with its rank and static dims, batch sizes within ``max_batch_size``, and min <= opt <= max."""
    problems = [
        f"tensorrt parameter {key!r} is not one the ONNX Runtime backend knows"
        for key in sorted(parameters)
        if key not in TENSORRT_PARAMETERS
    ]
    if parameters.get("precision_mode", "FP32") not in ("FP32", "FP16", "INT8"):
        problems.append(f"tensorrt precision_mode {parameters['precision_mode']!r} is not FP32, FP16 or INT8")
    present = [key for key in PROFILE_KEYS if key in parameters]
    if not present:
        return problems
    if len(present) != len(PROFILE_KEYS):
        return problems + [f"tensorrt profile: give all of {', '.join(PROFILE_KEYS)}, not only {', '.join(present)}"]
    try:
        profiles = [_parse_profile(parameters[key]) for key in PROFILE_KEYS]
    except ValueError:
        return problems + ["tensorrt profile shapes must read 'name:AxBx...,name:...' with integer dims"]
    for tensor in inputs:
        shapes = [profile.get(tensor.name) for profile in profiles]
        if any(shape is None for shape in shapes):
            problems.append(f"tensorrt profile lacks input {tensor.name!r}")
            continue
        for key, shape in zip(PROFILE_KEYS, shapes, strict=False):
            fixed_ok = all(d == -1 or s == d for s, d in zip(shape, tensor.dims, strict=False))
            if len(shape) != len(tensor.dims) or not fixed_ok or min(shape) < 1:
                problems.append(
                    f"{key} gives {tensor.name!r} the shape {shape}, which does not fit the graph's {list(tensor.dims)}"
                )
            elif max_batch_size > 0 and shape[0] > max_batch_size:
                problems.append(f"{key} gives {tensor.name!r} batch {shape[0]} > max_batch_size {max_batch_size}")
        low, opt, high = shapes
        if all(len(s) == len(low) for s in (opt, high)) and not all(
            a <= b <= c for a, b, c in zip(low, opt, high, strict=False)
        ):
            problems.append(f"tensorrt profile of {tensor.name!r} is not min <= opt <= max: {low}, {opt}, {high}")
    return problems


def config_summary(config: Any) -> str:
    """One line: the tensors (name, type, dims), batching and instances of a parsed ``ModelConfig``."""
    from tritonclient.grpc import model_config_pb2 as schema

    tensors = ", ".join(
        f"{t.name} {schema.DataType.Name(t.data_type).removeprefix('TYPE_')} {list(t.dims)}"
        for t in (*config.input, *config.output)
    )
    kinds = "+".join(schema.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group)
    accelerators = [a.name for a in config.optimization.execution_accelerators.gpu_execution_accelerator]
    return f"{tensors}; max_batch_size {config.max_batch_size}, {kinds}" + "".join(f", {a}" for a in accelerators)


def write_triton_model(
    onnx_path: Path, repository: Path, name: str, options: TritonOptions, styles: list[str], identity: bool
) -> tuple[Path, Any]:
    """Write ``repository/name/{config.pbtxt, 1/model.onnx}`` for the float32 NCHW ONNX file at ``onnx_path``,
    read the config back and check it (``check_triton_config``); returns the model folder and the parsed
    ``ModelConfig``."""
    import onnx

    folder = repository / name
    version = folder / MODEL_VERSION
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, version / MODEL_FILE)
    model = onnx.load(str(version / MODEL_FILE), load_external_data=False)
    inputs, outputs = graph_tensors(model)
    text = triton_config_text(name, inputs, outputs, options, styles, identity)
    (folder / CONFIG_FILE).write_text(text, encoding="utf-8")
    config = check_triton_config((folder / CONFIG_FILE).read_text(encoding="utf-8"), model, name)
    return folder, config
