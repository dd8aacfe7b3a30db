"""What the training objective itself allows: each held-out photo stylised by optimising its pixels (Gatys et al.).

    python bench/ceiling.py --photos ../shared/photos --vgg-weights ../shared/weights/vgg16_features_hed.pth \
        --style starry --names cold_ripple,colorful_cups --steps 300

A feed-forward network is trained to minimise ``J = alpha J_content + beta J_style + TV`` over many photos at once;
here ``J`` is minimised for one photo at a time, over the pixels of the output (Adam, ``--lr`` per step in [0, 1]
pixel units, starting from the photo, clamped to [0, 1]), with the configured objective (``--loss``, default
``vgg16_hed``, and its weights; ``--style-weight`` overrides ``loss.style_weight``). The result is measured as
``bench/quality.py`` measures a network: style error (per layer too), content error, mesh index. The gap between
these figures and a network's on the same photos is what the network does not learn; if even these miss a target,
the objective's weights, not the network, are what stands in the way (docs/quality.md).

Slow on a CPU: about 4 minutes per photo at 256 px and 300 steps on 2 cores (``--names`` picks photos by file stem).
Prints a table, writes a JSON record.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import heldout  # noqa: E402
from quality import BUNDLED_PAINTINGS  # noqa: E402

from nst_fast.assets import asset_path  # noqa: E402
from nst_fast.data import load_style_image  # noqa: E402
from nst_fast.images import list_images  # noqa: E402
from nst_fast.perceptual import PerceptualLoss  # noqa: E402
from nst_fast.quality import CONTENT_LAYER, STYLE_LAYERS, mesh_index, relative_content_error, relative_style_error  # noqa: E402


def optimise_photo(
    loss: PerceptualLoss, photo: torch.Tensor, steps: int, lr: float
) -> tuple[torch.Tensor, list[float]]:
    """Minimise ``loss`` (styles set) over the pixels of an image that starts as ``photo`` ``[1, 3, H, W]`` in
    [0, 1]: the optimised image and the objective's total before the first and after every step."""
    target = loss.content_target(photo)
    image = photo.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=lr)
    totals = []
    for _ in range(steps):
        optimizer.zero_grad()
        total = loss(target, image).total
        totals.append(float(total.detach()))
        total.backward()
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0.0, 1.0)
    with torch.no_grad():
        totals.append(float(loss(target, image).total))
    return image.detach(), totals


def measure(loss: PerceptualLoss, painting: torch.Tensor, photo: torch.Tensor, output: torch.Tensor) -> dict[str, Any]:
    """The quality measures of ``output`` against its ``photo`` and the ``painting``, with the per-layer style
    errors."""
    with torch.no_grad():
        style_features = loss.features(painting, layers=STYLE_LAYERS)
        features = loss.features(output, layers=[*STYLE_LAYERS, CONTENT_LAYER])
        photo_content = loss.features(photo, layers=[CONTENT_LAYER])[CONTENT_LAYER]
        return {
            "style_error": float(relative_style_error(style_features, features)),
            "style_error_by_layer": {
                layer: float(relative_style_error(style_features, features, [layer])) for layer in STYLE_LAYERS
            },
            "content_error": float(relative_content_error(photo_content, features[CONTENT_LAYER])),
            "mesh_index": float(mesh_index(output, photo)),
        }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--photos", type=Path, default=heldout.DEFAULT_PHOTOS, help="held-out photos (../shared/photos)"
    )
    parser.add_argument("--vgg-weights", default=str(heldout.DEFAULT_WEIGHTS), help="loss network weights (or random)")
    parser.add_argument("--loss", default="vgg16_hed", help="the loss config group's option (default vgg16_hed)")
    parser.add_argument("--style", default="starry", choices=sorted(BUNDLED_PAINTINGS), help="a bundled painting")
    parser.add_argument("--style-weight", type=float, default=None, help="loss.style_weight (default: the config's)")
    parser.add_argument("--names", default=None, help="comma-separated photo file stems (default: every photo)")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps per photo (default 300)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's step in [0, 1] pixel units (default 0.01)")
    parser.add_argument("--size", type=int, default=256, help="shorter side of the photos in pixels (default 256)")
    parser.add_argument("--style-size", type=int, default=256, help="shorter side of the painting (default 256)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    loss = heldout.build_loss(args.vgg_weights, args.loss)
    if args.style_weight is not None:
        loss.style_weight = args.style_weight
    loss.requires_grad_(False)
    painting = load_style_image(asset_path(f"styles/{BUNDLED_PAINTINGS[args.style]}"), args.style_size)
    loss.set_styles([painting])
    files = list_images(args.photos)
    if args.names is not None:
        wanted = args.names.split(",")
        files = [path for path in files if path.stem in wanted]
        missing = sorted(set(wanted) - {path.stem for path in files})
        if missing:
            raise SystemExit(f"ceiling: no photo named {', '.join(missing)} in {args.photos}")
    if not files:
        raise SystemExit(f"ceiling: no photos in {args.photos}")
    rows = []
    for path in files:
        photo = heldout.load_photo(path, args.size)
        start = time.perf_counter()
        output, totals = optimise_photo(loss, photo, args.steps, args.lr)
        row = {"photo": path.stem, **measure(loss, painting, photo, output)}
        row.update(objective_first=totals[0], objective_last=totals[-1], seconds=time.perf_counter() - start)
        rows.append(row)
        print(
            f"{path.stem}: {row['style_error']:.3f} / {row['content_error']:.3f} / {row['mesh_index']:.2f}", flush=True
        )
    means = {key: statistics.mean(row[key] for row in rows) for key in ("style_error", "content_error", "mesh_index")}
    print(
        common.table(
            [
                [row["photo"], f"{row['style_error']:.3f}", f"{row['content_error']:.3f}", f"{row['mesh_index']:.2f}"]
                + [f"{row['style_error_by_layer'][layer]:.3f}" for layer in STYLE_LAYERS]
                for row in rows
            ]
            + [
                ["mean", f"{means['style_error']:.3f}", f"{means['content_error']:.3f}", f"{means['mesh_index']:.2f}"]
                + [
                    f"{statistics.mean(row['style_error_by_layer'][layer] for row in rows):.3f}"
                    for layer in STYLE_LAYERS
                ]
            ],
            ["photo", "style error", "content error", "mesh index", *STYLE_LAYERS],
        )
    )
    record: dict[str, Any] = {
        "machine": common.machine_info(torch.device("cpu")),
        "photos": str(args.photos),
        "vgg_weights": args.vgg_weights,
        "loss": args.loss,
        "style": args.style,
        "style_weight": loss.style_weight,
        "steps": args.steps,
        "lr": args.lr,
        "size": args.size,
        "style_size": args.style_size,
        "results": rows,
        "means": means,
    }
    record["record_path"] = str(common.write_record("ceiling", record, args.out_dir))
    return record


if __name__ == "__main__":
    main()
