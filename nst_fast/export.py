"""Export a training checkpoint to files that run without this package, and verify them.

``export_checkpoint(ckpt)`` writes into ``RUN/export/`` (for ``RUN/checkpoints/last.ckpt``), named after the style:

- ``NAME.onnx``: ``torch.onnx.export(dynamo=True)``, opset 18, one self-contained file; input ``image`` float32
  ``[N, 3, H, W]`` RGB in [0, 1] (N, H, W dynamic, H, W >= 5), output ``stylized`` of the same shape.
- ``NAME.torchscript.pt``: ``torch.jit.trace`` of the same network (an extra; TorchScript is deprecated in
  recent PyTorch), with the metadata as the extra file ``nst_fast.json``.
- optionally ``NAME.fp16.onnx``: float16 weights and activations, float32 I/O; instance normalisation is
  computed in float32 (casts around it), since its variance is where fp16 loses precision or overflows.
- optionally ``NAME.uint8.onnx``: ``image`` uint8 ``[H, W, 3]`` RGB -> ``stylized`` uint8 ``[H, W, 3]``, for
  consumers that should need no pre- or post-processing.
- optionally ``NAME.int8.onnx``: the float32 ONNX model statically quantised for CPUs (ONNX Runtime QDQ, int8
  convolutions, calibrated on photos; ``nst_fast.quantize``), same inputs and outputs as ``NAME.onnx``. It is
  verified against ``NAME.onnx`` on photos (PSNR, ``Int8Settings.min_psnr``), not against the eager network.
- optionally ``triton/NAME/config.pbtxt`` and ``triton/NAME/1/model.onnx``: a Triton model repository serving
  ``NAME.onnx`` (``NAME`` with ``+`` as ``_``), checked with Triton's schema and against the graph
  (``nst_fast.triton_repo``).

Every ONNX file and the TorchScript file carry ``nst_fast.style_thumbnails``: small JPEG thumbnails of the style
paintings (``null`` for a painting missing here, with a note; a missing painting never fails the export).

Networks with more than one condition (several styles, or a style and the identity) get a second input
``style_weights`` in every format: float32 ``[N, S]`` (``[S]`` for the uint8 model), one weight per style in the
order of the JSON list in the metadata key ``nst_fast.styles``; the identity condition, if the network has one,
gets ``1 - sum``. So one row picks a style (one-hot), blends styles, or doses a style (a sum below 1).
Single-style networks keep their one-input graph.

Every file is run before anything is moved into place (ONNX Runtime, CPU provider, for ONNX; ``torch.jit.load``
for TorchScript) at an odd size and at batch 2, and compared with the eager network from the checkpoint; for
multi-condition networks with one-hot, blended and (with the identity) reduced-strength style weights, with
different weights for the two images of the batch.
Files are written into a temporary folder beside ``out_dir`` and moved there only when all pass.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import io
import json
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from nst_fast import __version__
from nst_fast.checkpoint import CheckpointInfo, load_transformer
from nst_fast.config import asset_path
from nst_fast.errors import EXIT_FAILED, EXIT_USAGE, ConfigError, NstFastError, first_line
from nst_fast.images import ImageReadError, open_rgb
from nst_fast.models.transformer import MIN_INPUT_SIZE, TransformerNet
from nst_fast.triton_repo import (
    TritonConfigError,
    TritonOptions,
    config_summary,
    model_config_schema,
    triton_model_name,
    write_triton_model,
)
from nst_fast.conventions import (
    EXPORT_FORMAT,
    INPUT_DESCRIPTIONS,
    INPUT_NAME,
    LAYOUT_HWC_UINT8,
    LAYOUT_NCHW_FLOAT,
    META_FORMAT,
    META_IDENTITY,
    META_INPUT,
    META_LAYOUT,
    META_PRECISION,
    META_STEPS,
    META_STYLE_IMAGE,
    META_STYLE_IMAGES,
    META_STYLE_NAME,
    META_STYLE_THUMBNAILS,
    META_STYLES,
    META_TRANSFORMER,
    META_VERSION,
    OUTPUT_NAME,
    THUMBNAIL_SIZE,
    TORCHSCRIPT_META_FILE,
    WEIGHTS_DESCRIPTIONS,
    WEIGHTS_NAME,
    metadata_conditions,
)

#: Default verification tolerances (max abs difference to the eager float32 network).
FP32_TOLERANCE = 1e-3  # on the [0, 1] scale
FP16_TOLERANCE = 1e-2  # on the [0, 1] scale, about 2.5 grey levels: fp16 has an 11-bit mantissa
UINT8_TOLERANCE = 2  # grey levels, after rounding the eager output the same way
#: Verification inputs: an odd size, and a batch of 2 at another size (NCHW); uint8 models take single HWC images.
VERIFY_SHAPES = ((1, 3, 181, 243), (2, 3, 96, 128))
VERIFY_SHAPES_UINT8 = ((181, 243, 3), (96, 128, 3))
#: Folder of ``out_dir`` that holds the Triton model repository.
TRITON_FOLDER = "triton"


class ExportError(NstFastError, RuntimeError):
    """An expected export failure (bad checkpoint, unwritable output, failed verification): one line."""


class ExportUsageError(ExportError):
    """Export was asked for something unusable (a missing, corrupt or foreign checkpoint, an opset too old):
    nothing was exported; exit status 2 (``EXIT_USAGE``), where a failed export is 1."""


@dataclass
class ExportedFile:
    path: Path
    kind: str
    max_abs_diff: float
    tolerance: float
    shapes: tuple[tuple[int, ...], ...]


@dataclass
class ExportResult:
    """What an export wrote: verified files, and the Triton model folder (``out_dir/triton/NAME``) if asked."""

    out_dir: Path
    info: CheckpointInfo
    files: list[ExportedFile] = field(default_factory=list)
    triton: Path | None = None

    def file(self, kind: str) -> Path:
        return next(f.path for f in self.files if f.kind == kind)


# --- Wrappers around the trained network ---------------------------------------------------------------------


class Float32InstanceNorm(nn.Module):
    """An ``InstanceNorm2d`` that computes in float32 whatever its input's dtype, and returns that dtype."""

    def __init__(self, norm: nn.InstanceNorm2d) -> None:
        super().__init__()
        self.norm = norm.float()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.float()).to(x.dtype)


class Float16Transformer(nn.Module):
    """float32 ``[N, 3, H, W]`` -> float16 network (instance norms in float32) -> float32. Conditional instance
    norms keep their float32 parameters and compute in float32 themselves."""

    def __init__(self, network: TransformerNet) -> None:
        super().__init__()
        network = copy.deepcopy(network).float()
        for module in list(network.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.InstanceNorm2d):
                    setattr(module, name, Float32InstanceNorm(child))
                elif isinstance(child, nn.Conv2d):
                    child.half()
        self.network = network
        self.num_conditions = network.num_conditions

    def forward(self, image: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.network(image.half(), condition).float()


class StyleWeightsInput(nn.Module):
    """The exported interface of a multi-condition network: ``(image [N, 3, H, W], style_weights [N, S])``, the
    network's condition weights being the style weights followed, for a network with the identity condition,
    by ``1 - sum(style_weights)``."""

    def __init__(self, network: nn.Module, identity: bool) -> None:
        super().__init__()
        self.network = network
        self.identity = identity

    def forward(self, image: Tensor, style_weights: Tensor) -> Tensor:
        condition = style_weights
        if self.identity:
            condition = torch.cat([style_weights, 1.0 - style_weights.sum(dim=1, keepdim=True)], dim=1)
        return self.network(image, condition)


class Uint8Transformer(nn.Module):
    """uint8 ``[H, W, 3]`` RGB (and ``style_weights [S]`` for multi-condition networks) -> the network -> uint8
    ``[H, W, 3]`` RGB (rounded)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: Tensor, style_weights: Tensor | None = None) -> Tensor:
        x = image.permute(2, 0, 1).unsqueeze(0).float() / 255.0
        y = self.network(x) if style_weights is None else self.network(x, style_weights.unsqueeze(0))
        return (y * 255.0).round().clamp(0.0, 255.0).to(torch.uint8)[0].permute(1, 2, 0)


def exported_interface(network: nn.Module, info: CheckpointInfo) -> nn.Module:
    """What the files compute: the network itself for one condition, else ``(image, style_weights)``."""
    return network if info_conditions(info) == 1 else StyleWeightsInput(network, info.identity)


def info_conditions(info: CheckpointInfo) -> int:
    """Number of conditions of the checkpoint's network (1 for single-style networks without identity)."""
    return int(info.transformer.get("num_conditions", 1))


@torch.jit.script_if_tracing
def _checked_size(x: Tensor, minimum: int) -> Tensor:
    """``x`` if it is ``[B, 3, H, W]`` with ``H, W >= minimum``; scripted when traced, so that the check stays
    in a traced graph instead of being evaluated once at the traced example's size."""
    if x.dim() != 4 or x.size(1) != 3 or x.size(2) < minimum or x.size(3) < minimum:
        raise ValueError(
            "TransformerNet expects RGB images [B, 3, H, W] with H, W >= " + str(minimum) + ", got " + str(x.size())
        )
    return x


class SizeCheckedTransformer(nn.Module):
    """The network behind the input check that ``torch.jit.trace`` would otherwise freeze at the example's size."""

    def __init__(self, network: TransformerNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.network(_checked_size(image, MIN_INPUT_SIZE), condition)


# --- Writing ------------------------------------------------------------------------------------------------------


#: JPEG quality of the style thumbnails (a few KB each at 128 pixels).
THUMBNAIL_QUALITY = 80


def find_style_image(recorded: str) -> Path | None:
    """The painting a checkpoint names, on this machine: the recorded path if it is a file; else, for a painting
    bundled with the package (recorded as ``.../nst_fast/assets/styles/X.jpg`` where it was trained, or as a
    path relative to the assets, ``styles/X.jpg``), the bundled copy here; else ``None``."""
    if not recorded:
        return None
    path = Path(recorded).expanduser()
    if path.is_file():
        return path
    parts = path.parts
    bundled = [i for i in range(1, len(parts)) if parts[i - 1] == "nst_fast" and parts[i] == "assets"]
    if bundled:
        relative = "/".join(parts[bundled[-1] + 1:])
    elif not path.is_absolute():
        relative = path.as_posix()
    else:
        return None
    try:
        return Path(asset_path(relative))
    except ConfigError:
        return None


def style_thumbnail(path: Path, size: int = THUMBNAIL_SIZE, quality: int = THUMBNAIL_QUALITY) -> str:
    """A base64 JPEG of the image at ``path``, scaled (up or down) so that its longer side is ``size`` pixels.
    Raises ``ImageReadError`` for an unreadable file."""
    image = open_rgb(path)
    scale = size / max(image.size)
    width, height = (max(1, round(side * scale)) for side in image.size)
    thumbnail = image.resize((width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="JPEG", quality=quality, optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def style_thumbnails(info: CheckpointInfo, log: Callable[[str], None] = print) -> list[str | None]:
    """Thumbnails of the checkpoint's style paintings in style order (``nst_fast.style_thumbnails``); ``None``,
    with a one-line note to ``log``, for a painting that is missing here (a checkpoint trained elsewhere) or
    unreadable: a missing thumbnail never fails an export."""
    thumbnails: list[str | None] = []
    for style in info.styles:
        name, recorded = str(style.get("name", "")), str(style.get("image", ""))
        path = find_style_image(recorded)
        thumbnail = None
        if path is None:
            log(f"  note: style {name!r}: painting {recorded!r} not found here; its thumbnail is null")
        else:
            try:
                thumbnail = style_thumbnail(path)
            except ImageReadError as error:
                log(f"  note: style {name!r}: {first_line(error)}; its thumbnail is null")
        thumbnails.append(thumbnail)
    return thumbnails


def onnx_metadata(
    info: CheckpointInfo, layout: str, precision: str, thumbnails: list[str | None] | None = None
) -> dict[str, str]:
    """The ``metadata_props`` of an exported ONNX file (all strings). ``thumbnails``: as ``style_thumbnails``
    returns them (``None``: made here, without notes)."""
    multi = info_conditions(info) > 1
    if thumbnails is None:
        thumbnails = style_thumbnails(info, log=lambda _: None)
    return {
        META_FORMAT: EXPORT_FORMAT,
        META_VERSION: __version__,
        META_STYLE_NAME: "+".join(info.style_names),
        META_STYLE_IMAGE: str(info.style.get("image", "")) if len(info.styles) == 1 else "",
        META_STYLES: json.dumps(info.style_names),
        META_STYLE_IMAGES: json.dumps([str(style.get("image", "")) for style in info.styles]),
        META_IDENTITY: "true" if info.identity else "false",
        META_STEPS: str(info.global_step),
        META_TRANSFORMER: json.dumps(info.transformer, sort_keys=True),
        META_LAYOUT: layout,
        META_PRECISION: precision,
        META_INPUT: INPUT_DESCRIPTIONS[layout] + (f"; {WEIGHTS_DESCRIPTIONS[layout]}" if multi else ""),
        META_STYLE_THUMBNAILS: json.dumps(thumbnails),
    }


def _export_onnx(
    module: nn.Module, examples: tuple[Tensor, ...], dynamic: tuple[dict[int, Any] | None, ...], path: Path,
    metadata: dict[str, str], opset: int,
) -> None:
    with warnings.catch_warnings():
        # The image and the style weights share one batch dimension on purpose; the exporter says so per export.
        warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used", category=UserWarning)
        program = torch.onnx.export(
            module.eval(), examples, dynamo=True, verbose=False, opset_version=opset, external_data=False,
            input_names=[INPUT_NAME, WEIGHTS_NAME][: len(examples)], output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic,
        )
    graph = program.model.graph
    # The exporter names the output's dims by formulas (e.g. "Min(height, 4*((height + ...)//4))"), which equal
    # the input's; name them as the input's so that consumers (TensorRT profiles, shape checks) see it.
    graph.outputs[0].shape = graph.inputs[0].shape.copy() if hasattr(graph.inputs[0].shape, "copy") else graph.inputs[0].shape
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
    network: TransformerNet, path: Path, info: CheckpointInfo, *, opset: int = 18, fp16: bool = False,
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
    network: TransformerNet, path: Path, info: CheckpointInfo, *, opset: int = 18,
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


# --- Verification ---------------------------------------------------------------------------------------------------


#: A model as verification runs it: ``(image, style_weights or None) -> output``.
Runner = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


def eager_runner(network: TransformerNet, info: CheckpointInfo) -> Runner:
    """The reference: the eager float32 network behind the exported interface."""
    module = exported_interface(network, info)

    def run(x: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        with torch.inference_mode():
            inputs = [torch.from_numpy(x)] + ([] if weights is None else [torch.from_numpy(weights)])
            return module(*inputs).numpy()

    return run


def verification_weights(info: CheckpointInfo) -> list[np.ndarray | None]:
    """Style-weight vectors ``[S]`` the files are checked with: each style one-hot, a blend of the first two
    (and of all when there is no identity), and with the identity half strength and zero strength. ``[None]``
    for one-condition networks, which take no weights."""
    count = len(info.styles)
    if info_conditions(info) == 1:
        return [None]
    cases = [np.eye(count, dtype=np.float32)[index] for index in range(count)]
    if count >= 2:
        cases.append(np.array([0.6, 0.4] + [0.0] * (count - 2), dtype=np.float32))
    if info.identity:
        cases.append(np.array([0.5] + [0.0] * (count - 1), dtype=np.float32))
        cases.append(np.zeros(count, dtype=np.float32))
    elif count >= 3:
        cases.append(np.full(count, 1.0 / count, dtype=np.float32))
    return cases


def _ort_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check_onnx_file(path: Path, opset: int, layout: str) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(f"{path.name}: {len(external)} weights stored as external data; expected one self-contained file")
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version < opset:
        raise ExportError(f"{path.name}: opset {version} < requested {opset}")
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(META_FORMAT) != EXPORT_FORMAT or meta.get(META_LAYOUT) != layout:
        raise ExportError(f"{path.name}: nst-fast metadata missing from the written file")
    inputs = [INPUT_NAME, WEIGHTS_NAME] if metadata_conditions(meta) > 1 else [INPUT_NAME]
    if [i.name for i in model.graph.input] != inputs or [o.name for o in model.graph.output] != [OUTPUT_NAME]:
        raise ExportError(f"{path.name}: expected inputs {inputs} and output {OUTPUT_NAME!r}")


def _compare(name: str, pairs: list[tuple[np.ndarray, np.ndarray]], tolerance: float) -> float:
    worst = 0.0
    for got, want in pairs:
        if got.shape != want.shape:
            raise ExportError(f"{name}: output shape {got.shape} != expected {want.shape}")
        if not np.isfinite(got.astype(np.float64)).all():
            raise ExportError(f"{name}: non-finite output at input size {want.shape}")
        diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
        if diff > tolerance:
            raise ExportError(
                f"{name}: verification failed: max |diff| to the eager network {diff:.3g} > tolerance {tolerance:g} "
                f"at size {'x'.join(map(str, want.shape))}"
            )
        worst = max(worst, diff)
    return worst


def _batch_weights(cases: list[np.ndarray | None], first: int, batch: int) -> np.ndarray | None:
    """Rows ``first, first + 1, ...`` of the cases (cyclically): each image of a batch gets its own weights."""
    if cases[0] is None:
        return None
    return np.stack([cases[(first + row) % len(cases)] for row in range(batch)])


def verify_nchw(run: Runner, reference: Runner, cases: list[np.ndarray | None], name: str, tolerance: float) -> float:
    """Compare ``run`` with ``reference`` on random images of ``VERIFY_SHAPES``, once per weight case."""
    rng = np.random.default_rng(0)
    pairs = []
    for shape in VERIFY_SHAPES:
        x = rng.random(shape, dtype=np.float32)
        for first in range(len(cases)):
            weights = _batch_weights(cases, first, shape[0])
            pairs.append((run(x, weights), reference(x, weights)))
    return _compare(name, pairs, tolerance)


def verify_uint8(run: Runner, reference: Runner, cases: list[np.ndarray | None], name: str, tolerance: float) -> float:
    """The same for the uint8 HWC model (one image, weights ``[S]``), against the rounded reference."""
    rng = np.random.default_rng(0)
    pairs = []
    for shape in VERIFY_SHAPES_UINT8:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        x = image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        for weights in cases:
            batch_weights = None if weights is None else weights[None]
            want = np.clip(np.round(reference(x, batch_weights)[0].transpose(1, 2, 0) * 255.0), 0, 255)
            got = run(image, weights)
            if got.dtype != np.uint8:
                raise ExportError(f"{name}: output dtype {got.dtype}, expected uint8")
            pairs.append((got, want))
    return _compare(name, pairs, tolerance)


# --- int8 (static quantisation for CPUs) -------------------------------------------------------------------------

#: Verification of the int8 model: PSNR (dB) to the float32 model below which the export fails.
INT8_MIN_PSNR = 30.0
#: Verification photos: the first calibration photo resized to this odd size (height, width), and the last one
#: with its shorter side at this many pixels (aspect kept).
INT8_VERIFY_ODD_SIZE = (181, 243)
INT8_VERIFY_SHORTER_SIDE = 720


@dataclass
class Int8Settings:
    """How ``NAME.int8.onnx`` is calibrated and checked (``export.int8_*`` in conf/export.yaml).

    ``calibration``: a folder of photos (default: the bundled content photos, ``nst_fast/assets/content``);
    ``calibration_photos``: at most this many of them, spread over the folder; ``calibration_size``: the side of
    the centre square (pixels) of each photo calibrated on; ``method``: ``percentile`` or ``minmax``
    (``nst_fast.quantize.CALIBRATION_METHODS``);
    ``min_psnr``: the verification threshold in dB."""

    calibration: str | None = None
    calibration_size: int = 512
    calibration_photos: int = 16
    method: str = "percentile"
    min_psnr: float = INT8_MIN_PSNR


def default_calibration_folder() -> Path:
    """The bundled content photos (the sample training set)."""
    from importlib import resources

    return Path(str(resources.files("nst_fast") / "assets" / "content"))


def _odd_size_photo(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The photo at ``path`` resized to exactly ``size`` (height, width), float32 ``[1, 3, H, W]`` in [0, 1]."""
    from PIL import Image

    from nst_fast.images import open_rgb

    image = open_rgb(path).resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return (np.asarray(image, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def int8_calibration_files(settings: Int8Settings) -> list[Path]:
    """The photos ``settings`` calibrate on; ``ExportUsageError`` (before anything is exported) for unusable
    settings or a folder without photos."""
    from nst_fast.quantize import CALIBRATION_METHODS, calibration_files

    if settings.calibration_size < 16 or settings.calibration_photos < 1:
        raise ExportUsageError(
            f"export.int8_calibration_size must be >= 16 and export.int8_calibration_photos >= 1, got "
            f"{settings.calibration_size} and {settings.calibration_photos}"
        )
    if settings.method not in CALIBRATION_METHODS:
        raise ExportUsageError(
            f"export.int8_method={settings.method!r} is unknown; choose one of {', '.join(CALIBRATION_METHODS)}"
        )
    folder = Path(settings.calibration).expanduser() if settings.calibration else default_calibration_folder()
    files = calibration_files(folder, settings.calibration_photos) if folder.is_dir() else []
    if not files:
        raise ExportUsageError(
            f"no photos for int8 calibration in {folder}: set export.int8_calibration to a folder of photos "
            "(jpg, png, ...) like those the model will stylise"
        )
    return files


def export_int8(float_path: Path, path: Path, info: CheckpointInfo, settings: Int8Settings, files: list[Path],
                opset: int, log: Callable[[str], None]) -> ExportedFile:
    """Quantise the verified float32 model ``float_path`` into ``path`` (``nst_fast.quantize.quantize_int8``),
    calibrated on ``files`` (``int8_calibration_files``), then verify it against the float32 model on photos:
    ``ExportError`` when the PSNR of any photo and style case is below ``settings.min_psnr``. The returned
    file's ``tolerance`` is that PSNR threshold (dB)."""
    from nst_fast.quantize import calibration_photo, photo_array, quantize_int8

    photos = [calibration_photo(file, settings.calibration_size) for file in files]
    cases = verification_weights(info)
    summary = quantize_int8(float_path, path, photos, cases, method=settings.method, metadata={META_PRECISION: "int8"})
    _check_onnx_file(path, opset, LAYOUT_NCHW_FLOAT)

    reference, quantised = _ort_session(float_path), _ort_session(path)
    checks = [(files[0], _odd_size_photo(files[0], INT8_VERIFY_ODD_SIZE)),
              (files[-1], photo_array(files[-1], INT8_VERIFY_SHORTER_SIDE))]
    worst_psnr, worst_diff, shapes = float("inf"), 0.0, []
    for file, photo in checks:
        shapes.append(photo.shape)
        for weights in cases:
            feeds = {INPUT_NAME: photo} if weights is None else {INPUT_NAME: photo, WEIGHTS_NAME: weights[None]}
            want = reference.run(None, feeds)[0].astype(np.float64)
            got = quantised.run(None, feeds)[0].astype(np.float64)
            if got.shape != want.shape or not np.isfinite(got).all():
                raise ExportError(f"{path.name}: output {got.shape} (finite: {np.isfinite(got).all()}) for input {photo.shape}")
            mse = float(np.mean((got - want) ** 2))
            psnr = float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)
            worst_diff = max(worst_diff, float(np.abs(got - want).max()))
            if psnr < settings.min_psnr:
                dose = "" if weights is None else f", style weights {np.round(weights, 3).tolist()}"
                raise ExportError(
                    f"{path.name}: int8 verification failed: PSNR to the float32 model {psnr:.1f} dB < "
                    f"export.int8_min_psnr {settings.min_psnr:g} dB on {file.name} at "
                    f"{photo.shape[2]}x{photo.shape[3]}{dose}; calibrate on photos like yours "
                    f"(export.int8_calibration=FOLDER, export.int8_calibration_photos=N), accept a lower PSNR "
                    f"(export.int8_min_psnr; model=light measures about 27 dB) or deploy {float_path.name}"
                )
            worst_psnr = min(worst_psnr, psnr)
    shown = ", ".join(f"{s[2]}x{s[3]}" for s in shapes)
    log(
        f"  {path.name}: OK, PSNR to {float_path.name} >= {worst_psnr:.1f} dB (threshold {settings.min_psnr:g}), "
        f"max |diff| {worst_diff:.3f} on {len(checks)} photos at {shown}, {len(cases)} style case(s); "
        f"{summary['quantised_convs']} int8 convs, calibrated on {len(files)} photos at {settings.calibration_size} px "
        f"({settings.method})"
    )
    return ExportedFile(path, "onnx_int8", worst_diff, settings.min_psnr, tuple(tuple(s) for s in shapes))


# --- The whole export -----------------------------------------------------------------------------------------------


def default_out_dir(ckpt_path: Path) -> Path:
    """``RUN/export`` for ``RUN/checkpoints/X.ckpt``; otherwise an ``export`` folder beside the checkpoint."""
    parent = ckpt_path.parent
    return (parent.parent if parent.name == "checkpoints" else parent) / "export"


def model_name(info: CheckpointInfo, ckpt_path: Path) -> str:
    """File-name-safe style name (``starry+wave+...`` for several), or the checkpoint's stem."""
    raw = "+".join(name for name in info.style_names if name) or ckpt_path.stem
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", raw).strip("._") or "model"


def export_checkpoint(
    ckpt_path: str | Path,
    out_dir: str | Path | None = None,
    *,
    name: str | None = None,
    torchscript: bool = True,
    fp16: bool = False,
    uint8: bool = False,
    int8: bool = False,
    int8_settings: Int8Settings | None = None,
    opset: int = 18,
    tolerance: float = FP32_TOLERANCE,
    fp16_tolerance: float = FP16_TOLERANCE,
    uint8_tolerance: float = UINT8_TOLERANCE,
    triton: TritonOptions | None = None,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export ``ckpt_path`` to ONNX (+ TorchScript, fp16, uint8 and int8 ONNX as asked), verify, then move into
    ``out_dir``; with ``triton``, also a Triton model repository ``out_dir/triton/`` serving the float32 ONNX
    file (see ``nst_fast.triton_repo``). Raises ``ExportError`` (one-line message) for expected failures;
    leaves nothing behind then."""
    ckpt_path = Path(ckpt_path).expanduser().resolve()
    if opset < 18:
        raise ExportUsageError(f"opset {opset} is too old: the dynamo exporter needs opset 18 or newer")
    if triton is not None:
        try:
            triton.check()
            model_config_schema()
        except TritonConfigError as error:
            raise ExportUsageError(str(error)) from error
    try:
        network, info = load_transformer(ckpt_path)
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # CheckpointError is a ValueError
        message = first_line(error)
        if not str(ckpt_path) in message:
            message = f"{ckpt_path}: not a valid nst-fast checkpoint ({type(error).__name__}: {message})"
        raise ExportUsageError(message) from error
    network = network.float().eval()
    out_dir = Path(out_dir).expanduser().resolve() if out_dir else default_out_dir(ckpt_path)
    name = name or model_name(info, ckpt_path)
    int8_settings = int8_settings or Int8Settings()
    int8_files = int8_calibration_files(int8_settings) if int8 else []
    log(
        f"export: {ckpt_path} (style {'+'.join(info.condition_names) or '?'!r}, step {info.global_step}, "
        f"TransformerNet{info.transformer}) -> {out_dir}"
    )

    created = _first_missing(out_dir.parent)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as error:
        _remove_created(created)
        raise ExportError(f"cannot write to {out_dir}: {error.strerror or error}") from error

    result = ExportResult(out_dir=out_dir, info=info)
    try:
        thumbnails = style_thumbnails(info, log)
        steps: list[tuple[str, str, Callable[[Path], None], Callable[[Path], tuple[float, float, tuple]]]] = []
        reference = eager_runner(network, info)
        cases = verification_weights(info)

        def onnx_check(layout: str, tol: float, uint8_io: bool = False):
            def check(path: Path) -> tuple[float, float, tuple]:
                _check_onnx_file(path, opset, layout)
                session = _ort_session(path)

                def run(x: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
                    feeds = {INPUT_NAME: x} if weights is None else {INPUT_NAME: x, WEIGHTS_NAME: weights}
                    return session.run(None, feeds)[0]

                if uint8_io:
                    return verify_uint8(run, reference, cases, path.name, tol), tol, VERIFY_SHAPES_UINT8
                return verify_nchw(run, reference, cases, path.name, tol), tol, VERIFY_SHAPES
            return check

        def torchscript_check(path: Path) -> tuple[float, float, tuple]:
            extra = {TORCHSCRIPT_META_FILE: ""}
            loaded = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            if META_FORMAT not in json.loads(extra[TORCHSCRIPT_META_FILE] or "{}"):
                raise ExportError(f"{path.name}: nst-fast metadata missing from the written file")

            def run(x: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
                with torch.inference_mode():
                    inputs = [torch.from_numpy(x)] + ([] if weights is None else [torch.from_numpy(weights)])
                    return loaded(*inputs).numpy()

            return verify_nchw(run, reference, cases, path.name, tolerance), tolerance, VERIFY_SHAPES

        steps.append(("onnx", f"{name}.onnx",
                      lambda p: export_onnx(network, p, info, opset=opset, thumbnails=thumbnails),
                      onnx_check(LAYOUT_NCHW_FLOAT, tolerance)))
        if fp16:
            steps.append(("onnx_fp16", f"{name}.fp16.onnx",
                          lambda p: export_onnx(network, p, info, opset=opset, fp16=True, thumbnails=thumbnails),
                          onnx_check(LAYOUT_NCHW_FLOAT, fp16_tolerance)))
        if uint8:
            steps.append(("onnx_uint8", f"{name}.uint8.onnx",
                          lambda p: export_onnx_uint8(network, p, info, opset=opset, thumbnails=thumbnails),
                          onnx_check(LAYOUT_HWC_UINT8, uint8_tolerance, uint8_io=True)))
        if torchscript:
            steps.append(("torchscript", f"{name}.torchscript.pt", lambda p: export_torchscript(network, p, info, thumbnails),
                          torchscript_check))

        for kind, filename, write, check in steps:
            path = staging / filename
            _one_line_errors(f"{filename}: export failed", write, path)
            diff, tol, shapes = _one_line_errors(f"{filename}: verification crashed", check, path)
            shown = ", ".join("x".join(map(str, s)) for s in shapes)
            log(f"  {filename}: OK, max |diff| to eager {diff:.2e} (tolerance {tol:g}) at {shown}")
            result.files.append(ExportedFile(out_dir / filename, kind, diff, tol, shapes))
        if int8:
            int8_file = _one_line_errors(
                f"{name}.int8.onnx: int8 export failed",
                lambda p: export_int8(staging / f"{name}.onnx", p, info, int8_settings, int8_files, opset, log),
                staging / f"{name}.int8.onnx",
            )
            result.files.append(ExportedFile(out_dir / int8_file.path.name, int8_file.kind, int8_file.max_abs_diff,
                                             int8_file.tolerance, int8_file.shapes))
        expected = {Path(f.path).name for f in result.files}
        if triton is not None:
            model_dir = _one_line_errors("triton: writing the model repository failed", lambda p: _write_triton(
                staging / f"{name}.onnx", p, triton_model_name(name), triton, info, log), staging / TRITON_FOLDER)
            result.triton = out_dir / TRITON_FOLDER / model_dir.name
            expected.add(TRITON_FOLDER)
        stray = sorted(p.name for p in staging.iterdir() if p.name not in expected)
        if stray:
            raise ExportError(f"the exporter wrote unexpected extra files: {', '.join(stray)}")

        out_dir.mkdir(exist_ok=True)
        for exported in result.files:
            (staging / exported.path.name).replace(exported.path)
        if result.triton is not None:
            # File by file: other versions or models already in out_dir/triton/ stay.
            staged = staging / TRITON_FOLDER / result.triton.name
            for source in sorted(p for p in staged.rglob("*") if p.is_file()):
                target = result.triton / source.relative_to(staged)
                target.parent.mkdir(parents=True, exist_ok=True)
                source.replace(target)
    except BaseException as error:  # leave nothing behind, whatever went wrong
        shutil.rmtree(staging, ignore_errors=True)
        _remove_created(created)
        if isinstance(error, OSError):
            raise ExportError(f"cannot write to {out_dir}: {error.strerror or error}") from error
        raise
    shutil.rmtree(staging, ignore_errors=True)
    log(f"export: wrote {len(result.files)} verified file(s) to {out_dir}")
    return result


def _write_triton(
    onnx_path: Path, repository: Path, model: str, options: TritonOptions, info: CheckpointInfo,
    log: Callable[[str], None],
) -> Path:
    """``write_triton_model``, logged; a config that does not match the graph is an ``ExportError``."""
    try:
        folder, config = write_triton_model(onnx_path, repository, model, options, info.style_names, info.identity)
    except TritonConfigError as error:
        raise ExportError(
            f"{TRITON_FOLDER}/{model}/config.pbtxt: {error} (a bug in the config writer: please report it, with "
            f"the file; meanwhile export with export.triton=false)"
        ) from error
    log(f"  {TRITON_FOLDER}/{model}/: config.pbtxt parses as Triton's ModelConfig and matches 1/model.onnx "
        f"({config_summary(config)})")
    return folder


def _one_line_errors(what: str, action: Callable[[Path], Any], path: Path) -> Any:
    """``action(path)``; any crash in it (exporter, ONNX checker, ONNX Runtime, ``torch.jit.load``, a file system
    error) becomes an ``ExportError`` that says ``what`` failed and names the cause on one line."""
    try:
        return action(path)
    except ExportError:
        raise
    except Exception as error:
        raise ExportError(f"{what} ({type(error).__name__}: {first_line(error)})") from error


def _first_missing(path: Path) -> Path | None:
    """The topmost ancestor of ``path`` (or itself) that does not exist yet, i.e. what ``mkdir -p`` would create."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _remove_created(path: Path | None) -> None:
    if path is not None and path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def triton_options(settings: Any) -> TritonOptions | None:
    """``TritonOptions`` from ``export.triton_*`` (``None`` for ``export.triton=false``); ``ExportUsageError`` for
    ``triton_*`` settings changed without ``export.triton=true``, which would otherwise be silently ignored."""
    defaults = TritonOptions()
    given = {key: settings.get(f"triton_{key}", value) for key, value in dataclasses.asdict(defaults).items()}
    if settings.get("triton", False):
        return TritonOptions(**given)
    changed = [f"export.triton_{key}={json.dumps(value) if isinstance(value, bool) else value}"
               for key, value in given.items() if value != getattr(defaults, key)]
    if changed:
        verb = "needs" if len(changed) == 1 else "need"
        raise ExportUsageError(f"{', '.join(changed)} {verb} export.triton=true (they configure the Triton model)")
    return None


def int8_settings(settings: Any) -> Int8Settings:
    """``Int8Settings`` from the ``export.int8_*`` keys of the config (defaults for missing keys)."""
    default = Int8Settings()
    return Int8Settings(
        calibration=settings.get("int8_calibration") or None,
        calibration_size=int(settings.get("int8_calibration_size", default.calibration_size)),
        calibration_photos=int(settings.get("int8_calibration_photos", default.calibration_photos)),
        method=str(settings.get("int8_method", default.method)),
        min_psnr=float(settings.get("int8_min_psnr", default.min_psnr)),
    )


def run(cfg: Any) -> int:
    """Entry point for ``export.py`` (a Hydra/OmegaConf config with ``ckpt_path`` and ``export.*``); returns
    the exit status (0 written, 1 the export failed, 2 unusable input) and prints expected errors on one line."""
    settings = cfg.get("export", {}) or {}
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        print("export: error: ckpt_path is required, e.g. python export.py ckpt_path=RUN/checkpoints/last.ckpt", file=sys.stderr)
        return EXIT_USAGE
    try:
        export_checkpoint(
            ckpt,
            settings.get("out_dir"),
            name=settings.get("name"),
            torchscript=bool(settings.get("torchscript", True)),
            fp16=bool(settings.get("fp16", False)),
            uint8=bool(settings.get("uint8", False)),
            int8=bool(settings.get("int8", False)),
            int8_settings=int8_settings(settings),
            opset=int(settings.get("opset", 18)),
            tolerance=float(settings.get("tolerance", FP32_TOLERANCE)),
            fp16_tolerance=float(settings.get("fp16_tolerance", FP16_TOLERANCE)),
            uint8_tolerance=float(settings.get("uint8_tolerance", UINT8_TOLERANCE)),
            triton=triton_options(settings),
        )
    except ExportError as error:
        print(f"export: error: {error}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, ExportUsageError) else EXIT_FAILED
    return 0
