"""``nst-convert-photos SRC DEST``: convert a folder of photos, once, into a streamed set for ``data=stream``.

Every image under ``SRC`` (recursively; unreadable files are skipped and named) is scaled down so that its
shorter side is at most ``--size`` pixels, re-encoded as JPEG at ``--quality``, and written with its relative
path into litdata's chunks (``--chunk-bytes`` each) at ``DEST``: a local folder or ``s3://bucket/prefix``.
``DEST/nst-fast.json`` records the settings and, once finished, the number of photos. An interrupted conversion
resumes with the part (``--part-size`` files) it was converting when the same command runs again; a finished
set is left alone unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_fast.data import resize_shorter_side
from nst_fast.errors import ConfigError, NstFastError
from nst_fast.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, ImageReadError, list_images, open_rgb
from nst_fast.stream import storage

#: The layout of the samples (``{"name": relative path, "image": JPEG bytes}``); bumped when it changes.
FORMAT = 1
#: Settings that must match when an interrupted conversion resumes.
RESUME_KEYS = ("format", "source", "files", "size", "quality", "max_pixels", "chunk_bytes", "part_size", "workers")


@dataclass(frozen=True)
class PhotoEncoder:
    """litdata's per-input function (runs in its worker processes): one photo path to one sample, or none for
    an unreadable file (named on stderr). Photos larger than ``size`` on their shorter side are scaled down."""

    root: str
    size: int
    quality: int
    max_pixels: int

    def __call__(self, path: str) -> Iterator[dict[str, Any]]:
        try:
            image = open_rgb(path, self.max_pixels)
        except ImageReadError as error:
            print(f"skipped unreadable photo {error}", file=sys.stderr, flush=True)
            return
        if min(image.size) > self.size:
            image = resize_shorter_side(image, self.size)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self.quality)
        yield {"name": os.path.relpath(path, self.root), "image": buffer.getvalue()}


def _photos_in_index(dest: str, endpoint_url: str | None) -> int | None:
    """The number of samples in the set's ``index.json``; ``None`` before the first part is finished."""
    text = storage.read_text(dest, storage.INDEX_FILE, endpoint_url)
    return sum(chunk["chunk_size"] for chunk in json.loads(text)["chunks"]) if text is not None else None


def _progress(dest: str, settings: dict[str, Any], endpoint_url: str | None) -> tuple[int, int | None]:
    """Where a conversion into ``dest`` with ``settings`` starts: ``(files done, photos written)``. Raises
    ``ConfigError`` when ``dest`` holds something else, or a finished set, or one converted with other settings.
    Fills in ``settings["workers"]`` (the interrupted conversion's number when it was ``None``)."""
    existing = storage.read_metadata(dest, endpoint_url)
    resuming = existing is not None and not existing.get("complete")
    if settings["workers"] is None:
        settings["workers"] = existing["workers"] if resuming else min(settings["files"], os.cpu_count() or 1)
    if existing is None:
        others = [name for name in storage.list_names(dest, endpoint_url) if not storage.is_ours(name)]
        if others:
            raise ConfigError(f"{dest} is not empty ({others[0]}, ...): convert into an empty folder or prefix")
        return 0, None  # empty, or the chunks of an interrupted first part: litdata starts over
    if not resuming:
        raise ConfigError(
            f"{dest} already holds a converted set of {existing.get('photos')} photos; pass "
            "--overwrite to convert again"
        )
    differing = {key: existing.get(key) for key in RESUME_KEYS if existing.get(key) != settings[key]}
    if differing:
        raise ConfigError(
            f"{dest} holds an interrupted conversion with other settings {differing}: run it again with those "
            "to resume it, or pass --overwrite to start over"
        )
    done, photos = existing["files_done"], _photos_in_index(dest, endpoint_url)
    if photos != existing["photos_done"]:  # the part under way was merged into index.json: it is done
        done = min(done + settings["part_size"], settings["files"])
    return done, photos


def _source_files(source: str | os.PathLike) -> tuple[Path, list[str]]:
    """The folder ``source`` (resolved) and every image under it; ``ConfigError`` when it is not a folder or
    holds none."""
    root = Path(source).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"SRC={str(source)!r} is not a folder")
    files = [str(path) for path in list_images(root)]
    if not files:
        raise ConfigError(f"SRC={str(source)!r} holds no images (looked recursively for {', '.join(IMAGE_SUFFIXES)})")
    return root, files


def convert(
    source: str | os.PathLike,
    dest: str,
    size: int = 256,
    quality: int = 90,
    workers: int | None = None,
    chunk_bytes: str = "64MB",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    endpoint_url: str | None = None,
    overwrite: bool = False,
    part_size: int = 10_000,
) -> dict[str, Any]:
    """Convert every photo under ``source`` into a streamed set at ``dest`` (see the module doc); returns the
    set's description as written to ``nst-fast.json`` (``photos``, ``skipped``, ``seconds``, settings).

    The files go through litdata's ``optimize`` ``part_size`` at a time, each part appended to the set; before
    each part ``nst-fast.json`` records how far the conversion got, so that a rerun continues with the part
    under way (litdata's own checkpoints miscount inputs that yield no sample, such as unreadable files).
    """
    root, files = _source_files(source)
    dest = storage.check_url(dest, "DEST")
    if overwrite:
        storage.remove_set(dest, endpoint_url)
    settings = {
        "format": FORMAT,
        "source": str(root),
        "files": len(files),
        "size": size,
        "quality": quality,
        "max_pixels": max_pixels,
        "chunk_bytes": chunk_bytes,
        "part_size": part_size,
        "workers": workers,
    }
    done, photos = _progress(dest, settings, endpoint_url)
    print(
        f"{'resuming the conversion of' if done else 'converting'} {len(files)} files from {root} into {dest}"
        + (f" at file {done + 1}" if done else ""),
        file=sys.stderr,
        flush=True,
    )
    encoder = PhotoEncoder(str(root), size, quality, max_pixels)
    start = time.perf_counter()
    for first in range(done, len(files), part_size):
        if first:
            storage.write_metadata(
                dest, {**settings, "complete": False, "files_done": first, "photos_done": photos}, endpoint_url
            )
        _optimize(encoder, files[first : first + part_size], dest, settings, endpoint_url, append=photos is not None)
        photos = _photos_in_index(dest, endpoint_url)
    photos = photos or 0
    metadata = {
        **settings,
        "complete": True,
        "photos": photos,
        "skipped": len(files) - photos,
        "seconds": round(time.perf_counter() - start, 3),
    }
    storage.write_metadata(dest, metadata, endpoint_url)
    return metadata


def _optimize(
    encoder: PhotoEncoder,
    inputs: list[str],
    dest: str,
    settings: dict[str, Any],
    endpoint_url: str | None,
    append: bool,
) -> None:
    """litdata's ``optimize`` over ``inputs``, appended to the set when it already has photos, run in a helper
    process started for this call; its exception, if any, is raised here.

    litdata forks its workers. A fork copies the locks that the forking process's other threads hold at that
    instant (an S3 client's, a server's, logging's: a caller may have any of them), and a worker that needs one
    waits forever. The helper is a fresh interpreter (spawned: the caller's environment and standard streams as
    they are now) whose only threads are litdata's own, as when ``nst-convert-photos`` runs; litdata's changes to
    the process-wide start method stay in it. A script that calls ``convert`` needs the usual ``if __name__ ==
    "__main__":`` guard, since the helper imports the script's main module."""
    options = {
        "fn": encoder,
        "inputs": inputs,
        "output_dir": dest,
        "chunk_bytes": settings["chunk_bytes"],
        "num_workers": min(settings["workers"], len(inputs)),
        "mode": "append" if append else None,
        "reorder_files": False,
        "storage_options": storage.storage_options(endpoint_url),
        "start_method": "fork",
    }
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    helper = context.Process(target=_optimize_in_helper, args=(sender, options), name="nst-convert-optimize")
    helper.start()
    sender.close()
    try:
        error = receiver.recv()
    except EOFError:
        helper.join()
        error = NstFastError(f"the conversion process stopped without an answer (exit code {helper.exitcode})")
    finally:
        receiver.close()
    helper.join()
    if error is not None:
        raise error


def _optimize_in_helper(sender: Any, options: dict[str, Any]) -> None:
    """``_optimize``'s helper process: litdata's ``optimize(**options)``; sends ``None`` or the error."""
    error: BaseException | None = None
    try:
        storage.allow_plain_http_endpoints()
        storage.require("litdata").optimize(**options)
    except BaseException as caught:  # KeyboardInterrupt too: the caller decides
        error = caught
    try:
        sender.send(error)
    except Exception:  # an exception that does not pickle: its text
        sender.send(NstFastError(f"{type(error).__name__}: {error}"))
    finally:
        sender.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nst-convert-photos", description=__doc__.split("\n\n")[0].strip("`"))
    parser.add_argument("source", metavar="SRC", help="folder of photos (searched recursively)")
    parser.add_argument("dest", metavar="DEST", help="output: a local folder or s3://bucket/prefix")
    parser.add_argument("--size", type=int, default=256, help="largest shorter side stored, in pixels (256)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1-95 (90)")
    parser.add_argument("--workers", type=int, default=None, help="conversion processes (default: the CPU count)")
    parser.add_argument("--chunk-bytes", default="64MB", help="size of each chunk file (64MB)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="skip images with more pixels")
    parser.add_argument("--endpoint-url", default=None, help="S3-compatible server (default: AWS_ENDPOINT_URL or AWS)")
    parser.add_argument(
        "--part-size",
        type=int,
        default=10_000,
        help="files per resumable part (10000): an interruption loses at most the part under way",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a set already at DEST")
    args = parser.parse_args(argv)
    if args.size < 1 or not 1 <= args.quality <= 95 or (args.workers or 1) < 1 or args.part_size < 1:
        parser.error(
            f"--size={args.size} and --part-size={args.part_size} must be >= 1, --quality={args.quality} "
            f"in 1..95, --workers={args.workers} >= 1"
        )
    try:
        metadata = convert(
            args.source,
            args.dest,
            args.size,
            args.quality,
            args.workers,
            args.chunk_bytes,
            args.max_pixels,
            args.endpoint_url,
            args.overwrite,
            args.part_size,
        )
    except NstFastError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rate = metadata["photos"] / metadata["seconds"] if metadata["seconds"] else float("nan")
    print(
        f"converted {metadata['photos']} photos ({metadata['skipped']} skipped) into {args.dest} in "
        f"{metadata['seconds']:.1f} s ({rate:.1f} photos/s); train with data=stream data.url={args.dest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
