"""Held-out quality of trained networks: stylise held-out photos and measure the style and content costs.

    python bench/heldout.py RUN/checkpoints/last.ckpt [MORE.ckpt ...] \
        --photos ../shared/photos --vgg-weights ../shared/weights/vgg16_features_hed.pth
    python bench/heldout.py RUN/checkpoints/last.ckpt --onnx RUN/export/NAME.onnx RUN/export/NAME.int8.onnx

For every checkpoint and every style it knows, each photo (shorter side ``--size`` px, whole frame) is stylised
with that style alone and measured with the loss network of ``--loss`` (default ``vgg16_hed``: the offline HED
VGG-16, energy-normalised style cost, lambda_l = 1): the style cost against the style's Gram targets (the style
image at the size the checkpoint recorded) and the content cost against the photo, averaged over the photos.
Networks with the identity condition also report the PSNR of strength 0 against the photo. Prints a table and
writes a JSON record. The photos are test data: never train on them.

``--onnx FILE ...``: also the same costs of exported ONNX models' outputs (run by ONNX Runtime on the CPU, each
style one-hot), measured against the style targets of the (one) checkpoint they were exported from, with each
cost's relative difference to the checkpoint's own: how much an export (e.g. int8 quantisation) changes quality.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from nst_fast.checkpoint import CheckpointInfo, load_transformer  # noqa: E402
from nst_fast.data import load_style_image, resize_shorter_side, to_tensor  # noqa: E402
from nst_fast.images import list_images, open_rgb  # noqa: E402
from nst_fast.models import TransformerNet  # noqa: E402
from nst_fast.perceptual import PerceptualLoss  # noqa: E402

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "photos"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "vgg16_features_hed.pth"

#: ``network(photos)``: a stylised batch ``[1, 3, H, W]`` in [0, 1].
Stylise = Callable[[Tensor], Tensor]


def load_photos(folder: str | Path, size: int) -> list[Tensor]:
    """Every image under ``folder`` as ``[1, 3, H, W]`` in [0, 1], the shorter side scaled to ``size``."""
    files = list_images(Path(folder))
    if not files:
        raise SystemExit(f"no photos in {folder}")
    return [load_photo(path, size) for path in files]


def load_photo(path: str | Path, size: int) -> Tensor:
    """One image as ``[1, 3, H, W]`` in [0, 1], the shorter side scaled to ``size``."""
    return to_tensor(resize_shorter_side(open_rgb(path), size)).unsqueeze(0)


def build_loss(vgg_weights: str, loss: str = "vgg16_hed") -> PerceptualLoss:
    """The configured objective ``loss=<loss>`` with the given VGG weights (``random``: random, for tests)."""
    from hydra.utils import instantiate

    cfg = common_config([f"loss={loss}", f"loss.weights={vgg_weights}"])
    return instantiate(cfg.loss).eval()


def common_config(overrides: Sequence[str]):
    from nst_fast.config import compose

    return compose("train", list(overrides))


def condition_weights(info: CheckpointInfo, style_weights: Sequence[float]) -> Tensor | None:
    """``[1, K]`` condition weights for style weights ``[S]`` (the identity takes ``1 - sum``); ``None`` for
    one-condition networks."""
    if int(info.transformer.get("num_conditions", 1)) == 1:
        return None
    weights = list(style_weights) + ([1.0 - sum(style_weights)] if info.identity else [])
    return torch.tensor([weights], dtype=torch.float32)


def stylise_with(network: TransformerNet, info: CheckpointInfo, style_weights: Sequence[float]) -> Stylise:
    condition = condition_weights(info, style_weights)

    def run(photo: Tensor) -> Tensor:
        with torch.inference_mode():
            return network(photo, condition)

    return run


def onnx_stylise(path: str | Path, style_weights: Sequence[float]) -> Stylise:
    """An exported ONNX model (float32 NCHW input; ``style_weights`` ``[1, S]`` for multi-style models) run by
    ONNX Runtime's CPU provider."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    takes_weights = len(session.get_inputs()) == 2

    def run(photo: Tensor) -> Tensor:
        feeds = {"image": photo.numpy()}
        if takes_weights:
            feeds["style_weights"] = np.array([style_weights], dtype=np.float32)
        return torch.from_numpy(session.run(None, feeds)[0])

    return run


def evaluate_onnx(
    path: str | Path, checkpoint: str | Path, loss: PerceptualLoss, photos: list[Tensor], style_size: int | None = None
) -> dict[str, Any]:
    """Per style of ``checkpoint`` (which ``path`` was exported from): held-out costs of the ONNX model's outputs."""
    _, info = load_transformer(checkpoint)
    evaluator = Evaluator.create(loss, photos, style_images_of(info, style_size))
    count = len(info.styles)
    styles = {
        name: evaluator.costs(onnx_stylise(path, [float(i == index) for i in range(count)]), name)
        for index, name in enumerate(info.style_names)
    }
    return {"onnx": str(path), "checkpoint": str(checkpoint), "styles": styles}


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]."""
    mse = float((a.double() - b.double()).square().mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


@dataclass
class Evaluator:
    """The loss network with the style targets of ``style_images`` (name -> ``[1, 3, H, W]``) and the photos'
    content targets, computed once."""

    loss: PerceptualLoss
    photos: list[Tensor]
    style_names: list[str]

    @classmethod
    def create(cls, loss: PerceptualLoss, photos: list[Tensor], style_images: dict[str, Tensor]) -> Evaluator:
        loss.set_styles(list(style_images.values()))
        return cls(loss, photos, list(style_images))

    def costs(self, stylise: Stylise, style: str) -> dict[str, float]:
        """Mean style cost against ``style``, mean content cost, and the weighted total (no TV) over the photos."""
        index = torch.tensor([self.style_names.index(style)])
        style_costs, content_costs = [], []
        with torch.inference_mode():
            for photo in self.photos:
                generated = stylise(photo).float()
                costs = self.loss(self.loss.content_target(photo), generated, index)
                style_costs.append(float(costs.style))
                content_costs.append(float(costs.content))
        style_cost = sum(style_costs) / len(style_costs)
        content = sum(content_costs) / len(content_costs)
        total = self.loss.style_weight * style_cost + self.loss.content_weight * content
        return {"style": style_cost, "content": content, "total": total}

    def mean_psnr(self, stylise: Stylise) -> float:
        """Mean PSNR (dB) of the stylised photos against the photos."""
        return sum(psnr(stylise(photo), photo) for photo in self.photos) / len(self.photos)


def style_images_of(info: CheckpointInfo, size: int | None = None) -> dict[str, Tensor]:
    """Each style's image at the size its targets were trained with (or ``size``)."""
    return {style["name"]: load_style_image(style["image"], size or int(style["size"])) for style in info.styles}


def evaluate_checkpoint(
    path: str | Path, loss: PerceptualLoss, photos: list[Tensor], style_size: int | None = None
) -> dict[str, Any]:
    """Per style of the checkpoint: held-out costs of that style alone; with the identity, PSNR at strength 0."""
    network, info = load_transformer(path)
    evaluator = Evaluator.create(loss, photos, style_images_of(info, style_size))
    count = len(info.styles)
    styles = {}
    for index, name in enumerate(info.style_names):
        styles[name] = evaluator.costs(stylise_with(network, info, [float(i == index) for i in range(count)]), name)
    result: dict[str, Any] = {"checkpoint": str(path), "step": info.global_step, "styles": styles}
    if info.identity:
        result["identity_psnr_db"] = evaluator.mean_psnr(stylise_with(network, info, [0.0] * count))
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument(
        "--photos", type=Path, default=DEFAULT_PHOTOS, help="held-out photos (default ../shared/photos)"
    )
    parser.add_argument("--vgg-weights", default=str(DEFAULT_WEIGHTS), help="loss network weights (or random)")
    parser.add_argument("--loss", default="vgg16_hed", help="loss config the costs are measured with")
    parser.add_argument("--size", type=int, default=256, help="shorter side of the photos in pixels (default 256)")
    parser.add_argument("--style-size", type=int, default=None, help="style image size (default: as trained)")
    parser.add_argument(
        "--onnx",
        nargs="+",
        type=Path,
        default=[],
        help="exported ONNX models of the (one) checkpoint: their held-out costs too",
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)
    common.set_threads(args.threads)
    photos = load_photos(args.photos, args.size)
    loss = build_loss(args.vgg_weights, args.loss)
    if args.onnx and len(args.checkpoints) != 1:
        raise SystemExit("--onnx needs exactly one checkpoint: the one the ONNX models were exported from")
    results = [evaluate_checkpoint(path, loss, photos, args.style_size) for path in args.checkpoints]
    rows = [
        [Path(r["checkpoint"]).parent.parent.name, r["step"], name, c["style"], c["content"], c["total"]]
        for r in results
        for name, c in r["styles"].items()
    ]
    print(common.table(rows, ["run", "step", "style", "style cost", "content cost", "total"]))
    onnx_results = [evaluate_onnx(path, args.checkpoints[0], loss, photos, args.style_size) for path in args.onnx]
    if onnx_results:
        eager = results[0]["styles"]
        rows = [
            [
                Path(r["onnx"]).name,
                name,
                c["style"],
                f"{c['style'] / eager[name]['style'] - 1:+.2%}",
                c["content"],
                f"{c['content'] / eager[name]['content'] - 1:+.2%}",
            ]
            for r in onnx_results
            for name, c in r["styles"].items()
        ]
        print(
            common.table(rows, ["onnx model", "style", "style cost", "vs checkpoint", "content cost", "vs checkpoint"])
        )
    for r in results:
        if "identity_psnr_db" in r:
            print(f"{r['checkpoint']}: identity (strength 0) PSNR {r['identity_psnr_db']:.2f} dB")
    record = {
        "machine": common.machine_info(torch.device("cpu")),
        "photos": str(args.photos),
        "size": args.size,
        "loss": args.loss,
        "vgg_weights": args.vgg_weights,
        "results": results,
        "onnx_results": onnx_results,
    }
    record["record_path"] = str(common.write_record("heldout", record, args.out_dir))
    return record


if __name__ == "__main__":
    main()
