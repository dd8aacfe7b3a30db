"""The quality protocol: scale-free measures of trained networks on held-out photos, and a contact sheet.

    python bench/quality.py RUN/checkpoints/last.ckpt [MORE.ckpt ...] --sheet docs/quality_sheet.jpg \
        [--photos ../shared/photos] [--vgg-weights ../shared/weights/vgg16_features_hed.pth] [--flicker]

Every photo (shorter side ``--size``, default 256, whole frame) is stylised with each style of each checkpoint and
measured with the offline HED VGG-16 (the same input normalisation for every model; ``nst_fast.quality``):

* **style error**: ``||G_S - G_G||^2 / ||G_S||^2`` per layer (relu1_2, relu2_2, relu3_3, relu4_3; each Gram
  scaled by its own ``1/(2 n_H n_W n_C)``), averaged over the layers; the painting at ``--style-size`` (256) on its
  shorter side. Lower is more of the painting's statistics.
* **content error**: ``mean((F(y) - F(x))^2) / mean(F(x)^2)`` at relu2_2. Lower keeps more of the photo.
* **mesh index**: spectral peaks of the luminance at periods 2 and 4 px over their neighbourhood, output over
  photo (1 = no more periodic texture than the photo).
* **distinctness**: each style's outputs measured against every bundled painting (and the checkpoint's own):
  distinct when the nearest is its own painting; the margin is the runner-up's error over the own one.
* networks with the identity condition: **identity PSNR** of strength 0 against the photo, and the style error
  along the **strength ramp** 0, 0.25, 0.5, 0.75, 1 (with whether it falls monotonically).
* ``--flicker``: the known-motion flicker ratio of ``bench/temporal.py`` (pooled over its three motions).

All figures are means over the photos. Prints a table per checkpoint, writes a JSON record and, with ``--sheet``,
a contact sheet: the photos, then one row per checkpoint and style, and for networks with the identity a
strength ramp of the first style on the first photo. The photos are test data: never train on them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
# This checkout's nst_fast, also when another one is installed in the environment.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import heldout  # noqa: E402

from nst_fast.assets import asset_path, bundled_copy  # noqa: E402
from nst_fast.checkpoint import CheckpointInfo, load_transformer  # noqa: E402
from nst_fast.data import load_style_image  # noqa: E402
from nst_fast.models.vgg import VGGFeatures  # noqa: E402
from nst_fast.quality import (  # noqa: E402
    CONTENT_LAYER,
    STYLE_LAYERS,
    mesh_index,
    psnr,
    relative_content_error,
    relative_style_error,
)

#: The bundled paintings every style is measured against for distinctness.
BUNDLED_PAINTINGS = {
    "starry": "starry_night.jpg",
    "wave": "wave.jpg",
    "scream": "the_scream.jpg",
    "composition_vii": "composition_vii.jpg",
    "udnie": "udnie.jpg",
}
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)

Stylise = Callable[[Tensor], Tensor]


class Measure:
    """The loss network's features of the photos and the paintings, computed once; measures stylisations."""

    def __init__(self, vgg: VGGFeatures, photos: list[Tensor], paintings: dict[str, Tensor]) -> None:
        self.vgg = vgg
        self.photos = photos
        with torch.inference_mode():
            self.photo_content = [vgg(photo, layers=[CONTENT_LAYER])[CONTENT_LAYER] for photo in photos]
            self.paintings = {name: vgg(image, layers=STYLE_LAYERS) for name, image in paintings.items()}

    def add_painting(self, name: str, image: Tensor) -> None:
        if name not in self.paintings:
            with torch.inference_mode():
                self.paintings[name] = self.vgg(image, layers=STYLE_LAYERS)

    def outputs(self, stylise: Stylise) -> list[Tensor]:
        with torch.inference_mode():
            return [stylise(photo).float().clamp(0, 1) for photo in self.photos]

    def style_errors(self, outputs: list[Tensor]) -> dict[str, float]:
        """Mean relative style error of the outputs against every painting."""
        sums = dict.fromkeys(self.paintings, 0.0)
        with torch.inference_mode():
            for output in outputs:
                features = self.vgg(output, layers=STYLE_LAYERS)
                for name, painting in self.paintings.items():
                    sums[name] += float(relative_style_error(painting, features).mean())
        return {name: total / len(outputs) for name, total in sums.items()}

    def style_error(self, outputs: list[Tensor], painting: str) -> float:
        total = 0.0
        with torch.inference_mode():
            for output in outputs:
                total += float(
                    relative_style_error(self.paintings[painting], self.vgg(output, layers=STYLE_LAYERS)).mean()
                )
        return total / len(outputs)

    def content_error(self, outputs: list[Tensor]) -> float:
        with torch.inference_mode():
            errors = [
                float(relative_content_error(target, self.vgg(output, layers=[CONTENT_LAYER])[CONTENT_LAYER]))
                for target, output in zip(self.photo_content, outputs, strict=False)
            ]
        return sum(errors) / len(errors)

    def mesh(self, outputs: list[Tensor]) -> float:
        return sum(float(mesh_index(output, photo)) for output, photo in zip(outputs, self.photos, strict=False)) / len(
            outputs
        )

    def psnr(self, outputs: list[Tensor]) -> float:
        return sum(float(psnr(output, photo)) for output, photo in zip(outputs, self.photos, strict=False)) / len(
            outputs
        )


def stylise_with(network: torch.nn.Module, info: CheckpointInfo, style_weights: Sequence[float]) -> Stylise:
    return heldout.stylise_with(network, info, style_weights)


def one_hot(count: int, index: int, strength: float = 1.0) -> list[float]:
    return [strength * float(i == index) for i in range(count)]


def evaluate(path: Path, measure: Measure, style_size: int, flicker: bool, onnx: Path | None = None) -> dict[str, Any]:
    """Every measure of the module docstring for one checkpoint, or with ``onnx`` for that exported model of it
    (run by ONNX Runtime, e.g. the int8 model; the checkpoint gives the styles)."""
    network, info = load_transformer(path)
    count = len(info.styles)

    def stylise(style_weights: Sequence[float]) -> Stylise:
        """The checkpoint's network, or its ``onnx`` export, with these style weights."""
        if onnx is not None:
            return heldout.onnx_stylise(onnx, style_weights)
        return heldout.stylise_with(network, info, style_weights)

    for style in info.styles:
        # A shipped checkpoint records bundled paintings relative to the package's assets (slim_checkpoint).
        image = bundled_copy(str(style["image"])) or style["image"]
        measure.add_painting(style["name"], load_style_image(image, style_size))
    styles: dict[str, Any] = {}
    for index, name in enumerate(info.style_names):
        styled = stylise(one_hot(count, index))
        outputs = measure.outputs(styled)
        against = measure.style_errors(outputs)
        own = against[name]
        others = {
            other: error
            for other, error in against.items()
            if other != name and BUNDLED_PAINTINGS.get(other) != Path(info.styles[index]["image"]).name
        }
        nearest = min(against, key=against.get)
        entry: dict[str, Any] = {
            "style_error": own,
            "content_error": measure.content_error(outputs),
            "mesh_index": measure.mesh(outputs),
            "nearest_painting": nearest,
            "distinct": nearest == name or against[nearest] == own,
            "distinct_margin": (min(others.values()) / own) if others else None,
            "style_errors_against": against,
        }
        if flicker:
            from temporal import known_motion_flicker

            entry["flicker"] = known_motion_flicker(styled, measure.photos)["all"]["flicker_ratio"]
        if info.identity:
            entry["ramp"] = [
                measure.style_error(measure.outputs(stylise(one_hot(count, index, s))), name) for s in STRENGTHS
            ]
            entry["ramp_monotone"] = all(a > b for a, b in zip(entry["ramp"], entry["ramp"][1:], strict=False))
        styles[name] = entry
    result: dict[str, Any] = {"checkpoint": str(path), "step": info.global_step, "styles": styles}
    if onnx is not None:
        result["onnx"] = str(onnx)
    if info.identity:
        identity = measure.outputs(stylise([0.0] * count))
        result["identity_psnr_db"] = measure.psnr(identity)
        result["identity_min_psnr_db"] = min(float(psnr(o, p)) for o, p in zip(identity, measure.photos, strict=False))
    return result


def _tag(path: Path) -> str:
    """A checkpoint's name in tables and sheets: its run's folder, or the file's stem outside a run."""
    return path.parent.parent.name if path.parent.name == "checkpoints" else path.stem


def contact_sheet(
    checkpoints: Sequence[Path], photos: list[Tensor], out: Path, height: int = 160, columns: int = 6
) -> Path:
    """The first ``columns`` photos (whole frames, ``height`` px high), then one row per checkpoint and style; for
    multi-style networks a 50/50 blend of the first two styles, and with the identity the first style's strength
    ramp 0 .. 1 on the first photo."""
    import torch.nn.functional as F

    def shrink(image: Tensor) -> Tensor:
        h, w = image.shape[-2:]
        return F.interpolate(image, size=(height, round(w * height / h)), mode="area")

    chosen = photos[:columns]
    rows: list[tuple[str, list[Tensor]]] = [("photo", [shrink(p) for p in chosen])]
    for path in checkpoints:
        network, info = load_transformer(path)
        count = len(info.styles)
        tag = _tag(path)
        with torch.inference_mode():
            for index, name in enumerate(info.style_names):
                stylise = stylise_with(network, info, one_hot(count, index))
                rows.append((f"{tag} {name}", [shrink(stylise(p)) for p in chosen]))
            if count >= 2:
                blend = stylise_with(network, info, [0.5, 0.5] + [0.0] * (count - 2))
                rows.append(
                    (f"{tag} {info.style_names[0]} + {info.style_names[1]}", [shrink(blend(p)) for p in chosen])
                )
            if info.identity:
                ramp = [stylise_with(network, info, one_hot(count, 0, s))(chosen[0]) for s in STRENGTHS]
                rows.append((f"{tag} {info.style_names[0]} strength 0..1", [shrink(r) for r in ramp]))
    gap = 4
    widths = [max(row[1][c].shape[-1] if c < len(row[1]) else 0 for row in rows) for c in range(columns)]
    sheet = Image.new("RGB", (sum(widths) + gap * (columns + 1), len(rows) * (height + gap) + gap), (255, 255, 255))
    for r, (label, images) in enumerate(rows):
        x = gap
        for c, tensor in enumerate(images):
            array = (tensor[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
            tile = Image.fromarray(array)
            sheet.paste(common.label(tile, label) if c == 0 else tile, (x, gap + r * (height + gap)))
            x += widths[c] + gap
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=90)
    return out


def print_tables(results: list[dict[str, Any]]) -> None:
    rows = []
    for r in results:
        tag = Path(r["onnx"]).name if "onnx" in r else _tag(Path(r["checkpoint"]))
        for name, s in r["styles"].items():
            rows.append(
                [
                    tag,
                    r["step"],
                    name,
                    s["style_error"],
                    s["content_error"],
                    s["mesh_index"],
                    "yes" if s["distinct"] else f"no ({s['nearest_painting']})",
                    s["distinct_margin"] if s["distinct_margin"] is not None else "-",
                    s.get("flicker", "-"),
                    "yes" if s.get("ramp_monotone", True) else "no",
                    r.get("identity_psnr_db", "-"),
                ]
            )
    print(
        common.table(
            rows,
            [
                "run",
                "step",
                "style",
                "style error",
                "content error",
                "mesh index",
                "distinct",
                "margin",
                "flicker",
                "ramp monotone",
                "identity PSNR dB",
            ],
        )
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument(
        "--photos", type=Path, default=heldout.DEFAULT_PHOTOS, help="held-out photos (default ../shared/photos)"
    )
    parser.add_argument("--vgg-weights", default=str(heldout.DEFAULT_WEIGHTS), help="loss network weights (or random)")
    parser.add_argument("--size", type=int, default=256, help="shorter side of the photos in pixels (default 256)")
    parser.add_argument("--style-size", type=int, default=256, help="shorter side of the paintings (default 256)")
    parser.add_argument("--flicker", action="store_true", help="also the known-motion flicker ratio")
    parser.add_argument(
        "--onnx",
        type=Path,
        nargs="+",
        default=[],
        help="also measure these exports of the (first) checkpoint with ONNX Runtime, e.g. its float32 and int8 models",
    )
    parser.add_argument("--sheet", type=Path, default=None, help="write a contact sheet (JPEG) here")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    photos = heldout.load_photos(args.photos, args.size)
    vgg = VGGFeatures(STYLE_LAYERS, weights=args.vgg_weights)
    paintings = {
        name: load_style_image(asset_path(f"styles/{file}"), args.style_size)
        for name, file in BUNDLED_PAINTINGS.items()
    }
    measure = Measure(vgg, photos, paintings)
    results = [evaluate(path, measure, args.style_size, args.flicker) for path in args.checkpoints]
    results += [evaluate(args.checkpoints[0], measure, args.style_size, args.flicker, onnx) for onnx in args.onnx]
    print_tables(results)
    record: dict[str, Any] = {
        "machine": common.machine_info(torch.device("cpu")),
        "photos": str(args.photos),
        "size": args.size,
        "style_size": args.style_size,
        "vgg_weights": args.vgg_weights,
        "results": results,
    }
    if args.sheet is not None:
        record["sheet"] = str(contact_sheet(args.checkpoints, photos, args.sheet))
        print(f"contact sheet: {record['sheet']}")
    record["record_path"] = str(common.write_record("quality", record, args.out_dir))
    return record


if __name__ == "__main__":
    main()
