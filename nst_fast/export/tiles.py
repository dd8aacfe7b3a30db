"""``NAME.tiles.zip``: an exported ONNX file cut at its instance norms, for exact tiled inference
(``nst_fast.stylize.tiling``).

Every instance norm divides each channel by its mean and spread over the whole image, so a tile cannot be stylised
on its own. The graph is cut into passes, one per norm plus a final one: pass ``k`` computes norm ``k``'s input
(whose per-channel sums the runner accumulates over all tiles) from the image, the statistics of the norms before
it (each ``InstanceNormalization`` becomes a ``BatchNormalization`` with the same parameters, whose mean and variance
are new inputs ``tile_normJ_mean``/``tile_normJ_var`` ``[C]``: the whole image's) and the reduced-resolution tensors earlier passes stored. Tensors at full
resolution (the first conv's and the last upsampling's outputs, 128 bytes per pixel) are recomputed instead of
stored; every other node runs once. Each pass's halo (how far an output pixel sees, in full-resolution pixels) is
measured by perturbing its inputs.

The cut works on any variant of the graph (float32, float16 inside, uint8 I/O, int8 QDQ): it finds the norms by
op type. A network with ``model.input_noise`` or ``model.feature_noise`` reads its noise pattern at the region's own
place (``offset_noise``); the pattern (3 MiB in float32) is stored once in the zip file and fed to the passes that
read it (``share_noise_pattern``), not copied into each. Needs ``onnx`` (export time only); the runner needs only onnxruntime and NumPy.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nst_fast.conventions import (
    INPUT_NAME,
    META_TRANSFORMER,
    NOISE_PATTERN_NAME,
    OUTPUT_NAME,
    TILE_ALIGN,
    TILE_CROP_ENDS,
    TILE_CROP_STARTS,
    TILE_NOISE_OFFSET,
    TILE_SQUARES,
    TILE_SUM,
    TILES_FORMAT,
    TILES_PLAN,
    WEIGHTS_NAME,
)
from nst_fast.export.results import ExportError

#: Probe sizes (height, width): a base, then taller, then wider, so that each tensor's H and W dims and their scale
#: to the image are told apart.
PROBE_SIZES = ((64, 96), (128, 96), (64, 160))
#: Side of the square image the halos are measured on, and how many perturbations (at random places) per pass.
HALO_PROBE_SIDE = 160
HALO_TRIALS = 6


@dataclass
class Spatial:
    """Where a tensor's image axes are: ``[1, C, H, W]`` (``nchw``) or ``[H, W, C]`` (``hwc``), ``scale`` times the
    image's size (1, 1/2, 1/4), ``channels``, NumPy ``dtype`` name."""

    layout: str
    scale: float
    channels: int
    dtype: str


def _all_outputs_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` that returns every node output (types left for ONNX Runtime to infer)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in known:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    return probe


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])


def _image_feeds(model: onnx.ModelProto, height: int, width: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs of the exported interface at ``height x width``: float32 NCHW or uint8 HWC image, and
    ``style_weights`` (equal weights) for multi-style graphs."""
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name == INPUT_NAME:
            if value.type.tensor_type.elem_type == onnx.TensorProto.UINT8:
                feeds[value.name] = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            else:
                feeds[value.name] = rng.random((1, 3, height, width), dtype=np.float32)
        elif value.name == WEIGHTS_NAME:
            styles = dims[-1].dim_value
            shape = (styles,) if len(dims) == 1 else (1, styles)
            feeds[value.name] = np.full(shape, 1.0 / (styles + 1), dtype=np.float32)
        else:
            raise ExportError(
                f"cannot stage a graph with input {value.name!r}: expected {INPUT_NAME!r}, {WEIGHTS_NAME!r}"
            )
    return feeds


def probe_spatial(model: onnx.ModelProto) -> dict[str, Spatial]:
    """Every tensor of ``model`` whose two image axes follow the image exactly (size = scale x image size), found by
    running it at ``PROBE_SIZES``."""
    session = _session(_all_outputs_model(model))
    rng = np.random.default_rng(0)
    names = [o.name for o in session.get_outputs()]
    runs = []
    for height, width in PROBE_SIZES:
        feeds = _image_feeds(model, height, width, rng)
        runs.append(dict(zip(names, session.run(names, feeds), strict=True)) | feeds)
    (base_h, base_w), (tall_h, _), (_, wide_w) = PROBE_SIZES
    found: dict[str, Spatial] = {}
    for name, base in runs[0].items():
        tall, wide = runs[1][name].shape, runs[2][name].shape
        if base.ndim not in (3, 4) or len(tall) != base.ndim or len(wide) != base.ndim:
            continue
        h_axes = [d for d in range(base.ndim) if tall[d] != base.shape[d] and wide[d] == base.shape[d]]
        w_axes = [d for d in range(base.ndim) if wide[d] != base.shape[d] and tall[d] == base.shape[d]]
        if len(h_axes) != 1 or len(w_axes) != 1 or w_axes[0] != h_axes[0] + 1:
            continue
        h, w = h_axes[0], w_axes[0]
        scale = (tall[h] - base.shape[h]) / (tall_h - base_h)
        if scale != (wide[w] - base.shape[w]) / (wide_w - base_w) or base.shape[h] != scale * base_h:
            continue
        if base.shape[w] != scale * base_w:
            continue
        if base.ndim == 4 and h == 2 and base.shape[0] == 1:
            found[name] = Spatial("nchw", scale, int(base.shape[1]), base.dtype.name)
        elif base.ndim == 3 and h == 0:
            found[name] = Spatial("hwc", scale, int(base.shape[2]), base.dtype.name)
    return found


def _stats_names(index: int) -> tuple[str, str]:
    return f"tile_norm{index}_mean", f"tile_norm{index}_var"


def replace_norms(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[dict]]:
    """A copy of ``model`` whose ``InstanceNormalization`` nodes become ``BatchNormalization`` nodes (same scale,
    bias and epsilon) with the per-channel mean and variance ``[C]`` as new inputs: the same formula, with the whole
    image's statistics, in one ONNX Runtime kernel. Returns it and the norms in graph order: ``{"input": the
    normalised tensor, "eps", "mean"/"var": the new inputs}``."""
    staged = onnx.ModelProto()
    staged.CopyFrom(model)
    graph = staged.graph
    nodes: list[onnx.NodeProto] = []
    norms: list[dict] = []
    for node in graph.node:
        if node.op_type != "InstanceNormalization":
            nodes.append(node)
            continue
        index = len(norms)
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        x, weight, bias = node.input
        mean, var = _stats_names(index)
        nodes.append(
            helper.make_node(
                "BatchNormalization",
                [x, weight, bias, mean, var],
                [node.output[0]],
                epsilon=eps,
                name=f"tile_norm{index}",
            )
        )
        norms.append({"input": x, "eps": float(eps), "mean": mean, "var": var})
    if not norms:
        raise ExportError("the graph has no InstanceNormalization node: nothing to stage for tiled inference")
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return staged, norms


def _is_noise_pattern(name: str) -> bool:
    """The initializer of the noise pattern, as the network's buffer (``noise_pattern``) or a wrapper's
    (``network.noise_pattern`` in fp16 files)."""
    return name == NOISE_PATTERN_NAME or name.endswith("." + NOISE_PATTERN_NAME)


def _reads_noise_pattern(graph: onnx.GraphProto, name: str) -> bool:
    """Whether tensor ``name`` is the noise pattern: the initializer itself, or what a Cast or DequantizeLinear
    makes of it."""
    producer = {output: node for node in graph.node for output in node.output}
    for _ in range(3):
        if _is_noise_pattern(name):
            return True
        node = producer.get(name)
        if node is None or node.op_type not in ("Cast", "DequantizeLinear"):
            return False
        name = node.input[0]
    return False


def offset_noise(model: onnx.ModelProto, spatial: dict[str, Spatial]) -> bool:
    """Make the noise pattern of a ``model.input_noise`` or ``model.feature_noise`` network (``staged`` by
    ``replace_norms``, changed in place) start where a tile does. Each read of the pattern is a pair of Gathers
    (rows on axis 2, then columns on axis 3) with indices ``i mod period``; they take ``(i + offset / stride) mod
    period`` instead, ``offset`` being the new input ``TILE_NOISE_OFFSET`` (row, column; a multiple of
    ``TILE_ALIGN``) and ``stride`` the read tensor's pixel in image pixels (1 for the input, 2 at half resolution,
    found in ``spatial``). Returns whether the graph has the pattern."""
    graph = model.graph
    pattern = next((t for t in graph.initializer if _is_noise_pattern(t.name)), None)
    if pattern is None:
        meta = {prop.key: prop.value for prop in model.metadata_props}
        architecture = json.loads(meta.get(META_TRANSFORMER, "{}"))
        if architecture.get("input_noise") or architecture.get("feature_noise"):
            raise ExportError(
                f"cannot stage this graph for tiling: its network adds noise (model.input_noise or "
                f"model.feature_noise) but no initializer is named {NOISE_PATTERN_NAME!r}; export with "
                "export.tiles=false"
            )
        return False
    period = list(pattern.dims)[-2:]

    def axis(node: onnx.NodeProto) -> int:
        return next((a.i for a in node.attribute if a.name == "axis"), 0)

    gathers = [node for node in graph.node if node.op_type == "Gather"]
    reads = []
    for rows in (node for node in gathers if _reads_noise_pattern(graph, node.input[0])):
        columns = [node for node in gathers if node.input[0] == rows.output[0]]
        info = spatial.get(columns[0].output[0]) if len(columns) == 1 else None
        if info is None or axis(rows) != 2 or axis(columns[0]) != 3 or period[0] != period[1]:
            raise ExportError(
                f"cannot stage this graph for tiling: its noise pattern {NOISE_PATTERN_NAME!r} is not read by a "
                "Gather on rows and one on columns over the image's grid; export with export.tiles=false"
            )
        reads.append((rows, columns[0], round(1 / info.scale)))
    if not reads:
        raise ExportError(f"cannot stage this graph for tiling: nothing reads its noise pattern {NOISE_PATTERN_NAME!r}")
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(period[0], dtype=np.int64), "tile_noise_period"),
            numpy_helper.from_array(np.array(0, dtype=np.int64), "tile_noise_row"),
            numpy_helper.from_array(np.array(1, dtype=np.int64), "tile_noise_column"),
        ]
    )
    for stride in sorted({stride for *_, stride in reads if stride > 1}):
        graph.initializer.append(
            numpy_helper.from_array(np.array(stride, dtype=np.int64), f"tile_noise_stride{stride}")
        )
    graph.input.append(helper.make_tensor_value_info(TILE_NOISE_OFFSET, onnx.TensorProto.INT64, [2]))
    shifted = {
        id(node): (name, stride)
        for rows, columns, stride in reads
        for node, name in ((rows, "row"), (columns, "column"))
    }
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) in shifted:
            name, stride = shifted[id(node)]
            prefix = f"tile_noise_{node.output[0]}"
            start = f"{prefix}_start"
            nodes.append(helper.make_node("Gather", [TILE_NOISE_OFFSET, f"tile_noise_{name}"], [start]))
            if stride > 1:
                nodes.append(helper.make_node("Div", [start, f"tile_noise_stride{stride}"], [f"{start}_scaled"]))
                start = f"{start}_scaled"
            nodes += [
                helper.make_node("Add", [node.input[1], start], [f"{prefix}_shifted"]),
                helper.make_node("Mod", [f"{prefix}_shifted", "tile_noise_period"], [f"{prefix}_indices"]),
            ]
            node.input[1] = f"{prefix}_indices"
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return True


@dataclass
class Pass:
    """One pass: its nodes (indices into the staged graph), inputs, outputs, and the norm whose input it computes
    (``None`` for the final pass, whose first output is the image)."""

    nodes: list[int]
    inputs: list[str]
    outputs: list[str]
    norm: int | None


def plan_passes(graph: onnx.GraphProto, norms: list[dict], spatial: dict[str, Spatial]) -> list[Pass]:
    """Cut ``graph`` (``replace_norms``'s) into passes: for each norm, then the output, the nodes needed that are
    not stored by an earlier pass. A tensor is stored when it is below full resolution and a node of a later pass
    reads it; anything else a pass needs is recomputed from the image (or the stored tensors)."""
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    sources = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    sources |= {n["mean"] for n in norms} | {n["var"] for n in norms}
    stored: set[str] = set()
    done: set[int] = set()
    passes = []
    targets = [(n["input"], k) for k, n in enumerate(norms)] + [(OUTPUT_NAME, None)]
    for target, norm in targets:
        nodes: set[int] = set()
        stack = [target]
        while stack:
            name = stack.pop()
            if name in sources or name in stored or name not in producer or producer[name] in nodes:
                continue
            nodes.add(producer[name])
            stack.extend(x for x in graph.node[producer[name]].input if x)
        done |= nodes
        produced = [o for i in sorted(nodes) for o in graph.node[i].output]
        keep = [
            name
            for name in produced
            if name != target
            and name in spatial
            and spatial[name].scale < 1
            and any(c not in done for c in consumers.get(name, []))
        ]
        if norm is not None and spatial.get(target, Spatial("", 1, 0, "")).scale < 1:
            stored.add(target)
        stored |= set(keep)
        inputs = sorted(
            {x for i in nodes for x in graph.node[i].input if x and (x in stored or x in sources)}
            - {t.name for t in graph.initializer}
            - set(produced)
        )
        passes.append(Pass(sorted(nodes), inputs, [target, *keep], norm))
    return passes


def pass_model(model: onnx.ModelProto, staged: onnx.ModelProto, step: Pass, types: dict[str, int]) -> bytes:
    """The serialized ONNX model of one pass of ``staged`` (opset and IR version of ``model``)."""
    graph = staged.graph
    nodes = [graph.node[i] for i in step.nodes]
    used = {x for node in nodes for x in node.input}
    initializers = [t for t in graph.initializer if t.name in used]

    def value(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, types[name], None)

    sub = helper.make_graph(
        nodes, f"tile_pass_{step.norm}", [value(x) for x in step.inputs], [value(x) for x in step.outputs], initializers
    )
    out = helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
    out.functions.extend(model.functions)
    return out.SerializeToString()


def with_statistics(blob: bytes, target: str, keep: list[str]) -> bytes:
    """A norm pass that returns the sums of its norm's input ``target`` and of its square over each row of the crop
    (``TILE_SUM``, ``TILE_SQUARES``: ``[C, rows]``, short float32 sums that the runner adds up in float64) and the
    tensors ``keep``, instead of ``target`` itself: computed by ONNX Runtime's threads, and the full-resolution norm
    inputs never leave it."""
    model = onnx.load_from_string(blob)
    graph = model.graph
    elem = next(o.type.tensor_type.elem_type for o in graph.output if o.name == target)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "tile_image_axes"),
            numpy_helper.from_array(np.array([0, 3], dtype=np.int64), "tile_sum_axes"),
        ]
    )
    graph.input.extend(
        [
            helper.make_tensor_value_info(name, onnx.TensorProto.INT64, [2])
            for name in (TILE_CROP_STARTS, TILE_CROP_ENDS)
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Slice", [target, TILE_CROP_STARTS, TILE_CROP_ENDS, "tile_image_axes"], ["tile_valid"]),
            helper.make_node("ReduceSum", ["tile_valid", "tile_sum_axes"], [TILE_SUM], keepdims=0),
            helper.make_node("ReduceSumSquare", ["tile_valid", "tile_sum_axes"], [TILE_SQUARES], keepdims=0),
        ]
    )
    outputs = [helper.make_tensor_value_info(name, elem, None) for name in (TILE_SUM, TILE_SQUARES)]
    outputs += [o for o in graph.output if o.name in keep]
    del graph.output[:]
    graph.output.extend(outputs)
    return model.SerializeToString()


def _tensor_types(model: onnx.ModelProto, norms: list[dict], spatial: dict[str, Spatial]) -> dict[str, int]:
    """ONNX element types of the graph inputs, the statistics inputs and every spatial tensor."""
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    for name, info in spatial.items():
        types.setdefault(name, helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype)))
    for norm in norms:
        elem = types[norm["input"]]
        types[norm["mean"]] = types[norm["var"]] = elem
    return types


def measure_halo(session, step: Pass, plan: dict, rng: np.random.Generator) -> int:
    """How far (full-resolution pixels) a pass's outputs see into its inputs: the largest distance from a perturbed
    input pixel to an output pixel that changed, over ``HALO_TRIALS`` random places, rounded up to ``TILE_ALIGN``
    with one ``TILE_ALIGN`` to spare."""
    side = HALO_PROBE_SIDE
    tensors = plan["tensors"]
    feeds = {}
    for name in step.inputs:
        info = tensors.get(name)
        if name in plan["stats"]:
            channels = plan["stats"][name]
            value = np.ones if name.endswith("var") else np.zeros
            feeds[name] = value(channels, dtype=np.dtype(plan["stats_dtype"][name]))
        elif name == WEIGHTS_NAME:
            feeds[name] = np.full(plan["weights_shape"], 1.0 / (plan["weights_shape"][-1] + 1), dtype=np.float32)
        elif name == TILE_NOISE_OFFSET:
            feeds[name] = np.zeros(2, dtype=np.int64)
        else:
            feeds[name] = _random_tensor(info, side, rng)
    base = session.run(step.outputs, feeds)
    reach = 0.0
    for _ in range(HALO_TRIALS):
        cy, cx = (int(rng.integers(side // 4, 3 * side // 4)) // TILE_ALIGN * TILE_ALIGN for _ in range(2))
        changed = dict(feeds)
        for name in step.inputs:
            if name in tensors:
                changed[name] = _perturbed(feeds[name], tensors[name], cy, cx, rng)
        for name, before, after in zip(step.outputs, base, session.run(step.outputs, changed), strict=True):
            info = tensors[name]
            moved = np.abs(after.astype(np.float64) - before.astype(np.float64))
            moved = moved.max(axis=(0, 1) if info["layout"] == "nchw" else 2)
            ys, xs = np.nonzero(moved)
            if len(ys):
                step_px = 1.0 / info["scale"]
                reach = max(
                    reach,
                    float(np.max(np.abs(ys * step_px - cy))) + step_px,
                    float(np.max(np.abs(xs * step_px - cx))) + step_px,
                )
    return int(np.ceil(reach / TILE_ALIGN)) * TILE_ALIGN + TILE_ALIGN


def _random_tensor(info: dict, side: int, rng: np.random.Generator) -> np.ndarray:
    size = round(side * info["scale"])
    shape = (1, info["channels"], size, size) if info["layout"] == "nchw" else (size, size, info["channels"])
    if info["dtype"] == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape).astype(info["dtype"])


def _perturbed(array: np.ndarray, info: dict, cy: int, cx: int, rng: np.random.Generator) -> np.ndarray:
    """``array`` with its pixel covering full-resolution pixel ``(cy, cx)`` changed in every channel."""
    out = array.copy()
    y, x = int(cy * info["scale"]), int(cx * info["scale"])
    index = (0, slice(None), y, x) if info["layout"] == "nchw" else (y, x, slice(None))
    if info["dtype"] == "uint8":
        out[index] = (out[index].astype(np.int64) + 128) % 256
    else:
        out[index] = out[index] + 1.0 + rng.random(info["channels"]).astype(array.dtype)
    return out


def stage_model(model: onnx.ModelProto, halos: list[int] | None = None) -> tuple[dict, list[bytes]]:
    """The plan (``TILES_PLAN``'s JSON) and the serialized pass models of an exported ONNX model. ``halos``: those
    measured on the float32 file of the same network (the uint8 file rounds its output, which can hide a far
    perturbation); ``None`` measures them here."""
    spatial = probe_spatial(model)
    staged, norms = replace_norms(model)
    noise = offset_noise(staged, spatial)
    passes = plan_passes(staged.graph, norms, spatial)
    types = _tensor_types(model, norms, spatial)
    if noise:
        types[TILE_NOISE_OFFSET] = onnx.TensorProto.INT64
    blobs = [pass_model(model, staged, step, types) for step in passes]
    plan: dict = {
        "format": TILES_FORMAT,
        "align": TILE_ALIGN,
        "tensors": {},
        "norms": [],
        "stats": {},
        "stats_dtype": {},
        "passes": [],
    }
    for step in passes:
        for name in (*step.inputs, *step.outputs):
            if name in spatial:
                plan["tensors"][name] = vars(spatial[name])
            elif name not in (WEIGHTS_NAME, TILE_NOISE_OFFSET) and not name.startswith("tile_norm"):
                raise ExportError(
                    f"cannot stage this graph for tiling: pass {len(plan['passes'])} needs {name!r}, which does not "
                    "follow the image's size"
                )
    for index, norm in enumerate(norms):
        info = spatial.get(norm["input"])
        if info is None:
            raise ExportError(f"cannot stage this graph for tiling: norm {index}'s input does not follow the image")
        plan["norms"].append({**norm, "channels": info.channels})
        for key in ("mean", "var"):
            plan["stats"][norm[key]] = info.channels
            plan["stats_dtype"][norm[key]] = info.dtype
    weights = next((v for v in model.graph.input if v.name == WEIGHTS_NAME), None)
    if weights is not None:
        plan["weights_shape"] = [d.dim_value or 1 for d in weights.type.tensor_type.shape.dim]
    if halos is not None and len(halos) != len(passes):
        raise ExportError(f"{len(halos)} halos given for {len(passes)} passes: not the same network")
    rng = np.random.default_rng(0)
    files = []
    for index, (step, blob) in enumerate(zip(passes, blobs, strict=True)):
        halo = (
            halos[index] if halos is not None else measure_halo(_session(onnx.load_from_string(blob)), step, plan, rng)
        )
        inputs, outputs = step.inputs, step.outputs
        if step.norm is not None:
            later = {name for other in passes[index + 1 :] for name in other.inputs}
            outputs = [TILE_SUM, TILE_SQUARES, *(name for name in step.outputs if name in later)]
            inputs = [*step.inputs, TILE_CROP_STARTS, TILE_CROP_ENDS]
            blob = with_statistics(blob, step.outputs[0], outputs[2:])
        files.append(blob)
        plan["passes"].append(
            {"file": f"pass_{index:02d}.onnx", "inputs": inputs, "outputs": outputs, "norm": step.norm, "halo": halo}
        )
    return plan, files


def share_noise_pattern(plan: dict, files: list[bytes]) -> tuple[list[bytes], dict[str, np.ndarray]]:
    """Turn the noise pattern of every pass that holds it from an initializer into an input of that pass (added to
    ``plan``'s pass inputs, changed in place; ``plan["shared"]`` names the file ``NAME.npy`` for each such input);
    returns the pass files and the pattern by name, to be stored once."""
    shared: dict[str, np.ndarray] = {}
    out = []
    for step, blob in zip(plan["passes"], files, strict=True):
        model = onnx.load_from_string(blob)
        graph = model.graph
        patterns = [t for t in graph.initializer if _is_noise_pattern(t.name)]
        for tensor in patterns:
            array = numpy_helper.to_array(tensor)
            if tensor.name in shared and not np.array_equal(shared[tensor.name], array):
                raise ExportError(f"cannot stage this graph for tiling: two passes hold different {tensor.name!r}")
            shared[tensor.name] = array
            graph.initializer.remove(tensor)
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
            step["inputs"].append(tensor.name)
        out.append(model.SerializeToString() if patterns else blob)
    plan["shared"] = {name: f"{name}.npy" for name in shared}
    return out, shared


def write_tiles(onnx_path: Path, path: Path, halos: list[int] | None = None) -> dict:
    """Stage ``onnx_path`` into the zip file ``path`` (``TILES_PLAN``, ``pass_NN.onnx`` and the shared ``NAME.npy``,
    stored uncompressed); returns the plan. ``halos``: see ``stage_model``."""
    plan, blobs = stage_model(onnx.load(str(onnx_path)), halos)
    blobs, shared = share_noise_pattern(plan, blobs)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(TILES_PLAN, json.dumps(plan, indent=1))
        for step, blob in zip(plan["passes"], blobs, strict=True):
            archive.writestr(step["file"], blob)
        for name, array in shared.items():
            saved = io.BytesIO()
            np.save(saved, array, allow_pickle=False)
            archive.writestr(plan["shared"][name], saved.getvalue())
    path.write_bytes(buffer.getvalue())
    return plan


#: Verification of a tiles file: a random image of an odd size, tiled at ``TILES_VERIFY_SIDE`` pixels or the halo
#: (a few dozen tiles: every border case), against the whole-image pass of the ONNX file, in grey levels after rounding. int8 files are
#: held to a PSNR instead: cutting the graph changes which quantised kernels ONNX Runtime fuses, which moves some
#: pixels by a few levels whatever the tile size (docs/tiling.md).
TILES_VERIFY_SIZE = (181, 243)
TILES_VERIFY_SIDE = 48
TILES_TOLERANCE = 1
TILES_INT8_MIN_PSNR = 40.0


def verify_tiles(
    onnx_path: Path, path: Path, cases: list[np.ndarray | None], int8: bool = False
) -> tuple[int, float, int]:
    """Tile a random ``TILES_VERIFY_SIZE`` image with each style-weights case through ``path`` and compare with
    ``onnx_path`` on the whole image: ``ExportError`` above ``TILES_TOLERANCE`` grey levels (``int8``: below
    ``TILES_INT8_MIN_PSNR``); returns the worst difference (grey levels), the worst PSNR (dB) and the tile side."""
    import onnxruntime as ort

    from nst_fast.images import to_uint8
    from nst_fast.stylize.tiling import StagedModel, Tiling

    staged = StagedModel(path, lambda blob: ort.InferenceSession(blob, providers=["CPUExecutionProvider"]))
    whole = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    hwc = whole.get_inputs()[0].type == "tensor(uint8)"
    rgb = np.random.default_rng(0).integers(0, 256, (*TILES_VERIFY_SIZE, 3), dtype=np.uint8)
    side = max(staged.halo, TILES_VERIFY_SIDE)
    worst, worst_psnr = 0, float("inf")
    for weights in cases:
        feeds = {INPUT_NAME: rgb if hwc else (rgb.transpose(2, 0, 1)[None] / np.float32(255.0)).astype(np.float32)}
        if weights is not None:
            feeds[WEIGHTS_NAME] = weights if hwc else weights[None]
        want = whole.run(None, feeds)[0]
        want = want if hwc else to_uint8(want[0].transpose(1, 2, 0))
        got = staged(rgb, weights, Tiling("on", side))
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        mse = float(np.mean(diff**2))
        psnr = float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
        worst, worst_psnr = max(worst, int(diff.max())), min(worst_psnr, psnr)
        if (psnr < TILES_INT8_MIN_PSNR) if int8 else (diff.max() > TILES_TOLERANCE):
            limit = (
                f"PSNR {psnr:.1f} dB < {TILES_INT8_MIN_PSNR:g}"
                if int8
                else f"{int(diff.max())} > {TILES_TOLERANCE} levels"
            )
            raise ExportError(
                f"{path.name}: tiled output differs from the whole image ({limit}) at "
                f"{TILES_VERIFY_SIZE[1]}x{TILES_VERIFY_SIZE[0]} with {side}-pixel tiles: please report it, with the "
                "checkpoint; meanwhile export with export.tiles=false"
            )
    return worst, worst_psnr, side
