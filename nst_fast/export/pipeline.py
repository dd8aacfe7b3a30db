"""The whole export of a checkpoint: write every asked-for file into a staging folder, verify each, and move them
into ``out_dir`` only when all passed, so that nothing half-written is ever left."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nst_fast.checkpoint import CheckpointInfo, load_transformer
from nst_fast.conventions import LAYOUT_HWC_UINT8, LAYOUT_NCHW_FLOAT, tiles_name
from nst_fast.errors import first_line
from nst_fast.export.int8 import Int8Settings, export_int8, int8_calibration_files
from nst_fast.export.metadata import style_thumbnails
from nst_fast.export.results import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    TRITON_FOLDER,
    UINT8_TOLERANCE,
    WEB_FOLDER,
    ExportedFile,
    ExportError,
    ExportResult,
    ExportUsageError,
)
from nst_fast.export.tiles import TILES_INT8_MIN_PSNR, TILES_TOLERANCE, TILES_VERIFY_SIZE, verify_tiles, write_tiles
from nst_fast.export.triton import (
    TritonConfigError,
    TritonOptions,
    config_summary,
    model_config_schema,
    triton_model_name,
    write_triton_model,
)
from nst_fast.export.verify import Runner, check_onnx, check_torchscript, eager_runner, verification_weights
from nst_fast.export.writers import export_onnx, export_onnx_uint8, export_torchscript
from nst_fast.models.transformer import TransformerNet
from nst_fast.serve.site import site_models, with_model, write_site
from nst_fast.serve.webfiles import Runtime, RuntimeMissing

Log = Callable[[str], None]


@dataclass
class FileStep:
    """One exported file: its kind (``ExportResult.file``), name, how to write it and how to verify it (returning
    the worst max |difference|, the tolerance and the shapes tried)."""

    kind: str
    filename: str
    write: Callable[[Path], None]
    check: Callable[[Path], tuple[float, float, tuple[tuple[int, ...], ...]]]


def default_out_dir(ckpt_path: Path) -> Path:
    """``RUN/export`` for ``RUN/checkpoints/X.ckpt``; otherwise an ``export`` folder beside the checkpoint."""
    parent = ckpt_path.parent
    return (parent.parent if parent.name == "checkpoints" else parent) / "export"


def model_name(info: CheckpointInfo, ckpt_path: Path) -> str:
    """File-name-safe style name (``starry+wave+...`` for several), or the checkpoint's stem."""
    raw = "+".join(name for name in info.style_names if name) or ckpt_path.stem
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", raw).strip("._") or "model"


def load_for_export(ckpt_path: Path) -> tuple[TransformerNet, CheckpointInfo]:
    """The float32 eval-mode network and what the checkpoint says; ``ExportUsageError`` for a file that is not one."""
    try:
        network, info = load_transformer(ckpt_path)
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # CheckpointError is a ValueError
        message = first_line(error)
        if str(ckpt_path) not in message:
            message = f"{ckpt_path}: not a valid nst-fast checkpoint ({type(error).__name__}: {message})"
        raise ExportUsageError(message) from error
    return network.float().eval(), info


def file_steps(
    network: TransformerNet,
    info: CheckpointInfo,
    name: str,
    *,
    opset: int,
    torchscript: bool,
    fp16: bool,
    uint8: bool,
    tolerances: tuple[float, float, float],
    thumbnails: list[str | None],
) -> list[FileStep]:
    """The files to write, in order: ``NAME.onnx``, then as asked ``NAME.fp16.onnx``, ``NAME.uint8.onnx`` and
    ``NAME.torchscript.pt``, each verified against the eager network. ``tolerances``: fp32, fp16, uint8."""
    reference: Runner = eager_runner(network, info)
    cases = verification_weights(info)
    fp32_tolerance, fp16_tolerance, uint8_tolerance = tolerances

    def onnx_step(
        kind: str, suffix: str, write: Callable[[Path], None], layout: str, tolerance: float, uint8_io: bool = False
    ) -> FileStep:
        def check(path: Path) -> tuple[float, float, tuple]:
            diff, shapes = check_onnx(path, opset, layout, reference, cases, tolerance, uint8_io)
            return diff, tolerance, shapes

        return FileStep(kind, f"{name}{suffix}", write, check)

    def torchscript_check(path: Path) -> tuple[float, float, tuple]:
        diff, shapes = check_torchscript(path, reference, cases, fp32_tolerance)
        return diff, fp32_tolerance, shapes

    def write_onnx(fp16: bool = False) -> Callable[[Path], None]:
        return lambda path: export_onnx(network, path, info, opset=opset, fp16=fp16, thumbnails=thumbnails)

    def write_uint8(path: Path) -> None:  # from NAME.onnx, staged before it
        export_onnx_uint8(path.with_name(f"{name}.onnx"), path, info, thumbnails=thumbnails)

    def write_torchscript(path: Path) -> None:
        export_torchscript(network, path, info, thumbnails)

    steps = [onnx_step("onnx", ".onnx", write_onnx(), LAYOUT_NCHW_FLOAT, fp32_tolerance)]
    if fp16:
        steps.append(onnx_step("onnx_fp16", ".fp16.onnx", write_onnx(fp16=True), LAYOUT_NCHW_FLOAT, fp16_tolerance))
    if uint8:
        steps.append(
            onnx_step("onnx_uint8", ".uint8.onnx", write_uint8, LAYOUT_HWC_UINT8, uint8_tolerance, uint8_io=True)
        )
    if torchscript:
        steps.append(FileStep("torchscript", f"{name}.torchscript.pt", write_torchscript, torchscript_check))
    return steps


def check_triton_options(triton: TritonOptions | None) -> None:
    """Refuse unusable Triton options, or a missing ``tritonclient``, before anything is exported."""
    if triton is None:
        return
    try:
        triton.check()
        model_config_schema()
    except TritonConfigError as error:
        raise ExportUsageError(str(error)) from error


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
    web: bool = False,
    tiles: bool = True,
    log: Log = print,
) -> ExportResult:
    """Export ``ckpt_path`` to ONNX (+ TorchScript, fp16, uint8 and int8 ONNX as asked), verify, then move into
    ``out_dir``; with ``triton``, also a Triton model repository ``out_dir/triton/`` serving the float32 ONNX
    file (see ``nst_fast.export.triton``); with ``web``, a static site ``out_dir/web/`` running the float32 ONNX
    file in the browser, beside the models already there (``nst_fast.serve.site``). Raises ``ExportError``
    (one-line message) for expected failures; leaves nothing behind then."""
    ckpt_path = Path(ckpt_path).expanduser().resolve()
    if opset < 18:
        raise ExportUsageError(f"opset {opset} is too old: the dynamo exporter needs opset 18 or newer")
    check_triton_options(triton)
    runtime = web_runtime() if web else None
    network, info = load_for_export(ckpt_path)
    out_dir = Path(out_dir).expanduser().resolve() if out_dir else default_out_dir(ckpt_path)
    name = name or model_name(info, ckpt_path)
    int8_settings = int8_settings or Int8Settings()
    int8_files = int8_calibration_files(int8_settings) if int8 else []
    log(
        f"export: {ckpt_path} (style {'+'.join(info.condition_names) or '?'!r}, step {info.global_step}, "
        f"TransformerNet{info.transformer}) -> {out_dir}"
    )
    result = ExportResult(out_dir=out_dir, info=info)
    with staging_folder(out_dir) as staging:
        steps = file_steps(
            network,
            info,
            name,
            opset=opset,
            torchscript=torchscript,
            fp16=fp16,
            uint8=uint8,
            tolerances=(tolerance, fp16_tolerance, uint8_tolerance),
            thumbnails=style_thumbnails(info, log),
        )
        for step in steps:
            result.files.append(write_and_verify(step, staging, out_dir, log))
        if int8:
            result.files.append(stage_int8(staging, out_dir, name, info, int8_settings, int8_files, opset, log))
        if tiles:
            result.files += stage_tiles(result.files, staging, out_dir, info, log)
        stage_sites(staging, result, name, triton, runtime, log)
        move_into_place(staging, result)
    log(f"export: wrote {len(result.files)} verified file(s) to {out_dir}")
    return result


def stage_int8(
    staging: Path,
    out_dir: Path,
    name: str,
    info: CheckpointInfo,
    settings: Int8Settings,
    calibration_files: list[Path],
    opset: int,
    log: Log,
) -> ExportedFile:
    """``NAME.int8.onnx`` quantised from the staged ``NAME.onnx`` (``export_int8``), as it will stand in
    ``out_dir``; a failure is one line naming the file."""
    int8_file = one_line_errors(
        f"{name}.int8.onnx: int8 export failed",
        lambda p: export_int8(staging / f"{name}.onnx", p, info, settings, calibration_files, opset, log),
        staging / f"{name}.int8.onnx",
    )
    return replace(int8_file, path=out_dir / int8_file.path.name)


def stage_tiles(
    exported: list[ExportedFile], staging: Path, out_dir: Path, info: CheckpointInfo, log: Log
) -> list[ExportedFile]:
    """``NAME.tiles.zip`` beside each staged ONNX file of ``exported`` (``write_verified_tiles``), the halos
    measured on the first and reused; the tiles files as they will stand in ``out_dir``."""
    written: list[ExportedFile] = []
    halos = None
    for onnx_file in [f for f in exported if f.path.suffix == ".onnx"]:
        tiles_file, halos = one_line_errors(
            f"{tiles_name(onnx_file.path.name)}: staging for tiled inference failed",
            lambda p, onnx_file=onnx_file, halos=halos: write_verified_tiles(
                staging / onnx_file.path.name, p, halos, verification_weights(info), onnx_file.kind, log
            ),
            staging / tiles_name(onnx_file.path.name),
        )
        written.append(replace(tiles_file, path=out_dir / tiles_file.path.name))
    return written


def stage_sites(
    staging: Path, result: ExportResult, name: str, triton: TritonOptions | None, runtime: Runtime | None, log: Log
) -> None:
    """What serves the float32 ONNX file: the Triton model repository (``triton``) and the static web site
    (``runtime``, the browser runtime's files), staged and recorded in ``result``."""
    out_dir, info = result.out_dir, result.info
    if triton is not None:
        model_dir = one_line_errors(
            "triton: writing the model repository failed",
            lambda p: write_triton(staging / f"{name}.onnx", p, triton_model_name(name), triton, info, log),
            staging / TRITON_FOLDER,
        )
        result.triton = out_dir / TRITON_FOLDER / model_dir.name
    if runtime is not None:
        one_line_errors(
            f"{WEB_FOLDER}/: writing the static site failed",
            lambda p: write_web(staging / f"{name}.onnx", p, out_dir / WEB_FOLDER, runtime, log),
            staging / WEB_FOLDER,
        )
        result.web = out_dir / WEB_FOLDER


def write_verified_tiles(
    onnx_path: Path, path: Path, halos: list[int] | None, cases: list, kind: str, log: Log
) -> tuple[ExportedFile, list[int]]:
    """``NAME.tiles.zip`` for ``onnx_path`` (halos measured, or ``halos``: those of the float32 file), verified
    against it (``verify_tiles``), logged; returns the file's record and the halos."""
    plan = write_tiles(onnx_path, path, halos)
    int8 = kind == "onnx_int8"
    diff, psnr, side = verify_tiles(onnx_path, path, cases, int8)
    halos = [step["halo"] for step in plan["passes"]]
    tolerance = f"PSNR {psnr:.1f} dB, at least {TILES_INT8_MIN_PSNR:g}" if int8 else f"tolerance {TILES_TOLERANCE}"
    log(
        f"  {path.name}: OK, {len(halos)} passes (halos {min(halos)}-{max(halos)} px), tiled at {side} px vs whole "
        f"image: max |diff| {diff} grey level(s) ({tolerance})"
    )
    limit = TILES_INT8_MIN_PSNR if int8 else float(TILES_TOLERANCE)
    return ExportedFile(path, f"{kind}_tiles", float(diff), limit, (TILES_VERIFY_SIZE,)), halos


def write_and_verify(step: FileStep, staging: Path, out_dir: Path, log: Log) -> ExportedFile:
    """Write one file into ``staging`` and verify it; the record names where it will be moved to."""
    path = staging / step.filename
    one_line_errors(f"{step.filename}: export failed", step.write, path)
    diff, tolerance, shapes = one_line_errors(f"{step.filename}: verification crashed", step.check, path)
    shown = ", ".join("x".join(map(str, s)) for s in shapes)
    log(f"  {step.filename}: OK, max |diff| to eager {diff:.2e} (tolerance {tolerance:g}) at {shown}")
    return ExportedFile(out_dir / step.filename, step.kind, diff, tolerance, shapes)


@contextmanager
def staging_folder(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside ``out_dir``, removed afterwards; if anything fails inside, also every folder that
    was created for ``out_dir``. A file-system error becomes an ``ExportError`` naming ``out_dir``."""
    created = _first_missing(out_dir.parent)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as error:
        _remove_created(created)
        raise ExportError(f"cannot write to {out_dir}: {error.strerror or error}") from error
    try:
        yield staging
    except BaseException as error:  # leave nothing behind, whatever went wrong
        shutil.rmtree(staging, ignore_errors=True)
        _remove_created(created)
        if isinstance(error, OSError):
            raise ExportError(f"cannot write to {out_dir}: {error.strerror or error}") from error
        raise
    shutil.rmtree(staging, ignore_errors=True)


def move_into_place(staging: Path, result: ExportResult) -> None:
    """Move the verified files (and the Triton model folder, file by file: other versions or models already in
    ``out_dir/triton/`` stay) from ``staging`` into ``result.out_dir``; ``ExportError`` for a stray file."""
    expected = (
        {Path(f.path).name for f in result.files}
        | ({TRITON_FOLDER} if result.triton is not None else set())
        | ({WEB_FOLDER} if result.web is not None else set())
    )
    stray = sorted(p.name for p in staging.iterdir() if p.name not in expected)
    if stray:
        raise ExportError(f"the exporter wrote unexpected extra files: {', '.join(stray)}")
    result.out_dir.mkdir(exist_ok=True)
    for exported in result.files:
        (staging / exported.path.name).replace(exported.path)
    if result.triton is not None:
        move_tree(staging / TRITON_FOLDER / result.triton.name, result.triton)
    if result.web is not None:
        move_tree(staging / WEB_FOLDER, result.web)


def move_tree(staged: Path, target_dir: Path) -> None:
    """Move the files under ``staged`` to the same places under ``target_dir``, one by one: other files there
    (another Triton model, a site's CNAME) stay."""
    for source in sorted(p for p in staged.rglob("*") if p.is_file()):
        target = target_dir / source.relative_to(staged)
        target.parent.mkdir(parents=True, exist_ok=True)
        source.replace(target)


def web_runtime() -> Runtime:
    """The onnxruntime-web files ``export.web`` copies; ``ExportUsageError`` before exporting when absent."""
    try:
        return Runtime.load()
    except RuntimeMissing as error:
        raise ExportUsageError(f"export.web=true needs the page's runtime: {error}") from None


def write_web(onnx_path: Path, folder: Path, published: Path, runtime: Runtime, log: Log) -> None:
    """The static site into ``folder``: the models of the site already at ``published`` and ``onnx_path``
    (replacing one of its name), unchanged, with the page and ``runtime``; logged."""
    registry = write_site(folder, with_model(site_models(published), onnx_path), runtime)
    log(
        f"  {WEB_FOLDER}/: static site with onnxruntime-web {runtime.version} and the model(s) "
        f"{', '.join(registry.models)} (the first is the default), {folder_megabytes(folder)}; try it with "
        f"`python -m http.server -d {published}` and open http://localhost:8000/"
    )


def folder_megabytes(folder: Path) -> str:
    return f"{sum(p.stat().st_size for p in folder.rglob('*') if p.is_file()) / 1e6:.1f} MB"


def write_triton(
    onnx_path: Path, repository: Path, model: str, options: TritonOptions, info: CheckpointInfo, log: Log
) -> Path:
    """``write_triton_model``, logged; a config that does not match the graph is an ``ExportError``."""
    try:
        folder, config = write_triton_model(onnx_path, repository, model, options, info.style_names, info.identity)
    except TritonConfigError as error:
        raise ExportError(
            f"{TRITON_FOLDER}/{model}/config.pbtxt: {error} (a bug in the config writer: please report it, with "
            f"the file; meanwhile export with export.triton.enabled=false)"
        ) from error
    log(
        f"  {TRITON_FOLDER}/{model}/: config.pbtxt parses as Triton's ModelConfig and matches 1/model.onnx "
        f"({config_summary(config)})"
    )
    return folder


def one_line_errors(what: str, action: Callable[[Path], Any], path: Path) -> Any:
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
