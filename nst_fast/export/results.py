"""What an export produced, its errors, and the verification tolerances."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nst_fast.checkpoint import CheckpointInfo
from nst_fast.errors import NstFastError

#: Default verification tolerances (max abs difference to the eager float32 network).
FP32_TOLERANCE = 1e-3  # on the [0, 1] scale
FP16_TOLERANCE = 1e-2  # on the [0, 1] scale, about 2.5 grey levels: fp16 has an 11-bit mantissa
UINT8_TOLERANCE = 2  # grey levels, after rounding the eager output the same way
#: Verification inputs: an odd size, and a batch of 2 at another size (NCHW); uint8 models take single HWC images.
VERIFY_SHAPES = ((1, 3, 181, 243), (2, 3, 96, 128))
VERIFY_SHAPES_UINT8 = ((181, 243, 3), (96, 128, 3))
#: Folder of ``out_dir`` that holds the Triton model repository.
TRITON_FOLDER = "triton"
#: Folder of ``out_dir`` that holds the static web site (``export.web``).
WEB_FOLDER = "web"


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
    """What an export wrote: verified files, the Triton model folder (``out_dir/triton/NAME``) and the static web
    site (``out_dir/web``) if asked."""

    out_dir: Path
    info: CheckpointInfo
    files: list[ExportedFile] = field(default_factory=list)
    triton: Path | None = None
    web: Path | None = None

    def file(self, kind: str) -> Path:
        return next(f.path for f in self.files if f.kind == kind)
