"""Johnson et al. (2016) image-transformation network, with the usual improvements:
instance normalisation (Ulyanov et al.), reflection padding, and nearest-neighbour upsampling followed
by a convolution instead of transposed convolutions (no checkerboard artifacts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nst_fast.errors import ConfigError
from nst_fast.layout import is_channels_last
from nst_fast.models.subpixel import SpaceToDepthConv2d, UpsampleConv2d

#: The network halves the resolution twice, so it works internally on sizes divisible by this.
SIZE_MULTIPLE = 4
#: Smallest input side: reflection padding must be narrower than the (aligned) image.
MIN_INPUT_SIZE = 5


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same parameters and state dict) that keeps the channels_last layout.

    For channels_last input on the CPU it computes ``F.group_norm`` with one group per channel, which is
    the same maths; PyTorch's instance-norm kernel would convert to the contiguous layout and back around
    every norm, which costs more than channels_last saves (bench/README.md). CUDA (whose group norm does
    not keep the layout and runs in float32 under autocast), contiguous input, tracing and export take the
    ordinary path.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and is_channels_last(x):
            if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
                return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)
        return super().forward(x)


class ConvNormAct(nn.Sequential):
    """Reflection pad -> conv -> instance norm -> optional ReLU; ``upsample`` doubles H, W first (nearest),
    computed at low resolution by ``UpsampleConv2d`` (3x3 stride-1 only)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *, relu: bool = True,
        upsample: bool = False,
    ) -> None:
        if upsample:
            if kernel_size != 3 or stride != 1:
                raise ValueError(f"upsampling layers are 3x3 stride 1, got kernel {kernel_size}, stride {stride}")
            layers: list[nn.Module] = [UpsampleConv2d(in_channels, out_channels)]
        else:
            layers = [nn.ReflectionPad2d(kernel_size // 2), nn.Conv2d(in_channels, out_channels, kernel_size, stride)]
        layers.append(InstanceNorm2d(out_channels, affine=True))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv + instance-norm layers with an identity shortcut (He et al.)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(channels, channels, 3), ConvNormAct(channels, channels, 3, relu=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


#: Decoder state-dict names in checkpoints written before the sub-pixel layers (when Upsample, ReflectionPad2d(1)
#: and ReflectionPad2d(4) were modules of their own) -> the names of the same parameters now.
_PLAIN_DECODER_KEYS = {"decoder.0.2.": "decoder.0.0.", "decoder.0.3.": "decoder.0.1.", "decoder.1.2.": "decoder.1.0.",
                       "decoder.1.3.": "decoder.1.1.", "decoder.3.": "decoder.2."}


def _rename_plain_decoder_keys(state_dict: dict, prefix: str, *args: object) -> None:
    """Load-state-dict pre-hook: checkpoints written with the plain decoder layers load unchanged (same
    parameters, other module indices). Recognised by ``decoder.3.weight``, which only that layout has."""
    if f"{prefix}decoder.3.weight" not in state_dict:
        return
    for key in [k for k in state_dict if k.startswith(f"{prefix}decoder.")]:
        for old, new in _PLAIN_DECODER_KEYS.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
                break


class TransformerNet(nn.Module):
    """Feed-forward style network: RGB ``[B, 3, H, W]`` in [0, 1] -> stylised RGB of the same shape in [0, 1].

    Layout (default ``base_channels=32``, ``residual_blocks=5``): 9x9 conv 32, 3x3 stride-2 convs 64 and 128,
    five residual blocks of 128, two (nearest upsample x2 + 3x3 conv) stages 64 and 32, 9x9 conv to 3
    channels, sigmoid. The upsampling stages and the last conv are computed in exact sub-pixel forms
    (``nst_fast.models.subpixel``). Any ``H, W >= 5`` works: the input is reflect-padded to a multiple of 4 and the output
    cropped back, with no Python-side shape branches, so ``torch.onnx.export(dynamo=True)`` keeps H and W dynamic.
    """

    def __init__(self, base_channels: int = 32, residual_blocks: int = 5) -> None:
        super().__init__()
        if base_channels < 1 or residual_blocks < 0:
            raise ConfigError(
                f"base_channels must be >= 1 and residual_blocks >= 0, got {base_channels} and {residual_blocks}"
            )
        self.config = {"base_channels": base_channels, "residual_blocks": residual_blocks}
        c1, c2, c3 = base_channels, 2 * base_channels, 4 * base_channels
        self.encoder = nn.Sequential(ConvNormAct(3, c1, 9), ConvNormAct(c1, c2, 3, 2), ConvNormAct(c2, c3, 3, 2))
        self.residuals = nn.Sequential(*(ResidualBlock(c3) for _ in range(residual_blocks)))
        self.decoder = nn.Sequential(
            ConvNormAct(c3, c2, 3, upsample=True),
            ConvNormAct(c2, c1, 3, upsample=True),
            SpaceToDepthConv2d(c1, 3, 9),
        )
        self._register_load_state_dict_pre_hook(_rename_plain_decoder_keys)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2], x.shape[-1]
        if not torch.compiler.is_compiling() and (x.dim() != 4 or x.shape[1] != 3 or min(height, width) < MIN_INPUT_SIZE):
            raise ValueError(
                f"TransformerNet expects RGB images [B, 3, H, W] with H, W >= {MIN_INPUT_SIZE}, got {tuple(x.shape)}"
            )
        pad_bottom = (SIZE_MULTIPLE - height % SIZE_MULTIPLE) % SIZE_MULTIPLE
        pad_right = (SIZE_MULTIPLE - width % SIZE_MULTIPLE) % SIZE_MULTIPLE
        x = F.pad(x, (0, pad_right, 0, pad_bottom), mode="reflect")
        y = self.decoder(self.residuals(self.encoder(x)))
        return torch.sigmoid(y[:, :, :height, :width])
