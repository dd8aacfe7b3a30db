"""Inference latency of the transformation network per resolution and runtime, against plain eager float32.

    python bench/inference.py                                  # 256, 512, 1024, 1920x1080 on CPU
    python bench/inference.py --sizes 256,1024 --repeats 5
    python bench/inference.py --device cuda --compile

Runtimes: ``eager-fp32-plain`` (the reference: ``TransformerNet``'s weights in the plain layers of Johnson et al.
and the PyTorch example, nearest upsample + reflection pad + conv, float32, contiguous, ``torch.inference_mode``;
``common.plain_layers``), ``eager-fp32`` (``TransformerNet`` as it is, with its exact sub-pixel layers),
``eager-fp32-cl`` (channels_last), ``eager-bf16-cl`` (bf16 autocast + channels_last), ``torchscript``
(``torch.jit.trace`` + ``torch.jit.freeze``), ``onnxruntime-fp32`` (and ``onnxruntime-fp16`` with CUDA),
``onnxruntime-int8`` (the fp32 export quantised by ``nst_fast.export.quantize.quantize_int8``, calibrated on the bundled
content photos at ``--int8-calibration-size``, as ``export.int8.enabled=true`` does; CPU) and ``compile``
(``torch.compile``, with ``--compile``). All runtimes of one size are timed alternately; each row gives the
median latency, its ratio to the reference (speed-up, > 1 is faster) and the max |difference| of its output to
the reference's (images in [0, 1]) and its PSNR. Weights are random, in the architecture of
``--model`` (a config of ``conf/model/``: johnson, the default, or light), unless
``--checkpoint`` names a trained single-style network: timing does not depend on them, but int8 quantisation's
error does (use a trained network for its quality; the input is random noise either way).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DEFAULT_SIZES = "256,512,1024,1920x1080"
REFERENCE = "eager-fp32-plain"
RUNTIMES = (
    REFERENCE,
    "eager-fp32",
    "eager-fp32-cl",
    "eager-bf16-cl",
    "torchscript",
    "onnxruntime-fp32",
    "onnxruntime-fp16",
    "onnxruntime-int8",
    "compile",
)


def model_config(name: str) -> dict[str, Any]:
    """``TransformerNet`` keyword arguments of ``conf/model/NAME.yaml``."""
    from omegaconf import OmegaConf

    from nst_fast.config import CONFIG_DIR

    path = Path(CONFIG_DIR) / "model" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml") if not p.stem.startswith("model_"))
        raise SystemExit(f"--model {name}: no {path}; known: {', '.join(known)}")
    config = OmegaConf.to_container(OmegaConf.load(path))
    return {key: value for key, value in config.items() if key not in ("defaults", "_target_")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated: N (square) or WxH")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per runtime and size (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads and ORT intra-op threads (0: default)")
    p.add_argument(
        "--runtimes",
        default="eager-fp32,eager-fp32-cl,eager-bf16-cl,torchscript,onnxruntime-fp32",
        help=f"comma-separated, from {', '.join(RUNTIMES)}; {REFERENCE} is always run (the reference). "
        "onnxruntime-fp16 needs CUDA",
    )
    p.add_argument("--compile", action="store_true", help="add the torch.compile runtime")
    p.add_argument(
        "--checkpoint", default=None, help="a trained single-style checkpoint's weights instead of random ones"
    )
    p.add_argument(
        "--model",
        default="johnson",
        help="the random network's architecture: a config of conf/model/ (johnson, light); --checkpoint sets its own",
    )
    p.add_argument(
        "--int8-calibration-size",
        type=int,
        default=512,
        help="onnxruntime-int8: side of the calibration squares (export.int8.size)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None, help="where the JSON record goes (default bench/results/)")
    return p


def parse_size(text: str) -> tuple[int, int]:
    """``"1024"`` -> (1024, 1024); ``"1920x1080"`` -> (height 1080, width 1920)."""
    if "x" in text:
        width, height = (int(v) for v in text.lower().split("x"))
        return height, width
    return int(text), int(text)


# --- Runtimes: each is (name, factory(net, device) -> run(x: Tensor) -> Tensor float32 NCHW) -----------------------


def eager(net: torch.nn.Module, device: torch.device, channels_last: bool = False, dtype: torch.dtype | None = None):
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext

    def run(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast():
            return net(x).float()

    return run


def torchscript(net: torch.nn.Module, device: torch.device, example: torch.Tensor):
    with torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(net, example).eval())

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return traced(x)

    return run


def compiled(net: torch.nn.Module, device: torch.device):
    fn = torch.compile(net, dynamic=False)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(x)

    return run


def export_onnx(net: torch.nn.Module, path: Path, fp16: bool = False) -> None:
    """Prefer the package's exporter (``nst_fast.export.export_onnx``) where it exists; else export here the same
    way (dynamo, dynamic batch/height/width, one self-contained file)."""
    try:
        from nst_fast.checkpoint import CheckpointInfo
        from nst_fast.export import export_onnx as package_export
    except ImportError:
        package_export = None
    if package_export is not None:
        package_export(net, path, CheckpointInfo(transformer=dict(net.config)), fp16=fp16)
        return
    if fp16:
        raise RuntimeError("fp16 ONNX export needs nst_fast.export")
    from torch.export import Dim

    dims = {0: Dim("batch", min=1), 2: Dim("height", min=5), 3: Dim("width", min=5)}
    program = torch.onnx.export(
        net.eval(),
        (torch.rand(2, 3, 64, 96),),
        dynamo=True,
        dynamic_shapes=(dims,),
        input_names=["image"],
        output_names=["stylized"],
        external_data=False,
    )
    program.save(str(path), external_data=False)


def onnxruntime_runner(net: torch.nn.Module, device: torch.device, workdir: Path, threads: int, fp16: bool = False):
    path = workdir / ("net.fp16.onnx" if fp16 else "net.onnx")
    export_onnx(net.cpu(), path, fp16=fp16)
    net.to(device)
    return onnx_session_runner(path, device, threads)


def onnxruntime_int8_runner(
    net: torch.nn.Module, device: torch.device, workdir: Path, threads: int, calibration_size: int
):
    """The int8 model as ``export.int8.enabled=true`` writes it (default settings), on the CPU provider."""
    from nst_fast.assets import content_folder
    from nst_fast.export import Int8Settings
    from nst_fast.export.calibration import calibration_files, calibration_photo
    from nst_fast.export.quantize import quantize_int8

    if device.type != "cpu":
        raise RuntimeError("the int8 model targets the CPU provider")
    float_path = workdir / "net.int8-source.onnx"
    export_onnx(net.cpu(), float_path)
    files = calibration_files(content_folder(), Int8Settings().photos)
    photos = [calibration_photo(file, calibration_size) for file in files]
    quantize_int8(float_path, workdir / "net.int8.onnx", photos, method=Int8Settings().method)
    return onnx_session_runner(workdir / "net.int8.onnx", device, threads)


def onnx_session_runner(path: Path, device: torch.device, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        options.intra_op_num_threads = threads
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    session = ort.InferenceSession(str(path), options, providers=providers)
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        # Host I/O included (as a deployment would do it without IO binding).
        out = session.run(None, {name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)

    return run


# --- Main -------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    info = common.machine_info(device)
    runtimes = [REFERENCE, *[r.strip() for r in args.runtimes.split(",") if r.strip() and r.strip() != REFERENCE]]
    if args.compile and "compile" not in runtimes:
        runtimes.append("compile")
    unknown = set(runtimes) - set(RUNTIMES)
    if unknown:
        raise SystemExit(f"unknown runtimes {sorted(unknown)}; choose from {RUNTIMES}")
    if "onnxruntime-fp16" in runtimes and device.type != "cuda":
        runtimes.remove("onnxruntime-fp16")
        print("# onnxruntime-fp16 skipped: it needs CUDA")
    if "onnxruntime-int8" in runtimes and device.type != "cpu":
        runtimes.remove("onnxruntime-int8")
        print("# onnxruntime-int8 skipped: it targets the CPU")
    print(
        f"# {info['cpu_model']} | torch {info['torch_version']} | {info['torch_threads']} threads | {device}"
        + (f" | {info.get('cuda_device')}" if device.type == "cuda" else "")
    )

    from nst_fast.models.transformer import TransformerNet

    trained, architecture = None, model_config(args.model)
    if args.checkpoint:
        from nst_fast.checkpoint import load_transformer

        trained, trained_info = load_transformer(args.checkpoint)
        if trained.num_conditions != 1:
            raise SystemExit(
                f"--checkpoint {args.checkpoint}: a single-style network is needed (the runtimes take one input)"
            )
        print(
            f"# weights: {args.checkpoint} (style {'+'.join(trained_info.style_names)}, step {trained_info.global_step})"
        )

    def new_net() -> torch.nn.Module:
        if trained is not None:
            net = TransformerNet(**trained.config).eval()
            net.load_state_dict(trained.state_dict())
            return net.to(device)
        torch.manual_seed(args.seed)
        net = TransformerNet(**architecture).eval()
        # Random affine parameters so that the norms are not identities (closer to a trained network).
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.InstanceNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        return net.to(device)

    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="nst-bench-"))
    runners: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    errors: dict[str, str] = {}
    example = torch.rand(args.batch, 3, *sizes[0], device=device)
    for name in runtimes:
        try:
            if name == REFERENCE:
                runners[name] = eager(common.plain_layers(new_net()), device)
            elif name == "eager-fp32":
                runners[name] = eager(new_net(), device)
            elif name == "eager-fp32-cl":
                runners[name] = eager(new_net(), device, channels_last=True)
            elif name == "eager-bf16-cl":
                runners[name] = eager(new_net(), device, channels_last=True, dtype=torch.bfloat16)
            elif name == "torchscript":
                runners[name] = torchscript(new_net(), device, example)
            elif name == "compile":
                runners[name] = compiled(new_net(), device)
            elif name == "onnxruntime-fp32":
                runners[name] = onnxruntime_runner(new_net(), device, workdir, args.threads)
            elif name == "onnxruntime-fp16":
                runners[name] = onnxruntime_runner(new_net(), device, workdir, args.threads, fp16=True)
            elif name == "onnxruntime-int8":
                runners[name] = onnxruntime_int8_runner(
                    new_net(), device, workdir, args.threads, args.int8_calibration_size
                )
        except Exception as error:  # noqa: BLE001 - a runtime that cannot be built is reported, not fatal
            errors[name] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            print(f"# {name} unavailable: {errors[name]}")

    results: list[dict[str, Any]] = []
    for height, width in sizes:
        torch.manual_seed(args.seed + 1)
        x = torch.rand(args.batch, 3, height, width, device=device)
        outputs = {name: run(x) for name, run in runners.items()}  # also a warm-up
        fns = {name: (lambda run=run, x=x: run(x)) for name, run in runners.items()}
        times = common.interleaved(fns, args.repeats, max(0, args.warmup - 1), device)
        ref_median = statistics.median(times[REFERENCE])
        label = f"{width}x{height}" if width != height else str(width)
        rows = []
        for name, seconds in times.items():
            s = common.summary(seconds)
            error = outputs[name].double() - outputs[REFERENCE].double()
            diff = float(error.abs().max())
            mse = float(error.square().mean())
            psnr = float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)
            results.append(
                {
                    "size": label,
                    "height": height,
                    "width": width,
                    "batch": args.batch,
                    "runtime": name,
                    **s,
                    "speedup_vs_reference": ref_median / s["median_s"],
                    "max_abs_diff_vs_reference": diff,
                    "psnr_db_vs_reference": psnr,
                }
            )
            rows.append([name, s["median_s"] * 1e3, f"{ref_median / s['median_s']:.2f}x", f"{diff:.1e}", f"{psnr:.1f}"])
        print(f"\n{label} (batch {args.batch})")
        print(common.table(rows, ["runtime", "median ms", f"vs {REFERENCE}", "max |diff|", "PSNR dB"]))

    record = {
        "machine": info,
        "config": vars(args),
        "reference": REFERENCE,
        "runtimes": runtimes,
        "unavailable": errors,
        "results": results,
    }
    path = common.write_record("inference", record, args.out_dir)
    print(f"\nrecord: {path}")
    record["record_path"] = str(path)
    return record


if __name__ == "__main__":
    main()
