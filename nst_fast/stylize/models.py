"""Loading and running a style model: ONNX files via ONNX Runtime (no torch), TorchScript files and training
checkpoints via PyTorch (imported only for those). Every model maps uint8 RGB ``[N, H, W, 3]`` to float RGB in
[0, 1] with the same call, so the CLI and the server do not care which kind they hold.
"""

from __future__ import annotations

import abc
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nst_fast.assets import BUNDLED_MODELS, DEFAULT_MODEL, bundled_model
from nst_fast.conventions import (
    EXPORT_FORMAT,
    INPUT_DESCRIPTIONS,
    INPUT_NAME,
    LAYOUT_HWC_UINT8,
    LAYOUT_NCHW_FLOAT,
    META_FORMAT,
    META_LAYOUT,
    META_PRECISION,
    META_STYLE_NAME,
    TORCHSCRIPT_META_FILE,
    WEIGHTS_NAME,
    metadata_conditions,
    styles_from_metadata,
    tiles_name,
)
from nst_fast.errors import MissingFileError, StylizeError, first_line
from nst_fast.stylize.tiling import StagedModel, load_staged

#: ONNX Runtime execution providers, fastest first; ``--provider auto`` takes those this build has.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}


class StyleModel(abc.ABC):
    """A loaded style network: ``model(batch, weights)`` maps uint8 RGB ``[N, H, W, 3]`` to float RGB in [0, 1].

    ``styles``: the model's style names in ``style_weights`` order; ``identity``: it has the identity condition
    (strength below 1). ``takes_weights``: multi-condition models take ``weights`` (float32 ``[S]``, the same for
    every image of the batch; see ``parse_style_weights``); one-condition models take ``None``.
    """

    description: str = ""
    styles: list[str]
    identity: bool = False
    takes_weights: bool = False
    #: Why ``staged()`` is ``None``: completes "cannot tile: ...".
    tiles_missing: str = "only exported ONNX models (with their NAME.tiles.zip) are stylised tile by tile"

    def staged(self) -> StagedModel | None:
        """The model cut into passes for exact tiled inference (``nst_fast.stylize.tiling``), or ``None``."""
        return None

    @abc.abstractmethod
    def __call__(self, batch: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Stylise a batch of same-sized images."""


@functools.cache
def shared_cpu_arena() -> None:
    """Register, once per process, ONNX Runtime's CPU arena allocator for the sessions that ask for it (the tiled
    passes): it grows to the largest pass's tile, in steps of what is asked (not powers of two)."""
    import onnxruntime as ort

    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, 1, -1, -1))  # 1: kSameAsRequested


def pass_session(model: bytes, providers: list[str], threads: int, cpu_arena: bool) -> Any:
    """An ONNX Runtime session for one tiled pass: the model's providers and threads; its threads do not spin
    after a run (the next pass's session, or NumPy, would wait for them); with ``cpu_arena``, one CPU memory arena
    shared by all the passes (``shared_cpu_arena``), else none (one arena per pass would keep ~17 tiles' worth)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if cpu_arena:
        shared_cpu_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    else:
        options.enable_cpu_mem_arena = False
    return ort.InferenceSession(model, sess_options=options, providers=providers)


def choose_providers(requested: str, available: Sequence[str]) -> list[str]:
    """ONNX Runtime providers for ``--provider``: ``auto`` -> TensorRT, CUDA, CPU (those available, in that
    order); otherwise the named one (alias or full name) followed by the CPU provider as a fallback."""
    if requested == "auto":
        chosen = [p for p in PROVIDER_PREFERENCE if p in available]
        return chosen or list(available)
    name = PROVIDER_ALIASES.get(requested.lower(), requested)
    if name not in available:
        raise StylizeError(
            f"execution provider {requested!r} is not available in this onnxruntime build "
            f"(available: {', '.join(available)})"
        )
    providers = [name]
    if name == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    if name != "CPUExecutionProvider" and "CPUExecutionProvider" in available:
        providers.append("CPUExecutionProvider")
    return providers


class OnnxModel(StyleModel):
    """An nst-fast ONNX export run by ONNX Runtime (no torch)."""

    def __init__(self, path: Path, provider: str = "auto", threads: int = 0, cpu_arena: bool = True) -> None:
        """``cpu_arena=False``: no ONNX Runtime CPU memory arena, for a long-running server: the arena keeps the
        largest run's activations (hundreds of bytes per pixel) for good; without it they are freed after each
        run (measured in README.md, "Serve over HTTP")."""
        import onnxruntime as ort

        providers = choose_providers(provider, ort.get_available_providers())
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: TensorRT/CUDA fallbacks are reported by us, not as warnings
        if threads:
            options.intra_op_num_threads = threads
        options.enable_cpu_mem_arena = cpu_arena
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own pybind exception types
            raise StylizeError(f"{path}: not a loadable ONNX model ({first_line(error)})") from error
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if META_FORMAT not in meta:
            raise StylizeError(
                f"{path}: not an nst-fast model (no {META_FORMAT!r} metadata); export one with "
                "`python export.py ckpt_path=RUN/checkpoints/last.ckpt`"
            )
        if meta[META_FORMAT] != EXPORT_FORMAT:
            raise StylizeError(f"{path}: export format {meta[META_FORMAT]!r}; this version reads {EXPORT_FORMAT!r}")
        self.layout = meta.get(META_LAYOUT, LAYOUT_NCHW_FLOAT)
        expected_type = "tensor(uint8)" if self.layout == LAYOUT_HWC_UINT8 else "tensor(float)"
        self.styles, self.identity = styles_from_metadata(meta)
        self.takes_weights = len(inputs) == 2
        if (
            self.layout not in INPUT_DESCRIPTIONS
            or len(inputs) not in (1, 2)
            or inputs[0].name != INPUT_NAME
            or inputs[0].type != expected_type
            or len(outputs) != 1
            or (self.takes_weights and (inputs[1].name != WEIGHTS_NAME or inputs[1].shape[-1] != len(self.styles)))
        ):
            found = ", ".join(f"{i.name}: {i.type} {i.shape}" for i in inputs)
            raise StylizeError(
                f"{path}: not an nst-fast model (expected input {INPUT_NAME!r} of {expected_type}, and "
                f"{WEIGHTS_NAME!r} [N, {len(self.styles)}] for multi-style models; found {found})"
            )
        self.metadata = dict(meta)
        # A function of the settings, not a method: a bound method held by ``_staged`` would put this model in a
        # reference cycle, and its sessions would wait for the garbage collector instead of going with the model (a
        # process forked meanwhile, e.g. a DataLoader worker, that collects them hangs on their threads).
        passes = functools.partial(pass_session, providers=providers, threads=threads, cpu_arena=cpu_arena)
        self._staged = load_staged(path, passes)
        if self._staged is None:
            self.tiles_missing = (
                f"{tiles_name(path.name)} is not beside {path.name}; export the model again (export.tiles=true, "
                "the default) to stylise large photos tile by tile"
            )
        used = [p.removesuffix("ExecutionProvider") for p in self.session.get_providers()]
        self.description = (
            f"{path.name} (ONNX, style {meta.get(META_STYLE_NAME, '?')!r}, {meta.get(META_PRECISION, 'fp32')}, "
            f"{self.layout}, providers {', '.join(used)})"
        )

    def staged(self) -> StagedModel | None:
        return self._staged

    def __call__(self, batch: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        if self.layout == LAYOUT_HWC_UINT8:
            outputs = [self._run(np.ascontiguousarray(image), weights) for image in batch]
            return np.stack(outputs).astype(np.float32) / 255.0
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
        rows = None if weights is None else np.repeat(weights[None].astype(np.float32), len(batch), axis=0)
        return self._run(x, rows).transpose(0, 2, 3, 1)

    def _run(self, x: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        feeds = {INPUT_NAME: x}
        if self.takes_weights:
            if weights is None:
                raise StylizeError(f"this model blends {len(self.styles)} styles: pass style weights")
            feeds[WEIGHTS_NAME] = weights.astype(np.float32)
        try:
            return self.session.run(None, feeds)[0]
        except Exception as error:  # onnxruntime's own exception types (e.g. out of memory)
            raise StylizeError(f"ONNX Runtime failed on input {x.shape} ({first_line(error)})") from error


class TorchModel(StyleModel):
    """A TorchScript export (``.pt``/``.ts``) or a training checkpoint (``.ckpt``), run by PyTorch."""

    def __init__(self, path: Path, device: str = "auto") -> None:
        try:
            import torch  # only this path needs torch
        except ImportError as error:
            raise StylizeError(
                f"{path.name}: TorchScript files and training checkpoints need PyTorch, which is not installed: "
                "pip install 'nst-fast[train]', or use an exported .onnx model"
            ) from error

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except RuntimeError as error:
            raise StylizeError(f"bad --device {device!r}: {error}") from error
        self.torch = torch
        if path.suffix.lower() == ".ckpt":
            from nst_fast.checkpoint import load_transformer
            from nst_fast.interface import exported_interface

            try:
                network, info = load_transformer(path, map_location="cpu")
            except (ValueError, KeyError, TypeError, AttributeError) as error:  # CheckpointError is a ValueError
                raise StylizeError(first_line(error)) from error
            network = exported_interface(network, info)  # (image, style_weights) like the exported files
            self.styles, self.identity = info.style_names, info.identity
            self.takes_weights = info.transformer.get("num_conditions", 1) > 1
            style, kind = "+".join(self.styles), "checkpoint"
        else:
            extra = {TORCHSCRIPT_META_FILE: ""}
            try:
                network = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            except Exception as error:  # torch.jit.load raises RuntimeError/ValueError/zip errors
                raise StylizeError(f"{path}: not a loadable TorchScript file ({first_line(error)})") from error
            try:
                meta = json.loads(extra[TORCHSCRIPT_META_FILE] or "null")
            except (json.JSONDecodeError, UnicodeDecodeError):
                meta = None
            if not isinstance(meta, dict) or META_FORMAT not in meta:
                raise StylizeError(f"{path}: not an nst-fast TorchScript export (no {TORCHSCRIPT_META_FILE} inside)")
            self.styles, self.identity = styles_from_metadata(meta)
            self.takes_weights = metadata_conditions(meta) > 1
            style, kind = meta.get(META_STYLE_NAME, "?"), "TorchScript"
        self.network = network.to(self.device).eval()
        self.description = f"{path.name} ({kind}, style {style!r}, torch on {self.device})"

    def __call__(self, batch: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
            if self.takes_weights:
                if weights is None:
                    raise StylizeError(f"this model blends {len(self.styles)} styles: pass style weights")
                rows = torch.from_numpy(weights.astype(np.float32)).to(self.device).expand(len(batch), -1)
                y = self.network(x, rows)
            else:
                y = self.network(x)
            return y.permute(0, 2, 3, 1).float().cpu().numpy()


def resolve_model(spec: str | os.PathLike | None) -> Path:
    """The model file for ``--model``: a path, or the name of a bundled model (``nst_fast.assets.BUNDLED_MODELS``);
    without one, the bundled default. ``StylizeError`` when neither exists."""
    if spec is None:
        spec = DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.is_file() or str(spec) not in BUNDLED_MODELS:
        if not path.is_file():
            raise StylizeError(f"model {str(path)!r} does not exist (bundled models: {', '.join(BUNDLED_MODELS)})")
        return path
    try:
        return bundled_model(str(spec))
    except MissingFileError as error:
        raise StylizeError(str(error)) from error


def load_model(
    path: str | os.PathLike | None,
    provider: str = "auto",
    device: str = "auto",
    threads: int = 0,
    cpu_arena: bool = True,
) -> StyleModel:
    """Load ``--model`` (``resolve_model``: a file or a bundled model's name): ``.onnx`` via ONNX Runtime
    (``cpu_arena``: see ``OnnxModel``); ``.pt``/``.ts``/``.ckpt`` via PyTorch."""
    path = resolve_model(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxModel(path, provider, threads, cpu_arena)
    if suffix in (".pt", ".ts", ".ckpt"):
        return TorchModel(path, device)
    raise StylizeError(f"{path}: unknown model type {suffix or '(no suffix)'!r}; expected .onnx, .pt, .ts or .ckpt")
