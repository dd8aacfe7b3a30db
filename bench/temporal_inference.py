"""Temporal blending at inference (``nst-stylize --temporal``, ``nst_fast.stylize.temporal``): flicker with and
without it, how far it moves the output from the per-frame stylisation, and what it costs per frame.

    python bench/temporal_inference.py MODEL [--style NAME] [--weights 0.5,0.7,0.8] [--presets fast,medium] \
        --photos ../shared/photos

``MODEL``: anything ``nst-stylize`` takes (``.onnx``, ``.pt``/``.ts``, ``.ckpt``), run through the same
``load_model`` and ``TemporalBlender`` as ``nst-stylize``, frames as uint8 like decoded video. Needs OpenCV.

- **Known motion**: the flicker ratio of ``bench/temporal.py`` (held-out photos panned by known steps, with
  Gaussian noise per frame; the motion undone before differencing; output RMS / input RMS, lower is steadier),
  the blender run over each sequence in order (``--frames`` per sequence, fresh at each sequence).
- **Departure**: RMS of (blended - per-frame stylisation) over all frames, [0, 1] units: what the blending
  changes in the picture (lag, smoothing); 0 without blending.
- **Clip**: a held-out photo (``--clip-photo``) panned by a whole-pixel step per frame and encoded as H.264
  (``--clip-crf``), so the per-frame change is real compression noise; its flicker ratio undoes the known step
  exactly, and ``bench/temporal.py``'s warping error (DIS flow on the inputs) is given beside it. The warping
  error uses the same kind of flow as the blender and so favours it; the known-step ratio does not.
- **Cost**: the blender's time per frame (two DIS flows, warps, mask, blend) at ``--cost-size``, median, beside
  the model's time for one frame of that size.

Prints a table and writes a JSON record. ``bench/temporal.py`` comes from the stability work (same folder).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import heldout  # noqa: E402
import temporal  # noqa: E402

from nst_fast.data import resize_shorter_side, to_tensor  # noqa: E402
from nst_fast.images import open_rgb  # noqa: E402
from nst_fast.stylize import load_model, parse_style_weights  # noqa: E402
from nst_fast.stylize.models import StyleModel  # noqa: E402
from nst_fast.stylize.temporal import TemporalBlender, require_opencv  # noqa: E402

#: A configuration: ``None`` for per-frame stylisation, else ``(flow preset, weight)``.
Blending = tuple[str, float] | None


def to_uint8(frame: Tensor) -> np.ndarray:
    """``[1, 3, H, W]`` in [0, 1] -> uint8 ``[H, W, 3]``, as a decoded video frame."""
    return (frame[0].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


class Styliser:
    """``stylise(frame)`` for ``bench/temporal.py``: the model on the uint8 frame, then the blender; a fresh
    blender every ``frames_per_sequence`` calls (0: one sequence). Caches the per-frame stylisations (shared by all
    configurations) and pools the departure from them."""

    def __init__(self, model: StyleModel, weights: np.ndarray | None) -> None:
        self.model, self.weights = model, weights
        self.cache: dict[bytes, np.ndarray] = {}
        self.configure(None, 0)

    def configure(self, blending: Blending, frames_per_sequence: int) -> None:
        self.blending, self.frames_per_sequence = blending, frames_per_sequence
        self.calls, self.blender = 0, None
        self.departure_squared, self.departure_count = 0.0, 0

    def plain(self, rgb: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(rgb.tobytes(), digest_size=16).digest() + bytes(str(rgb.shape), "ascii")
        if key not in self.cache:
            self.cache[key] = self.model(rgb[None], self.weights)[0].astype(np.float32)
        return self.cache[key]

    def __call__(self, frame: Tensor) -> Tensor:
        new_sequence = self.frames_per_sequence and self.calls % self.frames_per_sequence == 0
        if self.blending is not None and (self.blender is None or new_sequence):
            preset, weight = self.blending
            self.blender = TemporalBlender(weight, preset)
        self.calls += 1
        rgb = to_uint8(frame)
        plain = self.plain(rgb)
        output = self.blender(rgb, plain) if self.blender is not None else plain
        self.departure_squared += float(np.square(output.astype(np.float64) - plain).sum())
        self.departure_count += output.size
        return torch.from_numpy(np.ascontiguousarray(output)).permute(2, 0, 1)[None]

    def departure(self) -> float:
        return math.sqrt(self.departure_squared / max(self.departure_count, 1))


def pan_clip(
    photo_path: Path, size: tuple[int, int], step: tuple[int, int], frames: int, crf: int, path: Path
) -> list[Tensor]:
    """``frames`` windows of ``size`` (W, H) moving by the whole-pixel ``step`` (dy, dx) per frame over the
    photo (scaled to just hold them), written as H.264 at ``crf`` to ``path`` and decoded: ``[1, 3, H, W]``."""
    import av
    from PIL import Image

    width, height = size
    need_w, need_h = width + (frames - 1) * abs(step[1]), height + (frames - 1) * abs(step[0])
    image = Image.open(photo_path).convert("RGB")
    scale = max(need_w / image.width, need_h / image.height)
    image = image.resize((math.ceil(image.width * scale), math.ceil(image.height * scale)), Image.LANCZOS)
    pixels = np.asarray(image)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for k in range(frames):
            top, left = k * step[0], k * step[1]
            window = np.ascontiguousarray(pixels[top : top + height, left : left + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(window, format="rgb24")))
        container.mux(stream.encode(None))
    # Frame k + 1 at (y, x) shows frame k at (y + dy, x + dx): bench/temporal.py's pan by ``step`` (translate).
    return [torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255 for f in decoded(path)]


def decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def clip_flicker(stylise: Styliser, clip: list[Tensor], step: tuple[int, int], border: int) -> dict[str, float]:
    """Known-step flicker ratio of ``stylise`` on the clip (one sequence)."""
    sequence = torch.cat(clip)
    with torch.inference_mode():
        styled = torch.cat([stylise(frame[None]) for frame in sequence])
    motion = (float(step[0]), float(step[1]))
    input_squared, count = temporal.motion_differences(sequence, motion, border)
    output_squared, _ = temporal.motion_differences(styled, motion, border)
    return temporal.Flicker(input_squared, output_squared, count).record()


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def blend_cost(
    model: StyleModel, weights: np.ndarray | None, photo: Tensor, size: int, presets: Sequence[str], repeats: int
) -> dict[str, float]:
    """Median ms per frame of the model and of the blender (per preset) on ``size`` x ``size`` frames of a pan."""
    first = to_uint8(photo[..., :size, :size])
    second = to_uint8(photo[..., 1 : size + 1, 3 : size + 3])
    stylized = model(first[None], weights)[0]
    costs = {"model": median_ms(lambda: model(second[None], weights), repeats)}
    for preset in presets:

        def step(preset: str = preset) -> None:
            blender = TemporalBlender(0.5, preset)
            blender(first, stylized)
            blender(second, stylized)

        costs[preset] = median_ms(step, repeats)
    return costs


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--style", default=None, help="multi-style models: the style (as nst-stylize --style)")
    parser.add_argument("--weights", default="0.5,0.7,0.8", help="blend weights to measure (default 0.5,0.7,0.8)")
    parser.add_argument("--presets", default="fast,medium", help="DIS presets to measure (default fast,medium)")
    parser.add_argument("--photos", type=Path, default=heldout.DEFAULT_PHOTOS, help="held-out photos")
    parser.add_argument("--size", type=int, default=256, help="shorter side of the known-motion frames (default 256)")
    parser.add_argument("--frames", type=int, default=9, help="frames per known-motion sequence (default 9)")
    parser.add_argument("--margin", type=int, default=16, help="window inset in the photo, px (default 16)")
    parser.add_argument("--border", type=int, default=8, help="edge px left out of the differences (default 8)")
    parser.add_argument("--noise", type=float, default=3.0, help="noise std in levels of 255 (default 3)")
    parser.add_argument("--clip-photo", default="path.jpg", help="held-out photo panned for the clip")
    parser.add_argument("--clip-size", default="384x256", help="clip frame size WxH (default 384x256)")
    parser.add_argument("--clip-frames", type=int, default=24, help="clip frames (default 24)")
    parser.add_argument("--clip-crf", type=int, default=23, help="H.264 CRF of the clip (default 23)")
    parser.add_argument("--cost-size", type=int, default=512, help="frame side for the cost (default 512)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)
    require_opencv()
    common.set_threads(args.threads)
    model = load_model(args.model, "cpu", "cpu", args.threads)
    style_weights = parse_style_weights(model, args.style, None)
    weights = [float(w) for w in args.weights.split(",")]
    presets = args.presets.split(",")
    configurations: list[Blending] = [None] + [(p, w) for p in presets for w in weights]
    photos = heldout.load_photos(args.photos, args.size)
    clip_width, clip_height = (int(v) for v in args.clip_size.split("x"))
    out_dir = Path(args.out_dir) if args.out_dir else common.RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    clip_step = (1, 3)
    clip = pan_clip(
        args.photos / args.clip_photo,
        (clip_width, clip_height),
        clip_step,
        args.clip_frames,
        args.clip_crf,
        out_dir / "temporal_inference_clip.mp4",
    )
    motion_options = {
        "frames": args.frames,
        "margin": args.margin,
        "border": args.border,
        "noise_std": args.noise / 255,
        "seed": 0,
    }
    stylise = Styliser(model, style_weights)
    results = []
    for blending in configurations:
        stylise.configure(blending, args.frames)
        flicker = temporal.known_motion_flicker(stylise, photos, **motion_options)
        departure = stylise.departure()
        stylise.configure(blending, 0)
        clip_result = clip_flicker(stylise, clip, clip_step, args.border)
        stylise.configure(blending, 0)
        warping = temporal.video_warping_error(stylise, clip, blending[0] if blending else "medium")
        results.append(
            {
                "preset": blending[0] if blending else None,
                "weight": blending[1] if blending else 0.0,
                "flicker": flicker,
                "departure_rms": departure,
                "clip_flicker": clip_result,
                "clip_warping": warping,
            }
        )
    cost_photo = to_tensor(resize_shorter_side(open_rgb(args.photos / args.clip_photo), args.cost_size + 8))[None]
    costs = blend_cost(model, style_weights, cost_photo, args.cost_size, presets, args.repeats)
    headers = [
        "blending",
        *[f"flicker {m}" for m in (*temporal.MOTIONS, "all")],
        "departure",
        "clip flicker",
        "clip warping",
    ]
    rows = [
        [
            f"{r['preset']} w={r['weight']}" if r["preset"] else "per frame",
            *[r["flicker"][m]["flicker_ratio"] for m in (*temporal.MOTIONS, "all")],
            r["departure_rms"],
            r["clip_flicker"]["flicker_ratio"],
            r["clip_warping"]["warping_ratio"],
        ]
        for r in results
    ]
    print(common.table(rows, headers))
    print(
        f"cost per {args.cost_size}x{args.cost_size} frame, median ms: "
        + ", ".join(f"{name} {ms:.1f}" for name, ms in costs.items())
    )
    record = {
        "machine": common.machine_info(torch.device("cpu")),
        "model": str(args.model),
        "style": args.style,
        "photos": str(args.photos),
        "size": args.size,
        "options": {**motion_options, "noise_levels": args.noise},
        "clip": {
            "photo": args.clip_photo,
            "size": [clip_width, clip_height],
            "step_dy_dx": clip_step,
            "frames": args.clip_frames,
            "crf": args.clip_crf,
        },
        "results": results,
        "cost_size": args.cost_size,
        "cost_ms": costs,
    }
    record["record_path"] = str(common.write_record("temporal_inference", record, args.out_dir))
    return record


if __name__ == "__main__":
    main()
