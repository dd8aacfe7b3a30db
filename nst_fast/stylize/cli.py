"""``nst-stylize``: the command line around the inference core (see ``nst_fast.stylize``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nst_fast.assets import BUNDLED_MODELS, DEFAULT_MODEL
from nst_fast.conventions import LAYOUT_HWC_UINT8, MIN_SIDE
from nst_fast.errors import StylizeError, first_line
from nst_fast.images import ImageReadError
from nst_fast.stylize.core import LoadedImage, load_image, stylize_images
from nst_fast.stylize.jobs import Job, plan_jobs
from nst_fast.stylize.models import OnnxModel, StyleModel, load_model
from nst_fast.stylize.styles import parse_style_weights
from nst_fast.stylize.temporal import DEFAULT_WEIGHT, check_weight, require_opencv
from nst_fast.stylize.tiling import DEFAULT_TILE_SIZE, TILE_ABOVE_PIXELS, TILE_MODES, Tiling
from nst_fast.stylize.video import CRF_ENCODERS, stylize_video, video_encoder

PROG = "nst-stylize"


def ignored_options(
    args: argparse.Namespace, parser: argparse.ArgumentParser, model: StyleModel, jobs: Sequence[Job]
) -> list[str]:
    """Warnings for options given on the command line that this model or these outputs do not use, so that
    none is silently ignored."""
    given = {
        name
        for name in ("device", "provider", "threads", "batch_size", "crf", "temporal_weight", "tile_size")
        if getattr(args, name) != parser.get_default(name)
    }
    onnx = isinstance(model, OnnxModel)
    warnings = []
    if "device" in given and onnx:
        warnings.append(f"--device {args.device} has no effect on ONNX models; choose ONNX Runtime's with --provider")
    for name in ("provider", "threads"):
        if name in given and not onnx:
            warnings.append(
                f"--{name} {getattr(args, name)} has no effect on torch models (ONNX Runtime only); "
                "choose the device with --device"
            )
    if "batch_size" in given and onnx and model.layout == LAYOUT_HWC_UINT8:
        warnings.append(f"--batch-size {args.batch_size} has no effect on uint8 models: they take one image per call")
    if "crf" in given:
        for job in jobs:
            encoder = video_encoder(job.target) if job.video else None
            if encoder is not None and encoder not in CRF_ENCODERS:
                warnings.append(
                    f"--crf {args.crf} has no effect on {job.target.name}: its {encoder} encoder has no "
                    "CRF (only H.264 and VP9 outputs have: .mp4, .mov, .mkv, .webm)"
                )
    if "tile_size" in given and args.tile == "off":
        warnings.append(f"--tile-size {args.tile_size} has no effect with --tile off")
    if args.temporal and not any(job.video for job in jobs):
        warnings.append("--temporal has no effect on images (only on videos)")
    if "temporal_weight" in given and not args.temporal:
        warnings.append(f"--temporal-weight {args.temporal_weight} has no effect without --temporal")
    return warnings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Stylise images, folders of images, and videos with an nst-fast model.",
        epilog="Exit status: 0 all written, 1 some inputs failed (reported one per line), 2 usage error.",
    )
    parser.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help="image files, folders, or video files")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output file for a single input file; otherwise a folder (mirroring the inputs' relative paths)",
    )
    parser.add_argument("--max-size", type=int, default=None, help="downscale inputs whose longer side exceeds this")
    parser.add_argument(
        "--format", dest="image_format", default=None, help="image format of folder outputs (png, jpg, ...)"
    )
    parser.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default 95)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    _add_model_arguments(parser.add_argument_group("model and style"))
    _add_runtime_arguments(parser.add_argument_group("runtime"))
    _add_video_arguments(parser.add_argument_group("video"))
    return parser


def _add_model_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--model",
        "-m",
        default=None,
        help="an exported .onnx, TorchScript .pt/.ts or training .ckpt, or the name of a bundled model "
        f"({', '.join(BUNDLED_MODELS)}); default: the bundled {DEFAULT_MODEL!r} model",
    )
    group.add_argument(
        "--style",
        default=None,
        help="multi-style models: NAME, or a blend NAME=W,NAME=W (weights >= 0, sum <= 1; the rest goes to the "
        "identity, i.e. the photo); see --list-styles",
    )
    group.add_argument(
        "--strength",
        type=float,
        default=None,
        help="0 (the identity: the photo itself with model.residual_output, else the network's reproduction of "
        "it) .. 1 (the full style); needs a model trained with the identity condition",
    )
    group.add_argument("--list-styles", action="store_true", help="print the model's styles and exit")
    group.add_argument("--preserve-color", action="store_true", help="keep the input's colours, take only luminance")


def _add_runtime_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--provider",
        default="auto",
        help="ONNX Runtime provider: auto (TensorRT > CUDA > CPU), tensorrt, cuda, cpu, ...",
    )
    group.add_argument(
        "--device", default="auto", help="torch device for .pt/.ts/.ckpt models (default: cuda if available)"
    )
    group.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    group.add_argument(
        "--batch-size", type=int, default=4, help="same-sized images or video frames per model call (default 4)"
    )
    group.add_argument(
        "--tile",
        choices=TILE_MODES,
        default="auto",
        help="stylise images tile by tile, in memory bounded by the tile, with the whole-image result (exact: the "
        f"network's instance norms get the whole image's statistics): auto (above {TILE_ABOVE_PIXELS / 1e6:g} MP; "
        "default), on, off. Needs the NAME.tiles.zip export writes beside NAME.onnx; videos never tile",
    )
    group.add_argument(
        "--tile-size",
        type=int,
        default=DEFAULT_TILE_SIZE,
        help=f"tile side in pixels, a multiple of 4 and at least the network's halo (default {DEFAULT_TILE_SIZE}); "
        "smaller tiles use less memory and recompute more overlap",
    )


def _add_video_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--crf", type=int, default=18, help="video quality for H.264 (lower is better; default 18)")
    group.add_argument(
        "--temporal",
        action="store_true",
        help="videos: blend each frame with the previous output carried along the optical flow of the "
        "input, where the flow is consistent, to reduce flicker (needs opencv-python-headless)",
    )
    group.add_argument(
        "--temporal-weight",
        type=float,
        default=DEFAULT_WEIGHT,
        help=f"share of the previous output in --temporal's blend, in (0, 1) (default {DEFAULT_WEIGHT})",
    )


EXPECTED_ERRORS = (ImageReadError, StylizeError, OSError, ValueError, RuntimeError, MemoryError)


def say(message: str) -> None:
    """A line on stderr that does not break a progress bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def report(job: Job, error: BaseException) -> None:
    """One line for an input that failed: its path and the reason."""
    if isinstance(error, (ImageReadError, StylizeError)):
        say(f"{PROG}: {error}" if str(job.source) in str(error) else f"{PROG}: {job.source}: {error}")
    else:  # write errors, runtime failures
        say(f"{PROG}: {job.source}: {type(error).__name__}: {first_line(error)}")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors that argparse's types cannot express (exit status 2)."""
    if not args.list_styles and (not args.inputs or args.output is None):
        parser.error("INPUT and -o/--output are required (except with --list-styles)")
    if args.max_size is not None and args.max_size < MIN_SIDE:
        parser.error(f"--max-size must be at least {MIN_SIDE}")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")


def list_styles(model: StyleModel) -> None:
    print("\n".join(model.styles))
    if model.identity:
        print(f"({len(model.styles)} style(s) and the identity: --strength and blends summing below 1 work)")


class ImageBatches:
    """Consecutive same-sized images go through the model together, up to ``batch_size``; a failed batch is retried
    image by image, so that one bad file (e.g. an unwritable target) does not fail the others."""

    def __init__(self, model: StyleModel, args: argparse.Namespace, weights, progress) -> None:
        self.model, self.args, self.weights, self.progress = model, args, weights, progress
        self.pending: list[LoadedImage] = []
        self.failures = 0
        self.tiling = Tiling(args.tile, args.tile_size)
        self.warned_whole = False

    def add(self, job: Job) -> None:
        try:
            image = load_image(job, self.args.max_size)
        except EXPECTED_ERRORS as error:
            report(job, error)
            self.failures += 1
            self.progress.update(1)
            return
        height, width = image.rgb.shape[:2]
        if self.tiling.mode == "auto" and self.tiling.wanted(height, width) and self.model.staged() is None:
            if not self.warned_whole:
                say(
                    f"{PROG}: warning: {job.source} ({width}x{height}) goes through whole, in hundreds of bytes of "
                    f"memory per pixel: cannot tile: {self.model.tiles_missing}"
                )
                self.warned_whole = True
        if self.pending and (image.rgb.shape != self.pending[0].rgb.shape or len(self.pending) >= self.args.batch_size):
            self.flush()
        self.pending.append(image)

    def _run(self, batch: list[LoadedImage]) -> None:
        stylize_images(
            self.model,
            batch,
            keep_color=self.args.preserve_color,
            quality=self.args.quality,
            weights=self.weights,
            tiling=self.tiling,
        )

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            self._run(batch)
        except EXPECTED_ERRORS as error:
            if len(batch) == 1:
                report(batch[0].job, error)
                self.failures += 1
            else:
                for image in batch:
                    try:
                        self._run([image])
                    except EXPECTED_ERRORS as single_error:
                        report(image.job, single_error)
                        self.failures += 1
        finally:
            self.progress.update(len(batch))


def stylize_all_images(model: StyleModel, args: argparse.Namespace, weights, jobs: list[Job], show: bool) -> int:
    """Every image job, in same-sized batches; returns how many failed."""
    from tqdm import tqdm

    with tqdm(total=len(jobs), unit="img", disable=not show or len(jobs) < 2, file=sys.stderr) as bar:
        batches = ImageBatches(model, args, weights, bar)
        for job in jobs:
            batches.add(job)
        batches.flush()
    return batches.failures


def stylize_all_videos(model: StyleModel, args: argparse.Namespace, weights, jobs: list[Job], show: bool) -> int:
    """Every video job, frame by frame in batches; returns how many failed."""
    from tqdm import tqdm

    failures = 0
    for job in jobs:
        with tqdm(unit="frame", desc=job.source.name, disable=not show, file=sys.stderr) as bar:
            try:
                stylize_video(
                    model,
                    job.source,
                    job.target,
                    keep_color=args.preserve_color,
                    max_size=args.max_size,
                    batch_size=args.batch_size,
                    crf=args.crf,
                    progress=bar,
                    weights=weights,
                    temporal_weight=args.temporal_weight if args.temporal else None,
                )
            except StylizeError as error:
                failures += 1
                say(f"{PROG}: {error}")
            except (OSError, ValueError, RuntimeError, MemoryError) as error:
                failures += 1
                report(job, error)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    try:
        if args.list_styles:
            list_styles(load_model(args.model, args.provider, args.device, args.threads))
            return 0
        jobs = plan_jobs(args.inputs, args.output, args.image_format)
        if not jobs:
            raise StylizeError("no images or videos found in " + ", ".join(str(p) for p in args.inputs))
        if args.temporal:
            check_weight(args.temporal_weight)
            require_opencv()
        model = load_model(args.model, args.provider, args.device, args.threads)
        weights = parse_style_weights(model, args.style, args.strength)
        staged = model.staged()
        if args.tile == "on" and staged is None and any(not job.video for job in jobs):
            raise StylizeError(f"--tile on: cannot tile with {model.description}: {model.tiles_missing}")
        if args.tile != "off" and staged is not None:
            staged.check_tile_size(args.tile_size)
    except StylizeError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    for warning in ignored_options(args, parser, model, jobs):
        say(f"{PROG}: warning: {warning}")
    show = not args.quiet
    if show:
        say(f"{PROG}: {model.description}: {len(jobs)} input(s)")
    failures = stylize_all_images(model, args, weights, [job for job in jobs if not job.video], show)
    failures += stylize_all_videos(model, args, weights, [job for job in jobs if job.video], show)
    if show:
        written = len(jobs) - failures
        say(f"{PROG}: {written} of {len(jobs)} written to {args.output}" + (f", {failures} failed" if failures else ""))
    return 1 if failures else 0
