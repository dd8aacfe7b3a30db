"""The before/after of ``nst-stylize --temporal`` in docs/: a held-out photo panned into a short H.264 clip,
stylised by ``nst-stylize`` without and with ``--temporal``, shown side by side (GIF) and as the frame-to-frame
change along the known pan (PNG).

    python bench/temporal_demo.py MODEL [--style wave] --photo ../shared/photos/colorful_cups.jpg \
        --gif docs/temporal_flicker.gif --diff docs/temporal_flicker_diff.png
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nst_fast.stylize import main as stylize  # noqa: E402
from nst_fast.stylize.temporal import DEFAULT_WEIGHT  # noqa: E402

STEP = (1, 2)  # (dy, dx) px per frame the window moves: frame t+1 at (y, x) shows frame t at (y + dy, x + dx)


def write_pan(photo: Path, target: Path, width: int, height: int, frames: int, crf: int) -> None:
    """A window of ``width`` x ``height`` moving by ``STEP`` per frame over the middle of ``photo``, as H.264."""
    import av

    need_w, need_h = width + (frames - 1) * STEP[1], height + (frames - 1) * STEP[0]
    image = Image.open(photo).convert("RGB")
    scale = max(need_w / image.width, need_h / image.height)
    pixels = np.asarray(image.resize((math.ceil(image.width * scale), math.ceil(image.height * scale)), Image.LANCZOS))
    top, left = (pixels.shape[0] - need_h) // 2, (pixels.shape[1] - need_w) // 2
    with av.open(str(target), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for k in range(frames):
            y, x = top + k * STEP[0], left + k * STEP[1]
            window = np.ascontiguousarray(pixels[y : y + height, x : x + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(window, format="rgb24")))
        container.mux(stream.encode(None))


def decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def change_along_pan(frames: list[np.ndarray], t: int) -> np.ndarray:
    """|frame t+1 - frame t moved by the pan|, mean over channels, ``[H - dy, W - dx]`` levels."""
    dy, dx = STEP
    following, previous = frames[t + 1].astype(np.float32), frames[t].astype(np.float32)
    return np.abs(following[:-dy, :-dx] - previous[dy:, dx:]).mean(axis=2)


def save_gif(plain: list[np.ndarray], blended: list[np.ndarray], target: Path, colors: int, label: str) -> None:
    """Side by side, one palette for all frames (no palette flicker of its own), 8 frames/s."""
    label_h = 18
    height, width = plain[0].shape[:2]
    panels = []
    for left, right in zip(plain, blended, strict=False):
        canvas = Image.new("RGB", (2 * width + 4, height + label_h), "white")
        canvas.paste(Image.fromarray(left), (0, label_h))
        canvas.paste(Image.fromarray(right), (width + 4, label_h))
        draw = ImageDraw.Draw(canvas)
        draw.text((6, 3), "per frame", fill="black")
        draw.text((width + 10, 3), label, fill="black")
        panels.append(canvas)
    mosaic = Image.fromarray(np.concatenate([np.asarray(p) for p in panels]))
    palette = mosaic.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    frames = [p.quantize(palette=palette, dither=Image.Dither.NONE) for p in panels]
    frames[0].save(target, save_all=True, append_images=frames[1:], duration=125, loop=0, optimize=True)


def save_diff(
    plain: list[np.ndarray], blended: list[np.ndarray], target: Path, times: Sequence[int], label: str
) -> list[float]:
    """Rows: per frame, blended; columns: the change along the pan at ``times`` (x4, white = none). Returns
    the mean change (levels) of each over every pair after the first."""
    label_h = 16
    means = [float(np.mean([change_along_pan(f, t).mean() for t in range(1, len(f) - 1)])) for f in (plain, blended)]
    rows = [
        np.concatenate(
            [np.pad(255 - np.clip(change_along_pan(f, t) * 4, 0, 255), 2, constant_values=255) for t in times], axis=1
        )
        for f in (plain, blended)
    ]
    height, width = rows[0].shape
    canvas = Image.new("L", (width, 2 * (height + label_h)), 255)
    draw = ImageDraw.Draw(canvas)
    pairs = ", ".join(f"{t}-{t + 1}" for t in times)
    for index, (row, name) in enumerate(zip(rows, ("per frame", label), strict=False)):
        draw.text(
            (4, index * (height + label_h) + 2),
            f"{name}: |frame t+1 - frame t moved by the pan| x4, frames {pairs} (mean {means[index]:.1f} levels)",
            fill=0,
        )
        canvas.paste(Image.fromarray(row.astype(np.uint8)), (0, index * (height + label_h) + label_h))
    canvas.save(target, optimize=True)
    return means


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--style", default=None)
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--size", default="224x168", help="clip frame size WxH (default 224x168)")
    parser.add_argument("--frames", type=int, default=18)
    parser.add_argument("--crf", type=int, default=26, help="H.264 CRF of the input clip (default 26)")
    parser.add_argument("--colors", type=int, default=64, help="GIF palette size (default 64)")
    parser.add_argument("--gif", type=Path, required=True)
    parser.add_argument("--diff", type=Path, required=True)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    style = ["--style", args.style] if args.style else []
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "pan.mp4"
        write_pan(args.photo, clip, width, height, args.frames, args.crf)
        for name, options in (("plain", []), ("temporal", ["--temporal"])):
            status = stylize(
                [str(clip), "--model", str(args.model), "-o", str(Path(folder) / f"{name}.mp4"), "-q", *style, *options]
            )
            if status != 0:
                raise SystemExit(f"nst-stylize failed ({status})")
        plain, blended = decoded(Path(folder) / "plain.mp4"), decoded(Path(folder) / "temporal.mp4")
    label = f"--temporal (weight {DEFAULT_WEIGHT})"
    save_gif(plain, blended, args.gif, args.colors, label)
    means = save_diff(plain, blended, args.diff, (5, 9, 13), label)
    print(
        f"mean change along the pan: per frame {means[0]:.1f} levels, --temporal {means[1]:.1f}; "
        f"wrote {args.gif} ({args.gif.stat().st_size // 1024} KiB), {args.diff} ({args.diff.stat().st_size // 1024} KiB)"
    )


if __name__ == "__main__":
    main()
