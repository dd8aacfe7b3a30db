"""Loading and running a style model: ONNX files via ONNX Runtime (no torch), TorchScript files and training
checkpoints via PyTorch (imported only for those). Every model maps uint8 RGB ``[N, H, W, 3]`` to float RGB in
[0, 1] with the same call, so the CLI and the server do not care which kind they hold.
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

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
)
from nst_fast.errors import StylizeError, first_line

#: ONNX Runtime execution providers, fastest first; ``--provider auto`` takes those this build has.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider", "coreml": "CoreMLExecutionProvider", "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider", "openvino": "OpenVINOExecutionProvider", "rocm": "ROCMExecutionProvider",
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

    @abc.abstractmethod
    def __call__(self, batch: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Stylise a batch of same-sized images."""



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
            self.layout not in INPUT_DESCRIPTIONS or len(inputs) not in (1, 2) or inputs[0].name != INPUT_NAME
            or inputs[0].type != expected_type or len(outputs) != 1
            or (self.takes_weights and (inputs[1].name != WEIGHTS_NAME or inputs[1].shape[-1] != len(self.styles)))
        ):
            found = ", ".join(f"{i.name}: {i.type} {i.shape}" for i in inputs)
            raise StylizeError(
                f"{path}: not an nst-fast model (expected input {INPUT_NAME!r} of {expected_type}, and "
                f"{WEIGHTS_NAME!r} [N, {len(self.styles)}] for multi-style models; found {found})"
            )
        self.metadata = dict(meta)
        used = [p.removesuffix("ExecutionProvider") for p in self.session.get_providers()]
        self.description = (
            f"{path.name} (ONNX, style {meta.get(META_STYLE_NAME, '?')!r}, {meta.get(META_PRECISION, 'fp32')}, "
            f"{self.layout}, providers {', '.join(used)})"
        )

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
        import torch  # only this path needs torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except RuntimeError as error:
            raise StylizeError(f"bad --device {device!r}: {error}") from error
        self.torch = torch
        if path.suffix.lower() == ".ckpt":
            from nst_fast.checkpoint import load_transformer
            from nst_fast.export import exported_interface

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


def load_model(
    path: str | os.PathLike, provider: str = "auto", device: str = "auto", threads: int = 0, cpu_arena: bool = True
) -> StyleModel:
    """Load ``--model``: ``.onnx`` via ONNX Runtime (``cpu_arena``: see ``OnnxModel``); ``.pt``/``.ts``/``.ckpt``
    via PyTorch."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise StylizeError(f"model {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxModel(path, provider, threads, cpu_arena)
    if suffix in (".pt", ".ts", ".ckpt"):
        return TorchModel(path, device)
    raise StylizeError(f"{path}: unknown model type {suffix or '(no suffix)'!r}; expected .onnx, .pt, .ts or .ckpt")
