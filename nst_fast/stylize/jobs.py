"""Which input goes to which output: files, folders (mirrored recursively) and videos."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nst_fast.errors import StylizeError
from nst_fast.images import IMAGE_SUFFIXES, WRITABLE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
#: Preferred encoders per output container (the first one this PyAV build has is used).
VIDEO_CODECS = {
    ".mp4": ("libx264", "h264", "mpeg4"),
    ".m4v": ("libx264", "h264", "mpeg4"),
    ".mov": ("libx264", "h264", "mpeg4"),
    ".mkv": ("libx264", "h264", "mpeg4"),
    ".webm": ("libvpx-vp9", "libvpx"),
    ".avi": ("mpeg4", "libx264"),
}


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
            raise StylizeError(
                f"output {str(output)!r} for video {str(source)!r} must end in one of {', '.join(VIDEO_SUFFIXES)}"
            )
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
            raise StylizeError(
                f"{str(seen[key])!r} and {str(job.source)!r} would both be written to {str(job.target)!r}"
            )
        seen[key] = job.source
    return jobs
