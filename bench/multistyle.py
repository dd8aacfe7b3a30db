"""Multi-style networks on held-out photos: one network for several styles against single-style networks,
the strength control, fine-tuning a new style, and a contact sheet.

    python bench/multistyle.py --multi RUN5/checkpoints/last.ckpt \
        --single starry=RUN_S/checkpoints/last.ckpt --single wave=... \
        --finetune-run RUN_FT --scratch RUN_NEW/checkpoints/last.ckpt \
        --sheet docs/multistyle_sheet.jpg

Costs are measured as in ``bench/heldout.py`` (held-out photos, ``--loss`` with ``--vgg-weights``). Prints the
tables that bench/README.md shows and writes a JSON record.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import heldout  # noqa: E402

from nst_fast.checkpoint import load_transformer  # noqa: E402
from nst_fast.data import resize_shorter_side, to_tensor  # noqa: E402
from nst_fast.images import list_images, open_rgb  # noqa: E402

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def compare_with_singles(multi: Path, singles: dict[str, Path], loss, photos) -> list[dict[str, Any]]:
    """Per style: held-out costs of the multi-style network's condition and of the style's own network."""
    multi_result = heldout.evaluate_checkpoint(multi, loss, photos)
    rows = []
    for name, costs in multi_result["styles"].items():
        row: dict[str, Any] = {"style": name, "multi": costs}
        if name in singles:
            row["single"] = heldout.evaluate_checkpoint(singles[name], loss, photos)["styles"][name]
        rows.append(row)
    return rows


def strength_ramp(multi: Path, loss, photos, strengths: Sequence[float] = STRENGTHS) -> dict[str, Any]:
    """Per style, held-out costs at each strength (the rest to the identity), and the PSNR of strength 0."""
    network, info = load_transformer(multi)
    if not info.identity:
        raise SystemExit(f"{multi} has no identity condition: no strength control to measure")
    evaluator = heldout.Evaluator.create(loss, photos, heldout.style_images_of(info))
    count = len(info.styles)
    ramps = {}
    for index, name in enumerate(info.style_names):
        costs = [
            evaluator.costs(heldout.stylise_with(network, info, [s * (i == index) for i in range(count)]), name)
            for s in strengths
        ]
        styles = [c["style"] for c in costs]
        ramps[name] = {
            "strengths": list(strengths),
            "costs": costs,
            "style_falls_monotonically": all(a > b for a, b in zip(styles, styles[1:], strict=False)),
        }
    return {"ramps": ramps, "identity_psnr_db": evaluator.mean_psnr(heldout.stylise_with(network, info, [0.0] * count))}


def _training_start(run: Path) -> datetime | None:
    """When a run's training began (its ``train.log`` line ``rank 0 of N training on``)."""
    log = run / "train.log"
    if not log.is_file():
        return None
    for line in log.read_text().splitlines():
        if "training on" in line:
            return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
    return None


def finetune_curve(run: Path, scratch: Path, loss, photos) -> dict[str, Any]:
    """Held-out costs of the fine-tuned style at each saved step, against a network trained from scratch for it;
    the first step at which both costs are at or below the scratch network's, and the wall time to it."""
    scratch_result = heldout.evaluate_checkpoint(scratch, loss, photos)
    ((name, target),) = scratch_result["styles"].items()
    start = _training_start(run)
    points = []
    steps = sorted(run.glob("checkpoints/step_*.ckpt"), key=lambda p: int(re.findall(r"\d+", p.stem)[0]))
    for path in steps:
        costs = heldout.evaluate_checkpoint(path, loss, photos)["styles"][name]
        minutes = None
        if start is not None:
            minutes = (datetime.fromtimestamp(path.stat().st_mtime) - start).total_seconds() / 60
        points.append({"step": int(re.findall(r"\d+", path.stem)[0]), "minutes": minutes, **costs})
    reached = next((p for p in points if p["style"] <= target["style"] and p["content"] <= target["content"]), None)
    reached_total = next((p for p in points if p["total"] <= target["total"]), None)
    return {
        "style": name,
        "scratch": {**target, "step": scratch_result["step"]},
        "points": points,
        "reached_both": reached,
        "reached_total": reached_total,
    }


def contact_sheet(
    multi: Path, photos_dir: Path, out: Path, size: int = 192, columns: int = 5, blend: tuple[str, str] | None = None
) -> Path:
    """Rows: the photos, each style, a 50/50 blend of two styles; last row: one photo at strengths 0 .. 1 of the
    first style. Each tile ``size`` px high (photos centre-cropped square)."""
    network, info = load_transformer(multi)
    files = list_images(photos_dir)[:columns]
    tiles = []
    for path in files:
        image = resize_shorter_side(open_rgb(path), size)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        tiles.append(to_tensor(image.crop((left, top, left + size, top + size))).unsqueeze(0))
    count = len(info.styles)
    blend = blend or tuple(info.style_names[:2])
    rows: list[tuple[str, list[Tensor]]] = [("photo", tiles)]
    for index, name in enumerate(info.style_names):
        weights = [float(i == index) for i in range(count)]
        rows.append((name, [heldout.stylise_with(network, info, weights)(t) for t in tiles]))
    if count >= 2:
        weights = [0.5 if n in blend else 0.0 for n in info.style_names]
        rows.append((f"{blend[0]} + {blend[1]}", [heldout.stylise_with(network, info, weights)(t) for t in tiles]))
    if info.identity:
        ramp = [column / (columns - 1) for column in range(columns)]
        rows.append(
            (
                f"{info.style_names[0]} strength 0..1",
                [heldout.stylise_with(network, info, [s] + [0.0] * (count - 1))(tiles[0]) for s in ramp],
            )
        )
    sheet = Image.new("RGB", (columns * (size + 4) + 4, len(rows) * (size + 4) + 4), (255, 255, 255))
    for r, (label, images) in enumerate(rows):
        for c, tensor in enumerate(images):
            array = (tensor[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
            tile = Image.fromarray(array)
            if c == 0:
                tile = common.label(tile, label)
            sheet.paste(tile, (4 + c * (size + 4), 4 + r * (size + 4)))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=90)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--multi", type=Path, required=True, help="checkpoint of the multi-style network")
    parser.add_argument(
        "--single",
        action="append",
        default=[],
        metavar="NAME=CKPT",
        help="a single-style network to compare the multi-style one with (repeat)",
    )
    parser.add_argument(
        "--finetune-run",
        type=Path,
        action="append",
        default=[],
        help="run folder of a fine-tuning run (its step_*.ckpt); repeat to compare several",
    )
    parser.add_argument("--scratch", type=Path, help="from-scratch single-style network of the fine-tuned style")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet (JPEG) here")
    parser.add_argument("--photos", type=Path, default=heldout.DEFAULT_PHOTOS)
    parser.add_argument("--vgg-weights", default=str(heldout.DEFAULT_WEIGHTS))
    parser.add_argument("--loss", default="vgg16_hed")
    parser.add_argument("--size", type=int, default=256, help="shorter side of the photos (default 256)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    photos = heldout.load_photos(args.photos, args.size)
    loss = heldout.build_loss(args.vgg_weights, args.loss)
    singles = dict(spec.split("=", 1) for spec in args.single)
    record: dict[str, Any] = {
        "machine": common.machine_info(torch.device("cpu")),
        "photos": str(args.photos),
        "size": args.size,
        "loss": args.loss,
    }

    comparison = compare_with_singles(args.multi, {k: Path(v) for k, v in singles.items()}, loss, photos)
    record["comparison"] = comparison
    rows = []
    for row in comparison:
        single = row.get("single", {})
        rows.append(
            [
                row["style"],
                row["multi"]["style"],
                single.get("style", "-"),
                row["multi"]["content"],
                single.get("content", "-"),
                row["multi"]["total"],
                single.get("total", "-"),
            ]
        )
    print(
        common.table(
            rows,
            ["style", "style multi", "style single", "content multi", "content single", "total multi", "total single"],
        )
    )

    ramp = strength_ramp(args.multi, loss, photos)
    record["strength"] = ramp
    print(f"\nstrength 0 (identity) PSNR against the photos: {ramp['identity_psnr_db']:.2f} dB")
    print(
        common.table(
            [
                [name, *[c["style"] for c in r["costs"]], r["style_falls_monotonically"]]
                for name, r in ramp["ramps"].items()
            ],
            ["style cost at strength", *[f"{s:g}" for s in STRENGTHS], "falls monotonically"],
        )
    )

    record["finetune"] = {}
    for run in args.finetune_run if args.scratch else []:
        curve = finetune_curve(run, args.scratch, loss, photos)
        record["finetune"][run.name] = curve
        scratch = curve["scratch"]
        print(
            f"\nfine-tuning {curve['style']} ({run.name}): from scratch (step {scratch['step']}) style "
            f"{scratch['style']:.4g}, content {scratch['content']:.4g}, total {scratch['total']:.4g}"
        )
        print(
            common.table(
                [
                    [p["step"], p["minutes"] if p["minutes"] is not None else "-", p["style"], p["content"], p["total"]]
                    for p in curve["points"]
                ],
                ["step", "minutes", "style", "content", "total"],
            )
        )
        for key in ("reached_both", "reached_total"):
            point = curve[key]
            print(f"{key}: " + (f"step {point['step']}" if point else "not within the saved steps"))

    if args.sheet:
        record["sheet"] = str(contact_sheet(args.multi, args.photos, args.sheet))
        print(f"\ncontact sheet: {record['sheet']}")
    record["record_path"] = str(common.write_record("multistyle", record, args.out_dir))
    return record


if __name__ == "__main__":
    main()
