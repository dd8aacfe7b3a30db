"""Training-step throughput of nst-fast against the PyTorch example's step, plus loader throughput.

    python bench/train_step.py                                   # 256 px, batch 4, fp32, CPU
    python bench/train_step.py --precision bf16-mixed            # bf16 autocast (CPUs with AVX-512-BF16/AMX, GPUs)
    python bench/train_step.py --sweep                           # fp32/bf16 x contiguous/channels_last, interleaved
    python bench/train_step.py --compare-curves 30               # loss series: ours plain fp32 vs ours as configured
    python bench/train_step.py --device cuda --precision bf16-mixed --channels-last --compile

"Ours" is the real training path: the module is built from the Hydra config by ``nst_fast.train.build_module``
(``loss.weights=random``: random VGG weights, same cost) and one step is what Lightning's automatic optimisation
does: ``zero_grad``, ``compute_costs`` under the precision's autocast, the finiteness check of
``training_step``, ``backward``, ``optimizer.step``. The reference is the PyTorch example's step
(``bench/common.py``). Both are timed alternately in one run; the figure is the median images/s.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
#: Variant flags after the precision: "32-true+channels_last+compile". ``plain_layers`` runs the transformation
#: network with the plain layers its sub-pixel layers compute (``common.plain_layers``); ``fused_adam`` is an
#: EXPERIMENT that prototypes a package change (see bench/README.md); it does not exist in nst_fast.
#: ``five_styles`` trains the five bundled styles and the identity in one network (conditional instance norms,
#: each sample its own style target, conditions round-robin as in training). ``stability`` switches the stability
#: term on (``loss.stability_weight`` 1: what it costs does not depend on the weight).
FLAGS = ("channels_last", "plain_layers", "compile", "fused_adam", "five_styles", "stability")
FIVE_STYLES = "[starry,wave,scream,composition_vii,udnie]"


def parse_variant(spec: str) -> tuple[str, frozenset[str]]:
    precision, *flags = spec.strip().split("+")
    if precision not in PRECISIONS:
        raise SystemExit(f"variant {spec!r}: precision must be one of {PRECISIONS}")
    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise SystemExit(f"variant {spec!r}: unknown flags {sorted(unknown)}; choose from {FLAGS}")
    return precision, frozenset(flags)


def variant_name(precision: str, flags) -> str:
    return "+".join([precision, *[f for f in FLAGS if f in flags]])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="square crop side in pixels")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--precision", choices=PRECISIONS, default="32-true")
    p.add_argument("--channels-last", action="store_true", help="the module's channels_last flag")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer and the loss network")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    p.add_argument("--vgg-weights", default="random", help="loss.weights: random (same cost), imagenet or a path")
    p.add_argument("--loss", default="vgg16", help="the loss config group (vgg16_hed for the offline HED weights)")
    p.add_argument("--style-size", type=int, default=256, help="style_size (only affects the one-off Gram targets)")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="also time fp32/bf16 x contiguous/channels_last variants of ours in the same interleaved run",
    )
    p.add_argument(
        "--also",
        default="",
        metavar="VARIANTS",
        help="extra variants of ours to time alongside, comma-separated, e.g. "
        "'32-true,32-true+channels_last+compile' (flags: " + ", ".join(FLAGS) + ")",
    )
    p.add_argument("--exp-fused-adam", action="store_true", help="EXPERIMENT (config change): Adam(fused=True)")
    p.add_argument("--no-reference", action="store_true", help="skip the reference step")
    p.add_argument("--no-flops", action="store_true", help="skip FLOP counting and the matmul peak")
    p.add_argument("--peak-size", type=int, default=0, help="matmul side for the peak (default 2048 CPU, 8192 CUDA)")
    p.add_argument("--loader-workers", default="0,1,2", help="num_workers values for the loader test ('' to skip)")
    p.add_argument("--loader-batches", type=int, default=10, help="timed batches per loader setting (0 to skip)")
    p.add_argument(
        "--compare-curves",
        type=int,
        default=0,
        metavar="N",
        help="run N steps of ours (plain form: fp32, contiguous, plain layers; and as configured) and of "
        "the reference from the same init and data; print the loss series",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None, help="where the JSON record goes (default bench/results/)")
    return p


# --- Ours -------------------------------------------------------------------------------------------------------------


def compose_config(
    size: int,
    batch: int,
    precision: str,
    channels_last: bool,
    vgg_weights: str,
    style_size: int,
    loss: str = "vgg16",
    style: str = "starry",
):
    from nst_fast.config import compose

    overrides = [
        f"loss={loss}",
        f"data.image_size={size}",
        f"data.batch_size={batch}",
        f"loss.weights={vgg_weights}",
        f"style_size={style_size}",
        f"module.channels_last={str(channels_last).lower()}",
        f"trainer.precision={precision}",
        f"style={style}",
    ]
    return compose("train", overrides)


def autocast_for(precision: str, device: torch.device):
    """What Lightning's precision plugin wraps the training step in."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


class OurStep:
    """One optimisation step of ``StyleTransferModule`` as Lightning's automatic optimisation runs it."""

    def __init__(self, module, precision: str, device: torch.device, flags=frozenset()) -> None:
        self.module = module.to(device)
        self.module.train()
        self.precision = precision
        self.device = device
        if "fused_adam" in flags:
            self.optimizer = torch.optim.Adam(module.transformer.parameters(), lr=1e-3, fused=True)
        else:
            self.optimizer = module.configure_optimizers()
        self.scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
        self.steps_done = 0
        if "compile" in flags:
            self.module.compile_networks = True
            self.module.configure_model()  # what Lightning calls when fitting starts (config: compile=true)

    def step(self, x: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        conditions = self.module.batch_conditions(x.shape[0], self.steps_done)  # as training_step assigns them
        self.steps_done += 1
        with autocast_for(self.precision, self.device):
            costs = self.module.compute_costs(x, conditions, stability=self.module.loss.stability_weight > 0)
        finite = bool(torch.isfinite(costs.total).item())  # as training_step does
        if not finite:
            return float("nan")
        if self.scaler is not None:
            self.scaler.scale(costs.total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            costs.total.backward()
            self.optimizer.step()
        return float(costs.total.detach())


def build_ours(args, precision: str, flags, device: torch.device, base=None) -> OurStep:
    """Build via ``build_module`` (same seed, so the same init); ``base``: copy its weights instead."""
    from nst_fast.train import build_module

    channels_last = "channels_last" in flags
    style = FIVE_STYLES if "five_styles" in flags else "starry"
    cfg = compose_config(
        args.size, args.batch, precision, channels_last, args.vgg_weights, args.style_size, args.loss, style
    )
    torch.manual_seed(args.seed)
    module = build_module(cfg)
    if base is not None and "five_styles" not in flags:  # another network: its own init
        # Parameters in module order: the same whether either network has its plain layers or not.
        ours, theirs = list(module.transformer.parameters()), list(base.transformer.parameters())
        assert [p.shape for p in ours] == [p.shape for p in theirs]
        with torch.no_grad():
            for mine, other in zip(ours, theirs, strict=False):
                mine.copy_(other)
        module.loss.features.load_state_dict(base.loss.features.state_dict())
        module.loss.set_styles([_style_image(cfg)])
        if channels_last:
            module.to(memory_format=torch.channels_last)
    if "plain_layers" in flags:
        module.transformer = common.plain_layers(module.transformer)
    if "stability" in flags:
        module.loss.stability_weight = 1.0
    return OurStep(module, precision, device, flags)


def _style_image(cfg) -> torch.Tensor:
    from nst_fast.config import style_specs
    from nst_fast.data import load_style_image

    spec = style_specs(cfg)[0]
    return load_style_image(spec.image, spec.size)


def build_reference(ours: OurStep, args, device: torch.device) -> common.ExampleTrainer:
    """The example's step with our loss network's weights and the same style image (at ``style_size``)."""
    cfg = compose_config(args.size, args.batch, "32-true", False, args.vgg_weights, args.style_size, args.loss)
    body = common.copy_vgg_body(ours.module.loss.features.body).float().to(memory_format=torch.contiguous_format)
    torch.manual_seed(args.seed)
    return common.ExampleTrainer(body, _style_image(cfg), args.batch, device)


# --- Data -------------------------------------------------------------------------------------------------------------


def datamodule(size: int, batch: int, workers: int, samples: int):
    from nst_fast.assets import asset_path
    from nst_fast.data import ContentDataModule

    dm = ContentDataModule(
        asset_path("content"), image_size=size, batch_size=batch, num_workers=workers, samples_per_epoch=samples
    )
    dm.setup("fit")
    return dm


def fixed_batches(size: int, batch: int, count: int, seed: int) -> list[torch.Tensor]:
    """``count`` real batches from the bundled photos (loader order and crops seeded)."""
    torch.manual_seed(seed)
    loader = datamodule(size, batch, 0, batch * count).train_dataloader()
    return [b["image"] for _, b in zip(range(count), loader, strict=False)]


def loader_throughput(size: int, batch: int, workers: Sequence[int], batches: int) -> list[dict[str, Any]]:
    """Images/s each ``num_workers`` setting sustains (first batch, i.e. worker start-up, excluded)."""
    results = []
    for w in workers:
        dm = datamodule(size, batch, w, batch * (batches + 2) * 4)
        iterator = iter(dm.train_dataloader())
        next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        elapsed = time.perf_counter() - start
        results.append({"num_workers": w, "images_per_s": batches * batch / elapsed})
        del iterator
    return results


# --- Main -------------------------------------------------------------------------------------------------------------


def main_variant_flags(args) -> frozenset[str]:
    chosen = {"channels_last": args.channels_last, "compile": args.compile, "fused_adam": args.exp_fused_adam}
    return frozenset(flag for flag, on in chosen.items() if on)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    import logging

    # The loss network's "random weights" warning on every build (only that logger: a caller's other warnings stay).
    logging.getLogger("nst_fast.models.vgg").setLevel(logging.ERROR)

    info = common.machine_info(device)
    print(
        f"# {info['cpu_model']} | torch {info['torch_version']} | {info['torch_threads']} threads | {device}"
        + (f" | {info.get('cuda_device')}" if device.type == "cuda" else "")
    )
    print(f"# size {args.size}, batch {args.batch}, {args.steps} timed steps after {args.warmup} warm-up")

    main_flags = main_variant_flags(args)
    main_name = variant_name(args.precision, main_flags)
    ours = build_ours(args, args.precision, main_flags, device)
    variants: dict[str, OurStep] = {main_name: ours}
    extra = [s for s in args.also.split(",") if s.strip()]
    if args.sweep:
        extra = ["32-true", "32-true+channels_last", "bf16-mixed", "bf16-mixed+channels_last", *extra]
    for spec in extra:
        precision, flags = parse_variant(spec)
        name = variant_name(precision, flags)
        if name not in variants:
            variants[name] = build_ours(args, precision, flags, device, base=ours.module)
    reference = None if args.no_reference else build_reference(ours, args, device)

    batches = fixed_batches(args.size, args.batch, 2, args.seed)
    x = batches[0].to(device)
    fns: dict[str, Callable[[], Any]] = {name: (lambda v=v: v.step(x)) for name, v in variants.items()}
    if reference is not None:
        fns["reference"] = lambda: reference.step(x)
    times = common.interleaved(fns, args.steps, args.warmup, device)

    rows, steps = [], {}
    ref_ips = args.batch / statistics.median(times["reference"]) if reference is not None else None
    for name, seconds in times.items():
        s = common.summary(seconds)
        ips = args.batch / s["median_s"]
        steps[name] = {**s, "images_per_s": ips, "ratio_vs_reference": ips / ref_ips if ref_ips else None}
        rows.append(
            [
                name + (" (ours)" if name == main_name else ""),
                s["median_s"] * 1e3,
                ips,
                f"{ips / ref_ips:.2f}x" if ref_ips else "-",
            ]
        )
    print()
    print(common.table(rows, ["step", "median ms", "images/s", "vs reference"]))

    record: dict[str, Any] = {
        "machine": info,
        "config": {k: v for k, v in vars(args).items()},
        "ours": main_name,
        "steps": steps,
        "ratio_ours_vs_reference": steps[main_name]["ratio_vs_reference"],
    }

    if not args.no_flops:
        record["flops"] = flops_report(ours, reference, x, args, device, steps)

    workers = [int(w) for w in args.loader_workers.split(",") if w.strip()]
    if workers and args.loader_batches > 0:
        loader = loader_throughput(args.size, args.batch, workers, args.loader_batches)
        step_ips = steps[main_name]["images_per_s"]
        print()
        print(
            common.table(
                [[r["num_workers"], r["images_per_s"], f"{r['images_per_s'] / step_ips:.1f}x"] for r in loader],
                ["num_workers", "loader images/s", "vs our step"],
            )
        )
        record["loader"] = [{**r, "ratio_vs_step": r["images_per_s"] / step_ips} for r in loader]

    if args.compare_curves:
        record["curves"] = compare_curves(args, device)

    path = common.write_record("train_step", record, args.out_dir)
    print(f"\nrecord: {path}")
    record["record_path"] = str(path)
    return record


def flop_split(ours: OurStep, x: torch.Tensor) -> dict[str, float]:
    """FLOPs of one step of ours by phase: transformer forward/backward, VGG content target, VGG forward and
    backward of the generated batch (the backward only propagates to the input: VGG weights are frozen)."""
    module, loss = ours.module, ours.module.loss
    with autocast_for(ours.precision, ours.device):
        content = module._layout(x)
        transformer_fwd, _ = common.count_flops(lambda: module.transformer(content))
        target, _ = common.count_flops(lambda: loss.content_target(content))
        generated = module.transformer(content).detach().requires_grad_()
        vgg_fwd, _ = common.count_flops(lambda: loss.features(generated))

        def vgg_fwd_bwd() -> None:
            costs = loss(loss.content_target(content), generated)
            costs.total.backward()

    vgg_both, _ = common.count_flops(vgg_fwd_bwd)
    total, _ = common.count_flops(lambda: ours.step(x))
    vgg_bwd = vgg_both - vgg_fwd - target
    return {
        "transformer_forward": transformer_fwd,
        "transformer_backward": total - transformer_fwd - vgg_both,
        "vgg_content_target": target,
        "vgg_forward": vgg_fwd,
        "vgg_backward": vgg_bwd,
        "total": total,
    }


def flops_report(ours: OurStep, reference, x, args, device, steps) -> dict[str, Any]:
    """FLOPs of one step of ours (and of the reference), achieved GFLOP/s, measured matmul peaks."""
    split = flop_split(ours, x)
    total = split["total"]
    ref_total = common.count_flops(lambda: reference.step(x))[0] if reference is not None else None
    peaks = {
        "fp32": common.matmul_peak(device, torch.float32, args.peak_size or None),
        "bf16": common.matmul_peak(device, torch.bfloat16, args.peak_size or None),
    }
    if device.type == "cuda":
        peaks["fp16"] = common.matmul_peak(device, torch.float16, args.peak_size or None)
    main_name = next(iter(steps))
    achieved = total / steps[main_name]["median_s"] / 1e9
    own_peak = peaks["bf16" if args.precision == "bf16-mixed" else "fp16" if args.precision == "16-mixed" else "fp32"]
    print()
    print(f"FLOPs per step: ours {total / 1e9:.1f} G" + (f", reference {ref_total / 1e9:.1f} G" if ref_total else ""))
    print(
        common.table(
            [[k, v / 1e9, f"{v / total:.0%}"] for k, v in split.items() if k != "total"],
            ["ours by phase", "GFLOP", "share"],
        )
    )
    rows = [[name, f"{val:.1f}", f"{achieved / val:.1%}"] for name, val in peaks.items()]
    print(f"ours achieves {achieved:.1f} GFLOP/s; measured matmul peak:")
    print(common.table(rows, ["matmul", "GFLOP/s", "ours / peak"]))
    out = {
        "ours_per_step": total,
        "ours_by_phase": split,
        "reference_per_step": ref_total,
        "ours_gflops_per_s": achieved,
        "matmul_peak_gflops_per_s": peaks,
        "ours_vs_own_precision_peak": achieved / own_peak,
        "ours_vs_fp32_peak": achieved / peaks["fp32"],
    }
    if ref_total and "reference" in steps:
        out["reference_gflops_per_s"] = ref_total / steps["reference"]["median_s"] / 1e9
    return out


def compare_curves(args, device: torch.device) -> dict[str, Any]:
    """N steps from the same init and the same batches: ours in plain form (fp32, contiguous, the transformation
    network's plain layers), ours as configured, and the reference. Plain vs configured must agree within
    noise; the reference's series (a different parametrisation: 0-255 images, unbounded output, other loss
    scale) is printed normalised by its first loss."""
    n = args.compare_curves
    batches = [b.to(device) for b in fixed_batches(args.size, args.batch, n, args.seed + 1)]
    flags = main_variant_flags(args)
    plain = build_ours(args, "32-true", frozenset({"plain_layers"}), device)
    configured = build_ours(args, args.precision, flags, device)  # same seed: the same init
    reference = build_reference(configured, args, device)
    series: dict[str, list[float]] = {"ours_plain": [], "ours_configured": [], "reference": []}
    for b in batches:
        series["ours_plain"].append(plain.step(b))
        series["ours_configured"].append(configured.step(b))
        series["reference"].append(float(reference.step(b)))
    rel = [abs(a - b) / abs(a) for a, b in zip(series["ours_plain"], series["ours_configured"], strict=False)]
    norm = {k: [v / s[0] for v in s] for k, s in series.items()}
    print(
        f"\nloss curves over {n} steps (normalised by the first loss): ours 32-true+plain_layers | ours "
        f"{variant_name(args.precision, flags)} | reference"
    )
    for i in range(n):
        print(f"  {i:3d}  {norm['ours_plain'][i]:.4f}  {norm['ours_configured'][i]:.4f}  {norm['reference'][i]:.4f}")
    print(f"relative difference ours configured vs ours plain: max {max(rel):.2e}, last {rel[-1]:.2e}")
    return {"series": series, "normalised": norm, "relative_difference": rel, "max_relative_difference": max(rel)}


if __name__ == "__main__":
    main()
