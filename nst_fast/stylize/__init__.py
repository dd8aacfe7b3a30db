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
needs only onnxruntime, NumPy, Pillow and PyAV: this package imports torch only for ``.pt``/``.ts``/``.ckpt``.

Images of the same size that follow each other (a folder of camera photos, video frames) go through the model
together, up to ``--batch-size`` at a time; memory stays bounded by one batch. Exit status: 0 when everything was written, 1 when some
input failed (each failure is reported on one line and the rest still runs), 2 for a usage error (bad model,
missing input, impossible output path).

Modules: ``models`` (loading ONNX/TorchScript/checkpoints), ``styles`` (style names, blends, strength),
``core`` (stylising arrays and image files: what the CLI and the server share), ``jobs`` (inputs to outputs),
``tiling`` (large photos tile by tile, exactly), ``video`` (video files), ``temporal`` (``--temporal``: blending frames along the optical flow), ``cli`` (the
command line). The model-file conventions live in ``nst_fast.conventions``.
"""

from nst_fast.errors import StylizeError
from nst_fast.stylize.cli import main
from nst_fast.stylize.core import LoadedImage, load_image, stylize_array, stylize_image, stylize_images
from nst_fast.stylize.jobs import Job, plan_jobs
from nst_fast.stylize.models import OnnxModel, StyleModel, TorchModel, choose_providers, load_model
from nst_fast.stylize.styles import parse_style_weights
from nst_fast.stylize.tiling import Tiling
from nst_fast.stylize.video import stylize_video

__all__ = [
    "Job",
    "LoadedImage",
    "OnnxModel",
    "StyleModel",
    "StylizeError",
    "Tiling",
    "TorchModel",
    "choose_providers",
    "load_image",
    "load_model",
    "main",
    "parse_style_weights",
    "plan_jobs",
    "stylize_array",
    "stylize_image",
    "stylize_images",
    "stylize_video",
]
