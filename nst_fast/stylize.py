"""``nst-stylize``: run an exported style network on images, folders and videos.

    nst-stylize --model export/starry.onnx photo.jpg -o photo_starry.png
    nst-stylize --model export/starry.onnx photos/ -o stylized/          # mirrors photos/'s tree
    nst-stylize --model export/starry.onnx clip.mp4 -o clip_starry.mp4   # audio is copied
    nst-stylize --model outputs/starry/DATE/checkpoints/last.ckpt photo.jpg -o out.png --device cuda
    nst-stylize --model five.onnx photo.jpg -o out.png --style wave                 # multi-style models
    nst-stylize --model five.onnx photo.jpg -o out.png --style starry=0.6,wave=0.4 --strength 0.8
    nst-stylize --model five.onnx --list-styles

``--model`` is an ONNX file written by ``python export.py`` (float32 NCHW, fp16 or uint8 HWC variant), a
TorchScript file from the same export (``.pt``/``.ts``), or a training checkpoint (``.ckpt``). The ONNX path
needs only onnxruntime, NumPy, Pillow and PyAV: this module imports torch only for ``.pt``/``.ts``/``.ckpt``.

Images of the same size that follow each other (a folder of camera photos, video frames) go through the model
together, up to ``--batch-size`` at a time; memory stays bounded by one batch. Exit status: 0 when everything was written, 1 when some
input failed (each failure is reported on one line and the rest still runs), 2 for a usage error (bad model,
missing input, impossible output path).
"""

from __future__ import annotations

import abc
import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nst_fast.errors import NstFastError, first_line
from nst_fast.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    WRITABLE_SUFFIXES,
    ImageReadError,
    fit_within,
    open_image,
    preserve_color,
    save_image,
)

PROG = "nst-stylize"

# --- What an exported model carries (written by nst_fast.export; kept here so that reading needs no torch) ---

#: ONNX ``metadata_props`` keys / TorchScript extra file written by ``nst_fast.export``.
META_FORMAT = "nst_fast.format"
META_VERSION = "nst_fast.version"
META_STYLE_NAME = "nst_fast.style_name"
META_STYLE_IMAGE = "nst_fast.style_image"
META_STEPS = "nst_fast.training_steps"
META_TRANSFORMER = "nst_fast.transformer"
META_LAYOUT = "nst_fast.layout"
META_PRECISION = "nst_fast.precision"
META_INPUT = "nst_fast.input"
#: JSON list of the style names in ``style_weights`` order (every export; one name for single-style models).
META_STYLES = "nst_fast.styles"
#: JSON list of the style images' paths at training time, in the same order.
META_STYLE_IMAGES = "nst_fast.style_images"
#: ``"true"`` when the network has the identity condition (``1 - sum(style_weights)``): strength works.
META_IDENTITY = "nst_fast.identity"
EXPORT_FORMAT = "1"
TORCHSCRIPT_META_FILE = "nst_fast.json"
INPUT_NAME = "image"
#: Second input of multi-condition models: float32 ``[N, S]`` (``[S]`` for the uint8 model), one weight per style.
WEIGHTS_NAME = "style_weights"
OUTPUT_NAME = "stylized"
#: ``image``: float32 ``[N, 3, H, W]`` RGB in [0, 1] -> ``stylized`` of the same shape and range.
LAYOUT_NCHW_FLOAT = "nchw_float32"
#: ``image``: uint8 ``[H, W, 3]`` RGB (one image) -> ``stylized`` uint8 ``[H, W, 3]``.
LAYOUT_HWC_UINT8 = "hwc_uint8"
INPUT_DESCRIPTIONS = {
    LAYOUT_NCHW_FLOAT: "image: float32 [N, 3, H, W] RGB in [0, 1], H, W >= 5 -> stylized: same shape, [0, 1]",
    LAYOUT_HWC_UINT8: "image: uint8 [H, W, 3] RGB, H, W >= 5 -> stylized: uint8 [H, W, 3] RGB",
}
#: How multi-condition models describe their second input (appended to the layout's description).
WEIGHTS_DESCRIPTIONS = {
    LAYOUT_NCHW_FLOAT: "style_weights: float32 [N, S], one row per image, styles in nst_fast.styles order",
    LAYOUT_HWC_UINT8: "style_weights: float32 [S], styles in nst_fast.styles order",
}
MIN_SIDE = 5

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
#: Preferred encoders per output container (the first one this PyAV build has is used).
VIDEO_CODECS = {
    ".mp4": ("libx264", "h264", "mpeg4"), ".m4v": ("libx264", "h264", "mpeg4"), ".mov": ("libx264", "h264", "mpeg4"),
    ".mkv": ("libx264", "h264", "mpeg4"), ".webm": ("libvpx-vp9", "libvpx"), ".avi": ("mpeg4", "libx264"),
}

#: ONNX Runtime execution providers, fastest first; ``--provider auto`` takes those this build has.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider", "coreml": "CoreMLExecutionProvider", "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider", "openvino": "OpenVINOExecutionProvider", "rocm": "ROCMExecutionProvider",
}


class StylizeError(NstFastError):
    """An expected failure (bad model, input or output): its message is printed on one line."""


# --- Models ----------------------------------------------------------------------------------------------------


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


def _styles_from_metadata(meta: dict[str, str]) -> tuple[list[str], bool]:
    """Style names and identity flag of an export (exports before multi-style models name one style)."""
    try:
        styles = json.loads(meta[META_STYLES]) if META_STYLES in meta else [meta.get(META_STYLE_NAME, "")]
    except json.JSONDecodeError:
        styles = [meta.get(META_STYLE_NAME, "")]
    return [str(name) for name in styles], meta.get(META_IDENTITY, "false") == "true"


def metadata_conditions(meta: dict[str, str]) -> int:
    """Number of conditions of an exported network (``nst_fast.transformer``'s ``num_conditions``, else 1):
    more than one means the model takes ``style_weights``."""
    try:
        return int(json.loads(meta.get(META_TRANSFORMER, "{}")).get("num_conditions", 1))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1


def parse_style_weights(model: StyleModel, style: str | None, strength: float | None) -> np.ndarray | None:
    """Style weights ``[S]`` for ``--style`` and ``--strength`` (``None`` for one-condition models).

    ``style``: ``NAME`` (that style alone), ``NAME=W,NAME=W,...`` (a blend; weights >= 0, sum <= 1, the rest to
    the identity), or ``None`` (the only style of a one-style model). ``strength`` in [0, 1] scales the weights,
    the identity taking the rest: 0 the identity alone (the network's reproduction of the photo), 1 the full
    style. Raises ``StylizeError`` naming the model's styles for an unknown name, a negative weight, a sum above
    1, or a strength the model cannot give.
    """
    names = ", ".join(model.styles) + (" (and the identity: --strength)" if model.identity else "")
    if strength is not None and not model.identity:
        raise StylizeError(
            f"--strength needs a model trained with the identity condition; this one has the styles {names} only"
        )
    if strength is not None and not 0.0 <= strength <= 1.0:
        raise StylizeError(f"--strength {strength:g} is out of range: it must be in [0, 1] (styles: {names})")
    weights = np.zeros(len(model.styles), dtype=np.float32)
    if style is None:
        if len(model.styles) != 1:
            raise StylizeError(f"this model has {len(model.styles)} styles: choose with --style NAME or a blend "
                               f"NAME=W,NAME=W (styles: {names})")
        weights[0] = 1.0
    else:
        parts = [part.strip() for part in style.split(",") if part.strip()]
        if not parts:
            raise StylizeError(f"--style {style!r} names no style (styles: {names})")
        for part in parts:
            name, separator, value = part.partition("=")
            name = name.strip()
            if name not in model.styles:
                raise StylizeError(f"--style: unknown style {name!r}; this model has: {names}")
            try:
                weight = float(value) if separator else 1.0
            except ValueError:
                raise StylizeError(f"--style: weight {value!r} of {name!r} is not a number (styles: {names})") from None
            if not np.isfinite(weight) or weight < 0:
                raise StylizeError(f"--style: weight {value} of {name!r} must be a finite number >= 0 (styles: {names})")
            weights[model.styles.index(name)] += weight
        total = float(weights.sum())
        if total > 1.0 + 1e-6:
            raise StylizeError(f"--style: weights sum to {total:g} > 1; give weights that sum to at most 1 (styles: {names})")
        if total < 1.0 - 1e-6 and not model.identity:
            raise StylizeError(
                f"--style: weights sum to {total:g}; without the identity condition they must sum to 1 (styles: {names})"
            )
    if strength is not None:
        weights *= strength
    return weights if model.takes_weights else None


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

    def __init__(self, path: Path, provider: str = "auto", threads: int = 0) -> None:
        import onnxruntime as ort

        providers = choose_providers(provider, ort.get_available_providers())
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: TensorRT/CUDA fallbacks are reported by us, not as warnings
        if threads:
            options.intra_op_num_threads = threads
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
        self.styles, self.identity = _styles_from_metadata(meta)
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
            self.styles, self.identity = _styles_from_metadata(meta)
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


def load_model(path: str | os.PathLike, provider: str = "auto", device: str = "auto", threads: int = 0) -> StyleModel:
    """Load ``--model``: ``.onnx`` via ONNX Runtime; ``.pt``/``.ts``/``.ckpt`` via PyTorch."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise StylizeError(f"model {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxModel(path, provider, threads)
    if suffix in (".pt", ".ts", ".ckpt"):
        return TorchModel(path, device)
    raise StylizeError(f"{path}: unknown model type {suffix or '(no suffix)'!r}; expected .onnx, .pt, .ts or .ckpt")


# --- Planning: which input goes to which output ------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path
    video: bool


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def output_suffix(source: Path, image_format: str | None) -> str:
    """Suffix of a folder-mode output: ``--format`` if given; the input's if Pillow writes it as RGB; else .png."""
    if is_video(source):
        return source.suffix
    if image_format:
        return "." + image_format.lower().lstrip(".")
    return source.suffix if source.suffix.lower() in WRITABLE_SUFFIXES else ".png"


def _files_in(folder: Path, exclude: Path | None) -> list[Path]:
    suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    files = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in suffixes or path.name.startswith(".") or not path.is_file():
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue  # our own outputs when -o lies inside the input folder
        files.append(path)
    return files


def plan_jobs(inputs: Sequence[Path], output: Path, image_format: str | None = None) -> list[Job]:
    """Map inputs to outputs. One input file and an ``-o`` with a suffix (not an existing folder): that file.
    Otherwise ``-o`` is a folder: a file input ``x.jpg`` -> ``OUT/x.jpg``; a folder input ``D`` ->
    ``OUT/<path relative to D>`` for every image and video under ``D`` (recursively)."""
    for path in inputs:
        if not path.exists():
            raise StylizeError(f"input {str(path)!r} does not exist")
    if image_format and "." + image_format.lower().lstrip(".") not in WRITABLE_SUFFIXES:
        raise StylizeError(f"--format {image_format!r} is not one of {', '.join(s[1:] for s in WRITABLE_SUFFIXES)}")
    single_file = len(inputs) == 1 and inputs[0].is_file() and output.suffix != "" and not output.is_dir()
    if single_file:
        source = inputs[0]
        suffix = output.suffix.lower()
        if is_video(source) and not is_video(output):
            raise StylizeError(f"output {str(output)!r} for video {str(source)!r} must end in one of {', '.join(VIDEO_SUFFIXES)}")
        if not is_video(source) and suffix not in WRITABLE_SUFFIXES:
            raise StylizeError(f"output {str(output)!r} must end in one of {', '.join(WRITABLE_SUFFIXES)}")
        jobs = [Job(source, output, is_video(source))]
    else:
        if output.exists() and not output.is_dir():
            raise StylizeError(f"-o {str(output)!r} must be a folder when stylising several files or a folder")
        out_resolved = output.resolve()
        jobs = []
        for path in inputs:
            if path.is_dir():
                for source in _files_in(path, out_resolved):
                    relative = source.relative_to(path)
                    target = output / relative.with_suffix(output_suffix(source, image_format))
                    jobs.append(Job(source, target, is_video(source)))
            else:
                target = output / Path(path.name).with_suffix(output_suffix(path, image_format))
                jobs.append(Job(path, target, is_video(path)))
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = job.target.resolve()
        if key == job.source.resolve():
            raise StylizeError(f"output {str(job.target)!r} would overwrite its input; choose another -o")
        if key in seen:
            raise StylizeError(f"{str(seen[key])!r} and {str(job.source)!r} would both be written to {str(job.target)!r}")
        seen[key] = job.source
    return jobs


# --- Images and videos ---------------------------------------------------------------------------------------------


def _check_size(width: int, height: int, what: str) -> None:
    if min(width, height) < MIN_SIDE:
        raise StylizeError(f"{what}: {width}x{height} is too small (the network needs at least {MIN_SIDE}x{MIN_SIDE})")


def stylize_array(
    model: StyleModel, rgb: np.ndarray, keep_color: bool = False, weights: np.ndarray | None = None
) -> np.ndarray:
    """Stylise uint8 RGB images ``[N, H, W, 3]`` -> float RGB in [0, 1] with the style ``weights``
    (``parse_style_weights``), optionally keeping their colours."""
    out = model(rgb, weights)
    if out.shape != rgb.shape:
        raise StylizeError(f"the model returned shape {out.shape} for input {rgb.shape}")
    if keep_color:
        out = preserve_color(rgb.astype(np.float32) / 255.0, out)
    return out


@dataclass
class LoadedImage:
    """An input image ready for the model: uint8 RGB ``[H, W, 3]`` and its alpha channel, if any."""

    job: Job
    rgb: np.ndarray
    alpha: Any


def load_image(job: Job, max_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read ``job.source`` (EXIF-upright, RGB, downscaled to ``max_size``) and check it is large enough."""
    rgb, alpha = open_image(job.source, max_pixels)
    rgb = fit_within(rgb, max_size)
    if alpha is not None:
        alpha = fit_within(alpha, max_size)
    _check_size(rgb.width, rgb.height, str(job.source))
    return LoadedImage(job, np.asarray(rgb), alpha)


def stylize_images(
    model: StyleModel, images: Sequence[LoadedImage], *, keep_color: bool = False, quality: int = 95,
    weights: np.ndarray | None = None,
) -> None:
    """Stylise same-sized images in one model call and write each to its target (same size, alpha kept where
    the output format stores it)."""
    out = stylize_array(model, np.stack([image.rgb for image in images]), keep_color, weights)
    for image, stylized in zip(images, out):
        save_image(image.job.target, stylized, image.alpha, quality=quality)


def stylize_image(
    model: StyleModel, source: Path, target: Path, *, keep_color: bool = False, max_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS, quality: int = 95, weights: np.ndarray | None = None,
) -> None:
    """One image file -> one image file of the same size (or downscaled to ``max_size``)."""
    image = load_image(Job(source, target, video=False), max_size, max_pixels)
    stylize_images(model, [image], keep_color=keep_color, quality=quality, weights=weights)


#: Encoders that take ``--crf`` (libvpx-vp9 as crf + 13).
CRF_ENCODERS = ("libx264", "libvpx-vp9")


def video_encoder(target: Path) -> str | None:
    """The encoder used for a video written to ``target``: the first one of ``VIDEO_CODECS`` this PyAV build has."""
    import av

    return next((c for c in VIDEO_CODECS.get(target.suffix.lower(), ("libx264", "mpeg4")) if c in av.codecs_available), None)


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def stylize_video(
    model: StyleModel, source: Path, target: Path, *, keep_color: bool = False, max_size: int | None = None,
    batch_size: int = 4, crf: int = 18, progress: Any = None, weights: np.ndarray | None = None,
) -> int:
    """Stylise every frame of ``source``'s first video stream into ``target`` (same frame rate, timestamps and
    size, or downscaled to ``max_size`` with even sides); audio streams are copied (re-encoded where the output
    container cannot hold their codec). Returns the number of frames.
    ``progress``: a tqdm bar (its total is set from the stream's frame count when the container knows it)."""
    import av

    try:
        container = av.open(str(source))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise StylizeError(f"{source}: not a readable video ({error})") from error
    partial = target.with_name(f".{target.stem}.partial{target.suffix}")
    frames = 0
    try:
        if not container.streams.video:
            raise StylizeError(f"{source}: no video stream")
        video_in = container.streams.video[0]
        video_in.thread_type = "AUTO"
        audio_in = list(container.streams.audio)
        width, height = video_in.codec_context.width, video_in.codec_context.height
        if max_size and max(width, height) > max_size:
            scale = max_size / max(width, height)
            width, height = _even(width * scale), _even(height * scale)
        _check_size(width, height, str(source))
        if progress is not None and video_in.frames:
            progress.total = video_in.frames
            progress.refresh()
        codec = video_encoder(target)
        if codec is None:
            raise StylizeError(f"{target}: this PyAV build has no encoder for {target.suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        output = av.open(str(partial), "w")
        try:
            rate = video_in.average_rate or video_in.guessed_rate or 25
            video_out = output.add_stream(codec, rate=rate)
            video_out.width, video_out.height = width, height
            # 4:2:0 needs even sides; odd-sized frames keep their exact size in 4:4:4 (H.264 High 4:4:4).
            video_out.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            if codec in CRF_ENCODERS:
                video_out.options = {"crf": str(crf)} if codec == "libx264" else {"crf": str(crf + 13), "b": "0"}
            video_out.time_base = video_in.time_base
            # Audio is copied packet by packet; a codec the output container cannot hold (e.g. AAC into .webm)
            # is re-encoded with the container's default audio codec instead.
            audio_map, audio_encoders = {}, {}
            for stream in audio_in:
                try:
                    audio_map[stream.index] = output.add_stream_from_template(stream)
                except (av.FFmpegError, ValueError) as error:
                    codec_name = output.default_audio_codec
                    if not codec_name or codec_name == "none":
                        raise StylizeError(f"{source}: cannot store audio stream {stream.index} in {target.suffix} ({error})") from error
                    audio_rate = 48000 if "opus" in codec_name else stream.rate
                    encoder = output.add_stream(codec_name, rate=audio_rate)
                    encoder.layout = stream.layout
                    audio_encoders[stream.index] = encoder

            pending: list[tuple[np.ndarray, int | None, object]] = []
            next_pts = 0

            def flush() -> None:
                nonlocal frames
                if not pending:
                    return
                batch = np.stack([array for array, _, _ in pending])
                styled = stylize_array(model, batch, keep_color, weights)
                for (_, pts, time_base), frame_rgb in zip(pending, styled):
                    frame = av.VideoFrame.from_ndarray(
                        (np.clip(frame_rgb, 0, 1) * 255 + 0.5).astype(np.uint8), format="rgb24"
                    )
                    frame.pts, frame.time_base = pts, time_base
                    output.mux(video_out.encode(frame))
                    frames += 1
                    if progress is not None:
                        progress.update(1)
                pending.clear()

            for packet in container.demux(video_in, *audio_in):
                if packet.stream.index == video_in.index:
                    for frame in packet.decode():
                        array = frame.to_ndarray(format="rgb24", width=width, height=height)
                        pts = frame.pts
                        if pts is None:  # keep a regular clock for streams without timestamps
                            pts = int(next_pts / (rate * video_in.time_base))
                        next_pts += 1
                        pending.append((array, pts, video_in.time_base))
                        if len(pending) >= batch_size:
                            flush()
                elif packet.stream.index in audio_encoders:
                    encoder = audio_encoders[packet.stream.index]
                    for frame in packet.decode():  # the empty packet at the end flushes the decoder
                        frame.pts = None  # the encoder counts samples at its own rate
                        output.mux(encoder.encode(frame))
                elif packet.dts is not None:
                    packet.stream = audio_map[packet.stream.index]
                    output.mux(packet)
            flush()  # demux ends with an empty packet per stream, whose decode() flushed the decoder above
            output.mux(video_out.encode(None))
            for encoder in audio_encoders.values():
                output.mux(encoder.encode(None))
        finally:
            output.close()
        if frames == 0:
            raise StylizeError(f"{source}: no video frames could be decoded")
        os.replace(partial, target)
    except av.FFmpegError as error:
        raise StylizeError(f"{source}: video error ({error})") from error
    finally:
        container.close()
        partial.unlink(missing_ok=True)
    return frames


def ignored_options(
    args: argparse.Namespace, parser: argparse.ArgumentParser, model: StyleModel, jobs: Sequence[Job]
) -> list[str]:
    """Warnings for options given on the command line that this model or these outputs do not use, so that
    none is silently ignored."""
    given = {name for name in ("device", "provider", "threads", "batch_size", "crf")
             if getattr(args, name) != parser.get_default(name)}
    onnx = isinstance(model, OnnxModel)
    warnings = []
    if "device" in given and onnx:
        warnings.append(f"--device {args.device} has no effect on ONNX models; choose ONNX Runtime's with --provider")
    for name in ("provider", "threads"):
        if name in given and not onnx:
            warnings.append(f"--{name} {getattr(args, name)} has no effect on torch models (ONNX Runtime only); "
                            "choose the device with --device")
    if "batch_size" in given and onnx and model.layout == LAYOUT_HWC_UINT8:
        warnings.append(f"--batch-size {args.batch_size} has no effect on uint8 models: they take one image per call")
    if "crf" in given:
        for job in jobs:
            encoder = video_encoder(job.target) if job.video else None
            if encoder is not None and encoder not in CRF_ENCODERS:
                warnings.append(f"--crf {args.crf} has no effect on {job.target.name}: its {encoder} encoder has no "
                                "CRF (only H.264 and VP9 outputs have: .mp4, .mov, .mkv, .webm)")
    return warnings


# --- Command line -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Stylise images, folders of images, and videos with an nst-fast model.",
        epilog="Exit status: 0 all written, 1 some inputs failed (reported one per line), 2 usage error.",
    )
    parser.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help="image files, folders, or video files")
    parser.add_argument("--model", "-m", required=True, type=Path, help=".onnx, TorchScript .pt/.ts, or .ckpt")
    parser.add_argument(
        "-o", "--output", type=Path,
        help="output file for a single input file; otherwise a folder (mirroring the inputs' relative paths)",
    )
    parser.add_argument(
        "--style", default=None,
        help="multi-style models: NAME, or a blend NAME=W,NAME=W (weights >= 0, sum <= 1; the rest goes to the "
             "identity, i.e. the photo); see --list-styles",
    )
    parser.add_argument("--strength", type=float, default=None,
                        help="0 (the identity: the network's reproduction of the photo) .. 1 (the full style); "
                             "needs a model trained with the identity condition")
    parser.add_argument("--list-styles", action="store_true", help="print the model's styles and exit")
    parser.add_argument("--preserve-color", action="store_true", help="keep the input's colours, take only luminance")
    parser.add_argument("--max-size", type=int, default=None, help="downscale inputs whose longer side exceeds this")
    parser.add_argument("--format", dest="image_format", default=None, help="image format of folder outputs (png, jpg, ...)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default 95)")
    parser.add_argument("--provider", default="auto", help="ONNX Runtime provider: auto (TensorRT > CUDA > CPU), tensorrt, cuda, cpu, ...")
    parser.add_argument("--device", default="auto", help="torch device for .pt/.ts/.ckpt models (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="same-sized images or video frames per model call (default 4)")
    parser.add_argument("--crf", type=int, default=18, help="video quality for H.264 (lower is better; default 18)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.list_styles and (not args.inputs or args.output is None):
        parser.error("INPUT and -o/--output are required (except with --list-styles)")
    if args.max_size is not None and args.max_size < MIN_SIDE:
        parser.error(f"--max-size must be at least {MIN_SIDE}")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")

    def say(message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)

    try:
        if args.list_styles:
            model = load_model(args.model, args.provider, args.device, args.threads)
            print("\n".join(model.styles))
            if model.identity:
                print(f"({len(model.styles)} style(s) and the identity: --strength and blends summing below 1 work)")
            return 0
        jobs = plan_jobs(args.inputs, args.output, args.image_format)
        if not jobs:
            raise StylizeError("no images or videos found in " + ", ".join(str(p) for p in args.inputs))
        model = load_model(args.model, args.provider, args.device, args.threads)
        weights = parse_style_weights(model, args.style, args.strength)
    except StylizeError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    for warning in ignored_options(args, parser, model, jobs):
        say(f"{PROG}: warning: {warning}")
    show = not args.quiet
    if show:
        say(f"{PROG}: {model.description}: {len(jobs)} input(s)")
    failures = 0
    images = [job for job in jobs if not job.video]
    videos = [job for job in jobs if job.video]

    def report(job: Job, error: BaseException) -> None:
        if isinstance(error, (ImageReadError, StylizeError)):
            say(f"{PROG}: {error}" if str(job.source) in str(error) else f"{PROG}: {job.source}: {error}")
        else:  # write errors, runtime failures
            say(f"{PROG}: {job.source}: {type(error).__name__}: {first_line(error)}")

    expected = (ImageReadError, StylizeError, OSError, ValueError, RuntimeError, MemoryError)
    pending: list[LoadedImage] = []

    def flush() -> int:
        """Run the pending same-sized images; returns how many failed."""
        if not pending:
            return 0
        batch = list(pending)
        pending.clear()
        try:
            stylize_images(model, batch, keep_color=args.preserve_color, quality=args.quality, weights=weights)
        except expected as error:
            if len(batch) == 1:
                report(batch[0].job, error)
                return 1
            # Retry one by one, so that one bad file (e.g. an unwritable target) does not fail the others.
            failed = 0
            for image in batch:
                try:
                    stylize_images(model, [image], keep_color=args.preserve_color, quality=args.quality, weights=weights)
                except expected as single_error:
                    report(image.job, single_error)
                    failed += 1
            return failed
        finally:
            bar.update(len(batch))
        return 0

    with tqdm(total=len(images), unit="img", disable=not show or len(images) < 2, file=sys.stderr) as bar:
        for job in images:
            try:
                image = load_image(job, args.max_size)
            except expected as error:
                report(job, error)
                failures += 1
                bar.update(1)
                continue
            if pending and (image.rgb.shape != pending[0].rgb.shape or len(pending) >= args.batch_size):
                failures += flush()
            pending.append(image)
        failures += flush()
    for job in videos:
        with tqdm(unit="frame", desc=job.source.name, disable=not show, file=sys.stderr) as bar:
            try:
                stylize_video(
                    model, job.source, job.target, keep_color=args.preserve_color, max_size=args.max_size,
                    batch_size=args.batch_size, crf=args.crf, progress=bar, weights=weights,
                )
            except StylizeError as error:
                failures += 1
                say(f"{PROG}: {error}")
            except (OSError, ValueError, RuntimeError, MemoryError) as error:
                failures += 1
                report(job, error)
    if show:
        written = len(jobs) - failures
        say(f"{PROG}: {written} of {len(jobs)} written to {args.output}" + (f", {failures} failed" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
