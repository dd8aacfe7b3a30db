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
  convolutions, calibrated on photos; ``quantize``), same inputs and outputs as ``NAME.onnx``, verified against
  ``NAME.onnx`` on photos by PSNR (``int8``).
- optionally ``triton/NAME/config.pbtxt`` and ``triton/NAME/1/model.onnx``: a Triton model repository serving
  ``NAME.onnx`` (``NAME`` with ``+`` as ``_``), checked with Triton's schema and against the graph (``triton``).
- optionally ``web/``: a static site that runs ``NAME.onnx``, unchanged, in visitors' browsers (the nst-serve page
  with onnxruntime-web; ``nst_fast.serve.site``), beside the models exported there before; docs/browser.md.

Networks with more than one condition (several styles, or a style and the identity) get a second input
``style_weights`` in every format (``nst_fast.interface``). Every file carries the metadata of ``metadata`` and is
verified before anything is moved into place (``verify``, ``pipeline``).

Modules: ``results`` (what an export produced, errors), ``graphs`` (wrappers giving each file its graph),
``metadata``, ``writers``, ``verify``, ``int8`` and ``quantize``, ``triton``, ``pipeline`` (``export_checkpoint``)
and ``command`` (the config to arguments, for ``export.py``).
"""

from nst_fast.export.command import run
from nst_fast.export.int8 import Int8Settings
from nst_fast.export.pipeline import export_checkpoint
from nst_fast.export.results import ExportedFile, ExportError, ExportResult, ExportUsageError
from nst_fast.export.writers import export_onnx, export_onnx_uint8, export_torchscript

__all__ = [
    "ExportError",
    "ExportResult",
    "ExportUsageError",
    "ExportedFile",
    "Int8Settings",
    "export_checkpoint",
    "export_onnx",
    "export_onnx_uint8",
    "export_torchscript",
    "run",
]
