"""Shared helpers for the benchmarks: timing, matmul peak, FLOP counting, machine info, JSON records, contact-sheet
labels, and a faithful copy of the widely used PyTorch example (pytorch/examples ``fast_neural_style``) as the
reference.

Plain module, imported by the bench scripts (which put ``bench/`` on ``sys.path``); nothing here is part of the
``nst_fast`` package.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


# --- Machine, timing ------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU features that matter for these benchmarks (AVX-512, bf16, AMX)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(
                    f for f in flags if f.startswith(("avx512_bf16", "avx512_fp16", "amx", "avx512f", "avx2"))
                )
    except OSError:
        pass
    return []


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["cuda_version"] = torch.version.cuda
        info["cudnn_version"] = torch.backends.cudnn.version()
    return info


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: CUDA is not available on this machine")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds for one call of ``fn`` (device synchronised before and after)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(
    fns: Mapping[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Time each function ``repeats`` times after ``warmup`` calls, alternating between them (ABAB...), so that
    noise from other processes on shared cores hits all of them alike. Returns name -> seconds per call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(repeats):
        # Alternate the order too (AB BA AB ...), so that neither always runs first.
        order = list(fns.items()) if i % 2 == 0 else list(reversed(fns.items()))
        for name, fn in order:
            times[name].append(timed(fn, device))
    return times


def summary(seconds: Sequence[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "n": len(seconds),
    }


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 5) -> float:
    """Measured matmul throughput in GFLOP/s (best of ``repeats``) for square ``n x n`` matrices."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    sync(device)
    best = min(timed(lambda: torch.mm(a, b), device) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """FLOPs of one call of ``fn`` (``torch.utils.flop_counter``: matmuls and convolutions, forward and
    backward), and ``fn``'s result."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        result = fn()
    return int(counter.get_total_flops()), result


def write_record(name: str, record: dict[str, Any], out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``record`` as ``<out_dir>/<name>-<UTC timestamp>.json`` (default ``bench/results/``)."""
    out = Path(out_dir) if out_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = out / f"{name}-{stamp}.json"
    record = {"benchmark": name, "timestamp": stamp, **record}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [
        [f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def label(image: Image.Image, text: str) -> Image.Image:
    """Draw ``text`` in white on a black box at the top left of ``image`` (in place, returned): contact sheets."""
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 7 * len(text) + 6, 14), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255))
    return image


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


# --- Reference: pytorch/examples fast_neural_style, copied faithfully -------------------------------------------------
# transformer_net.py, vgg.py and utils.py of https://github.com/pytorch/examples/tree/main/fast_neural_style
# (BSD-3-Clause). Only the pretrained VGG download is replaced by "weights from a given features module", so
# that the reference uses exactly the same (possibly random) loss network weights as ours.


class ConvLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        reflection_padding = kernel_size // 2
        self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.reflection_pad(x)
        out = self.conv2d(out)
        return out


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        out = out + residual
        return out


class UpsampleConvLayer(nn.Module):
    """Upsamples the input and then does a convolution (instead of ConvTranspose2d)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, upsample: int | None = None
    ) -> None:
        super().__init__()
        self.upsample = upsample
        reflection_padding = kernel_size // 2
        self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        x_in = x
        if self.upsample:
            x_in = torch.nn.functional.interpolate(x_in, mode="nearest", scale_factor=self.upsample)
        out = self.reflection_pad(x_in)
        out = self.conv2d(out)
        return out


class ExampleTransformerNet(nn.Module):
    """``TransformerNet`` of the PyTorch example: RGB in [0, 255] -> RGB (unbounded, ~[0, 255])."""

    def __init__(self) -> None:
        super().__init__()
        # Initial convolution layers
        self.conv1 = ConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = ConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = ConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        # Residual layers
        self.res1 = ResidualBlock(128)
        self.res2 = ResidualBlock(128)
        self.res3 = ResidualBlock(128)
        self.res4 = ResidualBlock(128)
        self.res5 = ResidualBlock(128)
        # Upsampling Layers
        self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)
        # Non-linearities
        self.relu = nn.ReLU()

    def forward(self, X: Tensor) -> Tensor:
        y = self.relu(self.in1(self.conv1(X)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res1(y)
        y = self.res2(y)
        y = self.res3(y)
        y = self.res4(y)
        y = self.res5(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        y = self.deconv3(y)
        return y


class ExampleVgg16(nn.Module):
    """``Vgg16`` of the PyTorch example: four slices up to relu4_3, all four outputs on every call.
    ``features``: a torchvision ``vgg16().features`` (the example uses the ImageNet-pretrained one)."""

    def __init__(self, features: nn.Sequential, requires_grad: bool = False) -> None:
        super().__init__()
        vgg_pretrained_features = features
        self.slice1 = nn.Sequential()
        self.slice2 = nn.Sequential()
        self.slice3 = nn.Sequential()
        self.slice4 = nn.Sequential()
        for x in range(4):
            self.slice1.add_module(str(x), vgg_pretrained_features[x])
        for x in range(4, 9):
            self.slice2.add_module(str(x), vgg_pretrained_features[x])
        for x in range(9, 16):
            self.slice3.add_module(str(x), vgg_pretrained_features[x])
        for x in range(16, 23):
            self.slice4.add_module(str(x), vgg_pretrained_features[x])
        if not requires_grad:
            for param in self.parameters():
                param.requires_grad = False

    def forward(self, X: Tensor):
        h = self.slice1(X)
        h_relu1_2 = h
        h = self.slice2(h)
        h_relu2_2 = h
        h = self.slice3(h)
        h_relu3_3 = h
        h = self.slice4(h)
        h_relu4_3 = h
        vgg_outputs = namedtuple("VggOutputs", ["relu1_2", "relu2_2", "relu3_3", "relu4_3"])
        out = vgg_outputs(h_relu1_2, h_relu2_2, h_relu3_3, h_relu4_3)
        return out


def example_gram_matrix(y: Tensor) -> Tensor:
    (b, ch, h, w) = y.size()
    features = y.view(b, ch, w * h)
    features_t = features.transpose(1, 2)
    gram = features.bmm(features_t) / (ch * h * w)
    return gram


def example_normalize_batch(batch: Tensor) -> Tensor:
    # normalize using imagenet mean and std
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    batch = batch.div_(255.0)
    return (batch - mean) / std


class ExampleTrainer:
    """The example's training step (``train()`` in ``neural_style.py``): transformer on [0, 255] images, VGG of
    both ``y`` and ``x`` to relu4_3 with autograd on, content MSE at relu2_2, style MSE of Grams/(CHW) at the
    four layers, summed, Adam lr 1e-3. ``style``: ``[1, 3, H, W]`` in [0, 1]."""

    def __init__(
        self,
        vgg_features: nn.Sequential,
        style: Tensor,
        batch_size: int,
        device: torch.device,
        content_weight: float = 1e5,
        style_weight: float = 1e10,
        lr: float = 1e-3,
    ) -> None:
        self.transformer = ExampleTransformerNet().to(device)
        self.optimizer = torch.optim.Adam(self.transformer.parameters(), lr)
        self.mse_loss = nn.MSELoss()
        self.vgg = ExampleVgg16(vgg_features, requires_grad=False).to(device)
        self.content_weight = content_weight
        self.style_weight = style_weight
        style = style.mul(255).repeat(batch_size, 1, 1, 1).to(device)
        features_style = self.vgg(example_normalize_batch(style))
        self.gram_style = [example_gram_matrix(y) for y in features_style]

    def step(self, x: Tensor) -> Tensor:
        """One step on ``x`` ``[B, 3, H, W]`` in [0, 1] (the example's loader gives ``ToTensor() * 255``)."""
        x = x.mul(255)
        n_batch = len(x)
        self.optimizer.zero_grad()
        y = self.transformer(x)
        y = example_normalize_batch(y)
        x = example_normalize_batch(x)
        features_y = self.vgg(y)
        features_x = self.vgg(x)
        content_loss = self.content_weight * self.mse_loss(features_y.relu2_2, features_x.relu2_2)
        style_loss = 0.0
        for ft_y, gm_s in zip(features_y, self.gram_style, strict=False):
            gm_y = example_gram_matrix(ft_y)
            style_loss += self.mse_loss(gm_y, gm_s[:n_batch, :, :])
        style_loss *= self.style_weight
        total_loss = content_loss + style_loss
        total_loss.backward()
        self.optimizer.step()
        return total_loss.detach()


def copy_vgg_body(body: nn.Sequential) -> nn.Sequential:
    """A copy of our loss network's layers (same weights) as torchvision's ``vgg16().features[:23]``, with
    torchvision's in-place ReLUs as the example has them."""
    return nn.Sequential(*[_copy_module(m) for m in body])


def _copy_module(module: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(module)
    if isinstance(clone, nn.ReLU):
        clone.inplace = True  # torchvision's default, as in the example
    return clone


def plain_layers(network: nn.Module) -> nn.Module:
    """A copy of ``network`` (same weights) in which nst_fast's sub-pixel layers are replaced by the layers they
    compute, as Johnson et al. and the PyTorch example write them: ``UpsampleConv2d`` by nearest x2 upsample,
    reflection pad 1 and the 3x3 conv; ``SpaceToDepthConv2d`` by reflection pad ``k // 2`` and the ``k x k``
    conv. The reference for inference latency, and the plain form in the training benchmark's curves."""
    import copy

    from nst_fast.layout import is_channels_last
    from nst_fast.models.subpixel import SpaceToDepthConv2d, UpsampleConv2d

    def plain_conv(conv: nn.Conv2d) -> nn.Conv2d:
        clone = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, bias=conv.bias is not None)
        clone.load_state_dict(conv.state_dict())
        layout = torch.channels_last if is_channels_last(conv.weight) else torch.contiguous_format
        return clone.to(device=conv.weight.device, dtype=conv.weight.dtype, memory_format=layout)

    network = copy.deepcopy(network)
    for module in list(network.modules()):
        for name, child in module.named_children():
            if isinstance(child, UpsampleConv2d):
                setattr(
                    module,
                    name,
                    nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), plain_conv(child)
                    ),
                )
            elif isinstance(child, SpaceToDepthConv2d):
                setattr(module, name, nn.Sequential(nn.ReflectionPad2d(child.kernel_size[0] // 2), plain_conv(child)))
    return network
