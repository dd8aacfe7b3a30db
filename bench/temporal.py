"""Temporal stability of trained networks: flicker under known motion, warping error on real video, beside the
held-out style and content costs.

    python bench/temporal.py RUN/checkpoints/last.ckpt [MORE.ckpt ...] [--video clip.mp4 ...] \
        --photos ../shared/photos --vgg-weights ../shared/weights/vgg16_features_hed.pth

Needs OpenCV for the optical flow of ``--video``: ``pip install opencv-python-headless`` (in the ``dev`` extra).
No downloads; the known-motion part runs on CPU in about a minute per network at the default size.

**Known motion (flicker ratio).** From each held-out photo (shorter side ``--size``) a sequence of ``--frames``
frames is cut: a window ``--margin`` px inside the photo, moved by a fixed step ``d = (dy, dx)`` per frame and
resampled bilinearly (``nst_fast.losses.translate``), plus independent Gaussian noise of std ``--noise``/255 per
frame, clamped to [0, 1]; the same seed gives every network the same frames. Motions (``MOTIONS``): ``still``
(d = 0: sensor noise only), ``whole`` (d = (1, 2) px) and ``subpixel`` (d = (0.25, 0.5) px). For consecutive
frames ``x_k, x_{k+1}`` the known motion is undone by panning ``x_k`` by ``d``, and the frame-to-frame difference
is taken on the pixels valid after the pan, minus ``--border`` px at each edge (where the network's padding
sees a different frame edge every frame)::

    D(x) = sqrt( sum_{photos, k, c, valid i j} (x_{k+1} - T_d(x_k))^2 / count )     (an RMS, in [0, 1] units)
    flicker ratio = D(f(x)) / D(x)

pooled over photos and frame pairs, ``f`` the stylisation. The input difference is the noise (and, for
sub-pixel motion, the blur of resampling twice); a network that passes changes of the input on as they are,
and only those, has ratio 1 (the identity exactly); a stylisation that turns small input changes into larger
texture changes (flicker) has > 1. Lower is better. ``all`` pools the three motions.

**Real video (warping error).** For each ``--video`` (decoded with PyAV, shorter side ``--video-size``, the
first ``--video-frames``), DIS optical flow (``nst_fast.flow``) is computed on the *input* frames, forward and
backward; pixels failing the forward-backward consistency test (occlusions, flow errors) are masked out. The
warping error of Lai et al. (2018) is the mean over consecutive pairs and unmasked pixels of
``(y_t - warp(y_{t+1}, F_t))^2``; we report its root (RMS, [0, 1] units) for the stylised frames and for the
input frames, and their ratio, read like the flicker ratio.

Held-out costs as ``bench/heldout.py`` (``--loss``, ``--vgg-weights``, the photos at ``--size``). Prints a table
and writes a JSON record. The photos are test data: never train on them.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
# This checkout's nst_fast, also when another one is installed in the environment (editable installs elsewhere).
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import heldout  # noqa: E402

from nst_fast.checkpoint import load_transformer  # noqa: E402
from nst_fast.losses import translate  # noqa: E402

#: Per-frame step ``(dy, dx)`` in pixels of each known motion.
MOTIONS: dict[str, tuple[float, float]] = {"still": (0.0, 0.0), "whole": (1.0, 2.0), "subpixel": (0.25, 0.5)}

#: ``stylise(frame)``: ``[1, 3, H, W]`` in [0, 1] -> the stylised frame, same shape.
Stylise = Callable[[Tensor], Tensor]


def pan_sequence(
    photo: Tensor,
    step: tuple[float, float],
    frames: int,
    margin: int,
    noise_std: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``frames`` views of ``photo`` (``[1, 3, H, W]`` in [0, 1]) through a window ``margin`` px inside its edges,
    moved by ``step`` ``(dy, dx)`` px per frame, resampled bilinearly, each with its own Gaussian noise of std
    ``noise_std`` ([0, 1] units), clamped. Returns ``[frames, 3, H - 2 margin, W - 2 margin]``.
    The window never leaves the photo: ``(frames - 1) * |step|`` must stay within ``margin``."""
    height, width = photo.shape[-2:]
    travel = (frames - 1) * max(abs(step[0]), abs(step[1]))
    if travel > margin or min(height, width) <= 2 * margin:
        raise ValueError(
            f"a {height}x{width} photo cannot hold {frames} frames moving {step} px inside a {margin} px "
            "margin: use fewer frames, a smaller step or a larger photo"
        )
    sequence = []
    for k in range(frames):
        moved, _ = translate(photo, torch.tensor([[k * step[0], k * step[1]]]))
        window = moved[:, :, margin : height - margin, margin : width - margin]
        noise = torch.randn(window.shape, generator=generator) * noise_std
        sequence.append((window + noise).clamp(0.0, 1.0))
    return torch.cat(sequence)


def motion_differences(frames: Tensor, step: tuple[float, float], border: int) -> tuple[float, int]:
    """Sum of squared differences ``x_{k+1} - T_step(x_k)`` over consecutive frames ``[N, C, H, W]``, channels
    and the pixels valid after the pan minus ``border`` px at each edge, and their count."""
    previous, following = frames[:-1], frames[1:]
    shift = torch.tensor([step], dtype=torch.float32).expand(previous.shape[0], 2)
    panned, valid = translate(previous, shift)
    if border > 0:
        interior = torch.zeros_like(valid)
        interior[..., border:-border, border:-border] = 1.0
        valid = valid * interior
    squared = ((following.double() - panned.double()).square() * valid).sum()
    return float(squared), int(valid.sum()) * frames.shape[1]


@dataclass
class Flicker:
    """Pooled squared frame-to-frame differences of the inputs and of the outputs, and their counts."""

    input_squared: float = 0.0
    output_squared: float = 0.0
    count: int = 0

    def add(self, other: Flicker) -> None:
        self.input_squared += other.input_squared
        self.output_squared += other.output_squared
        self.count += other.count

    def record(self) -> dict[str, float]:
        """RMS differences of inputs and outputs and the flicker ratio (``nan`` for inputs that did not change)."""
        count = max(self.count, 1)
        input_rms, output_rms = math.sqrt(self.input_squared / count), math.sqrt(self.output_squared / count)
        ratio = output_rms / input_rms if input_rms > 0 else math.nan
        return {"input_rms": input_rms, "output_rms": output_rms, "flicker_ratio": ratio}


def known_motion_flicker(
    stylise: Stylise,
    photos: Sequence[Tensor],
    motions: dict[str, tuple[float, float]] = MOTIONS,
    frames: int = 5,
    margin: int = 8,
    border: int = 8,
    noise_std: float = 3 / 255,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Flicker ratio (module docstring) per motion and pooled over all (``"all"``), for ``stylise`` on pan
    sequences of ``photos``. The frames depend only on ``seed``, not on the network."""
    generator = torch.Generator().manual_seed(seed)
    results: dict[str, dict[str, float]] = {}
    pooled = Flicker()
    for name, step in motions.items():
        flicker = Flicker()
        for photo in photos:
            sequence = pan_sequence(photo, step, frames, margin, noise_std, generator)
            with torch.inference_mode():
                styled = torch.cat([stylise(frame[None]).float() for frame in sequence])
            input_squared, count = motion_differences(sequence, step, border)
            output_squared, _ = motion_differences(styled, step, border)
            flicker.add(Flicker(input_squared, output_squared, count))
        results[name] = flicker.record()
        pooled.add(flicker)
    results["all"] = pooled.record()
    return results


def read_video(path: str | Path, size: int | None = None, max_frames: int | None = None) -> list[Tensor]:
    """The first ``max_frames`` frames of the first video stream of ``path`` (PyAV), each ``[1, 3, H, W]`` in
    [0, 1], the shorter side scaled to ``size`` (``None``: as stored)."""
    import av

    from nst_fast.data import resize_shorter_side, to_tensor

    frames = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise SystemExit(f"{path}: no video stream")
        for frame in container.decode(video=0):
            image = frame.to_image()
            if size is not None:
                image = resize_shorter_side(image, size)
            frames.append(to_tensor(image).unsqueeze(0))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if len(frames) < 2:
        raise SystemExit(f"{path}: {len(frames)} frame(s) decoded; the warping error needs at least 2")
    return frames


def _hwc(image: Tensor) -> np.ndarray:
    return image[0].permute(1, 2, 0).float().numpy()


def video_warping_error(stylise: Stylise, frames: Sequence[Tensor], preset: str = "medium") -> dict[str, float]:
    """Warping error (module docstring) of ``stylise`` on consecutive ``frames`` (``[1, 3, H, W]``): RMS for the
    stylised and the input frames, their ratio, and the fraction of pixels the consistency mask kept."""
    from nst_fast.flow import consistency_mask, optical_flow, warp

    inputs = [_hwc(frame) for frame in frames]
    with torch.inference_mode():
        outputs = [_hwc(stylise(frame).float()) for frame in frames]
    input_squared = output_squared = 0.0
    count = pixels = 0
    for t in range(len(frames) - 1):
        forward = optical_flow(inputs[t], inputs[t + 1], preset)
        backward = optical_flow(inputs[t + 1], inputs[t], preset)
        mask = consistency_mask(forward, backward)
        for images, is_output in ((inputs, False), (outputs, True)):
            aligned, _ = warp(images[t + 1], forward)
            squared = float(np.square(images[t].astype(np.float64) - aligned)[mask].sum())
            if is_output:
                output_squared += squared
            else:
                input_squared += squared
        count += int(mask.sum()) * 3
        pixels += mask.size
    flicker = Flicker(input_squared, output_squared, count).record()
    return {
        "input_rms": flicker["input_rms"],
        "output_rms": flicker["output_rms"],
        "warping_ratio": flicker["flicker_ratio"],
        "valid_fraction": count / 3 / max(pixels, 1),
        "frames": len(frames),
    }


def evaluate_checkpoint(
    path: str | Path,
    evaluator_loss,
    photos: list[Tensor],
    videos: dict[str, list[Tensor]],
    motion_options: dict[str, Any],
    preset: str = "medium",
) -> dict[str, Any]:
    """Per style of the checkpoint: known-motion flicker, video warping errors and held-out costs."""
    network, info = load_transformer(path)
    evaluator = heldout.Evaluator.create(evaluator_loss, photos, heldout.style_images_of(info))
    count = len(info.styles)
    styles = {}
    for index, name in enumerate(info.style_names):
        stylise = heldout.stylise_with(network, info, [float(i == index) for i in range(count)])
        styles[name] = {
            "flicker": known_motion_flicker(stylise, photos, **motion_options),
            "videos": {video: video_warping_error(stylise, frames, preset) for video, frames in videos.items()},
            "heldout": evaluator.costs(stylise, name),
        }
    return {"checkpoint": str(path), "step": info.global_step, "styles": styles}


def contact_sheet(
    checkpoints: Sequence[Path],
    photos_dir: Path,
    out: Path,
    size: int = 160,
    columns: int = 4,
    step: tuple[float, float] = MOTIONS["whole"],
    noise_std: float = 3 / 255,
    gain: float = 4.0,
) -> Path:
    """Rows: the photos (centre-cropped squares), then per checkpoint (its first style) the stylised photos and
    the flicker they would show: ``gain * |y_1 - T_step(y_0)|`` for two frames of a ``step`` pan with noise
    (black: no change between frames once the motion is undone)."""
    from PIL import Image

    from nst_fast.data import resize_shorter_side, to_tensor
    from nst_fast.images import list_images, open_rgb

    margin = 4
    tiles = []
    for path in list_images(photos_dir)[:columns]:
        image = resize_shorter_side(open_rgb(path), size + 2 * margin)
        left, top = (image.width - size) // 2 - margin, (image.height - size) // 2 - margin
        tiles.append(to_tensor(image.crop((left, top, left + size + 2 * margin, top + size + 2 * margin)))[None])
    generator = torch.Generator().manual_seed(0)
    pairs = [pan_sequence(tile, step, 2, margin, noise_std, generator) for tile in tiles]
    rows: list[tuple[str, list[Tensor]]] = [("photo", [pair[:1] for pair in pairs])]
    shift = torch.tensor([step], dtype=torch.float32)
    for path in checkpoints:
        network, info = load_transformer(path)
        stylise = heldout.stylise_with(network, info, [1.0] + [0.0] * (len(info.styles) - 1))
        with torch.inference_mode():
            styled = [torch.cat([stylise(frame[None]) for frame in pair]) for pair in pairs]
        rows.append((run_name(path), [pair[:1] for pair in styled]))
        rows.append(
            (
                f"{run_name(path)} flicker x{gain:g}",
                [(gain * (pair[1:] - translate(pair[:1], shift)[0]).abs()).clamp(0, 1) for pair in styled],
            )
        )
    sheet = Image.new("RGB", (columns * (size + 4) + 4, len(rows) * (size + 4) + 4), (255, 255, 255))
    for r, (label, images) in enumerate(rows):
        for c, tensor in enumerate(images):
            array = (tensor[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
            tile = Image.fromarray(array)
            sheet.paste(common.label(tile, label) if c == 0 else tile, (4 + c * (size + 4), 4 + r * (size + 4)))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=90)
    return out


def run_name(path: str | Path) -> str:
    """``RUN`` for ``RUN/checkpoints/last.ckpt``, else the file name."""
    path = Path(path)
    return path.parent.parent.name if path.parent.name == "checkpoints" else path.name


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument(
        "--photos", type=Path, default=heldout.DEFAULT_PHOTOS, help="held-out photos (default ../shared/photos)"
    )
    parser.add_argument("--vgg-weights", default=str(heldout.DEFAULT_WEIGHTS), help="loss network weights (or random)")
    parser.add_argument("--loss", default="vgg16_hed", help="loss config the held-out costs are measured with")
    parser.add_argument("--size", type=int, default=256, help="shorter side of the photos in pixels (default 256)")
    parser.add_argument("--frames", type=int, default=5, help="frames per known-motion sequence (default 5)")
    parser.add_argument("--margin", type=int, default=8, help="window inset in the photo, px (default 8)")
    parser.add_argument("--border", type=int, default=8, help="edge px left out of the differences (default 8)")
    parser.add_argument("--noise", type=float, default=3.0, help="noise std in levels of 255 (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--video", action="append", default=[], type=Path, help="a video to measure (repeatable)")
    parser.add_argument("--video-size", type=int, default=256, help="shorter side of video frames (default 256)")
    parser.add_argument("--video-frames", type=int, default=30, help="frames read per video (default 30)")
    parser.add_argument("--flow-preset", default="medium", choices=("ultrafast", "fast", "medium"))
    parser.add_argument(
        "--sheet",
        type=Path,
        default=None,
        help="also write a contact sheet: stylised photos and their flicker per checkpoint",
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    photos = heldout.load_photos(args.photos, args.size)
    loss = heldout.build_loss(args.vgg_weights, args.loss)
    videos = {str(path): read_video(path, args.video_size, args.video_frames) for path in args.video}
    motion_options = {
        "frames": args.frames,
        "margin": args.margin,
        "border": args.border,
        "noise_std": args.noise / 255,
        "seed": args.seed,
    }
    results = [
        evaluate_checkpoint(path, loss, photos, videos, motion_options, args.flow_preset) for path in args.checkpoints
    ]
    headers = [
        "run",
        "step",
        "style",
        *[f"flicker {m}" for m in (*MOTIONS, "all")],
        *[f"warp {Path(v).name}" for v in videos],
        "style cost",
        "content cost",
    ]
    rows = []
    for r in results:
        for name, s in r["styles"].items():
            rows.append(
                [
                    run_name(r["checkpoint"]),
                    r["step"],
                    name,
                    *[s["flicker"][m]["flicker_ratio"] for m in (*MOTIONS, "all")],
                    *[s["videos"][v]["warping_ratio"] for v in videos],
                    s["heldout"]["style"],
                    s["heldout"]["content"],
                ]
            )
    print(common.table(rows, headers))
    record = {
        "machine": common.machine_info(torch.device("cpu")),
        "photos": str(args.photos),
        "size": args.size,
        "loss": args.loss,
        "vgg_weights": args.vgg_weights,
        "motions": MOTIONS,
        "options": {
            **motion_options,
            "noise_levels": args.noise,
            "video_size": args.video_size,
            "video_frames": args.video_frames,
            "flow_preset": args.flow_preset,
        },
        "results": results,
    }
    if args.sheet is not None:
        record["sheet"] = str(contact_sheet(args.checkpoints, args.photos, args.sheet, noise_std=args.noise / 255))
        print(f"contact sheet: {record['sheet']}")
    record["record_path"] = str(common.write_record("temporal", record, args.out_dir))
    return record


if __name__ == "__main__":
    main()
