"""``python export.py`` / ``nst-export``: the export config (``nst_fast/conf/export.yaml``) to ``export_checkpoint``'s
arguments, with one-line errors and the exit statuses of the README."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from nst_fast.errors import EXIT_FAILED, EXIT_USAGE
from nst_fast.export.int8 import Int8Settings
from nst_fast.export.pipeline import export_checkpoint
from nst_fast.export.results import ExportError, ExportUsageError
from nst_fast.export.triton import TritonOptions


def triton_options(settings: Any) -> TritonOptions | None:
    """``TritonOptions`` from ``export.triton.*`` (``None`` unless ``export.triton.enabled``);
    ``ExportUsageError`` for settings changed without ``enabled``, which would otherwise be silently ignored."""
    defaults = TritonOptions()
    given = {key: settings[key] for key in dataclasses.asdict(defaults)}
    if settings.enabled:
        return TritonOptions(**given)
    changed = [
        f"export.triton.{key}={str(value).lower() if isinstance(value, bool) else value}"
        for key, value in given.items()
        if value != getattr(defaults, key)
    ]
    if changed:
        verb = "needs" if len(changed) == 1 else "need"
        raise ExportUsageError(
            f"{', '.join(changed)} {verb} export.triton.enabled=true (they configure the Triton model)"
        )
    return None


def int8_settings(settings: Any) -> Int8Settings:
    """``Int8Settings`` from ``export.int8.*``."""
    return Int8Settings(
        calibration=settings.calibration or None,
        photos=int(settings.photos),
        size=int(settings.size),
        method=str(settings.method),
        min_psnr=float(settings.min_psnr),
    )


def run(cfg: Any) -> int:
    """Entry point for ``export.py`` (a Hydra config with ``ckpt_path`` and ``export.*``): returns the exit status
    (0 written, 1 the export failed, 2 unusable input) and prints expected errors on one line."""
    settings = cfg.export
    if not cfg.get("ckpt_path"):
        print(
            "export: error: ckpt_path is required, e.g. python export.py ckpt_path=RUN/checkpoints/last.ckpt",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        export_checkpoint(
            cfg.ckpt_path,
            settings.out_dir,
            name=settings.name,
            torchscript=bool(settings.torchscript),
            fp16=bool(settings.fp16),
            uint8=bool(settings.uint8),
            int8=bool(settings.int8.enabled),
            int8_settings=int8_settings(settings.int8),
            opset=int(settings.opset),
            tolerance=float(settings.tolerance),
            fp16_tolerance=float(settings.fp16_tolerance),
            uint8_tolerance=float(settings.uint8_tolerance),
            triton=triton_options(settings.triton),
            web=bool(settings.web),
            tiles=bool(settings.tiles),
        )
    except ExportError as error:
        print(f"export: error: {error}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, ExportUsageError) else EXIT_FAILED
    return 0
