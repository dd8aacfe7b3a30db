"""Tiled inference of large photos: peak memory, time and fidelity against the whole-image pass.

    python bench/tiling.py --models RUN/export/NAME.onnx RUN/export/NAME.int8.onnx \
        --sizes 12,24,100 --whole-up-to 24 --photos ../shared/photos --crop docs/tiling_crop.jpg

``memory``: for each model and size (megapixels, 3:2), a held-out photo upscaled to that size (JPEG) goes through
``nst-stylize`` in a child process, ``--tile on`` and (up to ``--whole-up-to`` MP) ``--tile off``, interleaved;
its peak RSS (``wait4``'s ``ru_maxrss``) and wall time are recorded, and the two outputs compared. ``--crop``: a
100% crop of the largest size that ran both ways, whole next to tiled, where four tiles meet.

``fidelity``: each held-out photo upscaled to ``--fidelity-size`` (default 3000x2000) through the first model in
this process, whole and tiled at each of ``--tile-sizes`` (the first on every photo, the others on the first
``--extra-photos``): PSNR and max |difference| of the 8-bit outputs, and model time per megapixel, interleaved.

The models need their ``NAME.tiles.zip`` (``export.tiles=true``, the default). Prints tables, writes a JSON record.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from nst_fast.images import IMAGE_SUFFIXES, to_uint8  # noqa: E402
from nst_fast.stylize import OnnxModel, stylize_array  # noqa: E402
from nst_fast.stylize.tiling import Tiling  # noqa: E402

DEFAULT_PHOTOS = common.REPO_ROOT.parent / "shared" / "photos"


def size_for(megapixels: float) -> tuple[int, int]:
    """Width and height (multiples of 8, 3:2) of about ``megapixels``."""
    height = math.sqrt(megapixels * 1e6 / 1.5)
    return round(1.5 * height / 8) * 8, round(height / 8) * 8


def photo_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def upscaled(path: Path, width: int, height: int) -> np.ndarray:
    """The photo resized to ``width x height`` (bicubic), uint8 RGB."""
    image = Image.open(path).convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def run_stylize(args: list[str]) -> tuple[float, float]:
    """``nst-stylize ARGS`` in a child process: its wall time (s) and peak resident memory (MiB)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "nst_fast.stylize", *args, "--quiet"])
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"nst-stylize {' '.join(args)} failed with status {child.returncode}")
    return seconds, usage.ru_maxrss / 1024.0


def memory_runs(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    photo = photo_files(args.photos)[0]
    rows = []
    for megapixels in args.sizes:
        width, height = size_for(megapixels)
        source = work / f"photo_{width}x{height}.jpg"
        Image.fromarray(upscaled(photo, width, height)).save(source, quality=95)
        for model in args.models:
            modes = ["on", "off"] if megapixels <= args.whole_up_to else ["on"]
            outputs = {}
            for mode in modes:
                target = work / f"{model.stem}_{width}x{height}_{mode}.bmp"  # fast to write: the time is the model's
                seconds, peak = run_stylize(
                    [
                        "--model",
                        str(model),
                        str(source),
                        "-o",
                        str(target),
                        "--tile",
                        mode,
                        "--threads",
                        str(args.threads),
                    ]
                )
                outputs[mode] = target
                row = {
                    "model": model.name,
                    "size": f"{width}x{height}",
                    "megapixels": width * height / 1e6,
                    "tiled": mode == "on",
                    "seconds": seconds,
                    "seconds_per_mp": seconds / (width * height / 1e6),
                    "peak_rss_mib": peak,
                }
                print(row, flush=True)
                rows.append(row)
            if len(outputs) == 2:
                tiled, whole = (np.asarray(Image.open(outputs[m])) for m in ("on", "off"))
                rows[-1]["psnr_tiled_vs_whole_db"] = psnr(tiled, whole)
                rows[-1]["max_diff_tiled_vs_whole"] = int(np.abs(tiled.astype(int) - whole.astype(int)).max())
                if args.crop and model == args.models[0]:
                    write_crop(whole, tiled, args.crop, args.tile_size)
    return rows


def write_crop(whole: np.ndarray, tiled: np.ndarray, path: Path, tile: int, side: int = 384) -> None:
    """Whole | tiled | 16x difference, a ``side``-pixel 100% crop centred where four tiles meet (or as near as the
    image allows), as a JPEG."""
    height, width = whole.shape[:2]
    side = min(side, height, width)
    y = min(max(tile - side // 2, 0), height - side)
    x = min(max(2 * tile - side // 2, 0), width - side)
    crops = [whole[y : y + side, x : x + side], tiled[y : y + side, x : x + side]]
    difference = np.clip(np.abs(crops[0].astype(int) - crops[1].astype(int)) * 16, 0, 255).astype(np.uint8)
    gap = np.full((side, 8, 3), 255, dtype=np.uint8)
    strip = np.concatenate([crops[0], gap, crops[1], gap, difference], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).save(path, quality=85, optimize=True)
    print(f"crop: {path} (whole | tiled | |difference| x 16, {side}x{side} at ({x}, {y}))")


def fidelity_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    width, height = args.fidelity_size
    model = OnnxModel(args.models[0], threads=args.threads)
    staged = model.staged()
    if staged is None:
        raise SystemExit(f"{args.models[0]} has no tiles file beside it: export it with export.tiles=true")
    rows = []
    for index, photo in enumerate(photo_files(args.photos)):
        rgb = upscaled(photo, width, height)
        start = time.perf_counter()
        whole = to_uint8(stylize_array(model, rgb[None])[0])
        whole_seconds = time.perf_counter() - start
        for tile in args.tile_sizes if index < args.extra_photos else args.tile_sizes[:1]:
            start = time.perf_counter()
            tiled = staged(rgb, None, Tiling("on", tile))
            tiled_seconds = time.perf_counter() - start
            row = {
                "photo": photo.name,
                "tile": tile,
                "psnr_db": psnr(tiled, whole),
                "max_diff": int(np.abs(tiled.astype(int) - whole.astype(int)).max()),
                "whole_s": whole_seconds,
                "tiled_s": tiled_seconds,
                "time_ratio": tiled_seconds / whole_seconds,
            }
            print(row, flush=True)
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", type=Path, required=True, help="exported .onnx files (with tiles)")
    parser.add_argument("--sizes", default="12,24,48,100", help="memory runs: megapixels (default 12,24,48,100)")
    parser.add_argument("--whole-up-to", type=float, default=24, help="also the whole-image pass up to this many MP")
    parser.add_argument("--tile-size", type=int, default=1024, help="nst-stylize's --tile-size in the memory runs")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="held-out photos (../shared/photos)")
    parser.add_argument("--fidelity-size", default="3000x2000", help="fidelity runs: WIDTHxHEIGHT")
    parser.add_argument("--tile-sizes", default="1024,512,2048", help="fidelity runs: tile sides, the first on all")
    parser.add_argument("--extra-photos", type=int, default=3, help="photos the other tile sides run on")
    parser.add_argument("--skip", choices=("memory", "fidelity"), default=None, help="leave one part out")
    parser.add_argument("--crop", type=Path, default=None, help="write the whole | tiled crop here (JPEG)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: its default)")
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)
    args.sizes = [float(s) for s in args.sizes.split(",") if s]
    args.tile_sizes = [int(s) for s in args.tile_sizes.split(",") if s]
    args.fidelity_size = tuple(int(s) for s in args.fidelity_size.lower().split("x"))
    record: dict[str, Any] = {
        "cpu_model": common.cpu_model(),
        "cpu_flags": common.cpu_flags(),
        "cpu_count": os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "models": [str(m) for m in args.models],
        "threads": args.threads,
    }
    with tempfile.TemporaryDirectory(prefix="nst-bench-tiling-") as work:
        if args.skip != "memory":
            record["memory"] = memory_runs(args, Path(work))
            rows = [
                [r["model"], r["size"], "tiled" if r["tiled"] else "whole", r["peak_rss_mib"], r["seconds"],
                 r["seconds_per_mp"], r.get("psnr_tiled_vs_whole_db", "")]
                for r in record["memory"]
            ]  # fmt: skip
            print(common.table(rows, ["model", "size", "pass", "peak RSS MiB", "s", "s/MP", "PSNR tiled vs whole dB"]))
    if args.skip != "fidelity":
        record["fidelity"] = fidelity_runs(args)
        rows = [[r["photo"], r["tile"], r["psnr_db"], r["max_diff"], r["time_ratio"]] for r in record["fidelity"]]
        print(common.table(rows, ["photo", "tile", "PSNR dB", "max |diff|", "tiled / whole time"]))
    record["load_average_end"] = os.getloadavg()
    record["record_path"] = str(common.write_record("tiling", record, args.out_dir))
    return record


if __name__ == "__main__":
    main()
