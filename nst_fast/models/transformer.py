"""Johnson et al. (2016) image-transformation network, with the usual improvements:
instance normalisation (Ulyanov et al.), reflection padding, and nearest-neighbour upsampling followed
by a convolution instead of transposed convolutions (no checkerboard artifacts).

With ``num_conditions > 1`` every instance norm is a conditional instance norm (Dumoulin, Shlens & Kudlur 2017,
"A Learned Representation for Artistic Style"): one scale and shift per condition (a style, or the identity),
the convolutions shared. ``forward(x, condition)`` takes mixing weights ``[B, num_conditions]`` per image, so
one network switches, blends and doses styles by mixing their normalisation parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nst_fast.conventions import MIN_SIDE
from nst_fast.errors import ConfigError
from nst_fast.layout import is_channels_last
from nst_fast.models.subpixel import SpaceToDepthConv2d, UpsampleConv2d

#: How the decoder doubles the resolution before each of its two 3x3 convs.
UPSAMPLING = ("nearest", "bilinear")
#: The network halves the resolution twice, so it works internally on sizes divisible by this.
SIZE_MULTIPLE = 4
#: Smallest input side: reflection padding must be narrower than the (aligned) image.
MIN_INPUT_SIZE = MIN_SIDE


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


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm whose affine parameters are mixed per image from a table of ``num_conditions`` rows.

    ``weight``, ``bias``: ``[num_conditions, C]`` (row ``k`` is condition ``k``'s scale and shift). For images
    ``x [B, C, H, W]`` and mixing weights ``condition [B, num_conditions]``::

        y[b, c] = (x[b, c] - mean) / sqrt(var + eps) * (condition[b] @ weight)[c] + (condition[b] @ bias)[c]

    with the mean and (biased) variance over ``H, W`` of ``x[b, c]``. A one-hot row selects one condition; a
    convex mix interpolates styles (Dumoulin et al. 2017). Computed in float32 and returned in ``x``'s dtype;
    keeps the channels_last layout on the CPU like ``InstanceNorm2d``.
    """

    def __init__(self, num_features: int, num_conditions: int, eps: float = 1e-5) -> None:
        super().__init__()
        if num_conditions < 2:
            raise ValueError(f"a conditional instance norm needs >= 2 conditions, got {num_conditions}")
        self.num_features = num_features
        self.num_conditions = num_conditions
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_conditions, num_features))
        self.bias = nn.Parameter(torch.zeros(num_conditions, num_features))

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if not tracing and (condition.dim() != 2 or condition.shape[1] != self.num_conditions):
            raise ValueError(f"condition weights must be [B, {self.num_conditions}], got {tuple(condition.shape)}")
        # Statistics in float32 (a no-op for float32 input): half-precision variances lose precision or overflow.
        wide = x.float()
        if (
            x.device.type == "cpu"
            and is_channels_last(x)
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        ):
            normalised = F.group_norm(wide, self.num_features, None, None, self.eps)
        else:
            normalised = F.instance_norm(wide, eps=self.eps)
        # Mixed as a weighted sum, not a matmul, which autocast would run in half precision.
        condition = condition.float().unsqueeze(2)
        scale = (condition * self.weight.float()).sum(dim=1)[:, :, None, None]
        shift = (condition * self.bias.float()).sum(dim=1)[:, :, None, None]
        return torch.addcmul(shift, normalised, scale).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_conditions={self.num_conditions}, eps={self.eps}"


def _takes_condition(layer: nn.Module) -> bool:
    """Whether ``layer.forward`` takes the condition weights as its second argument."""
    return isinstance(layer, (ConditionalInstanceNorm2d, ConditionalSequential, ResidualBlock))


class ConditionalSequential(nn.Sequential):
    """``nn.Sequential`` that hands the condition weights (or ``None``) to the layers that take them."""

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, condition) if _takes_condition(layer) else layer(x)
        return x


def instance_norm(channels: int, num_conditions: int) -> nn.Module:
    """The network's normalisation layer: ``InstanceNorm2d`` (affine) for one condition, else conditional."""
    if num_conditions == 1:
        return InstanceNorm2d(channels, affine=True)
    return ConditionalInstanceNorm2d(channels, num_conditions)


class ConvNormAct(ConditionalSequential):
    """Reflection pad -> conv -> instance norm -> optional ReLU; ``upsample`` doubles H, W first: ``nearest``
    (computed at low resolution by ``UpsampleConv2d``, 3x3 stride-1 only) or ``bilinear`` (``nn.Upsample``, then the
    padded conv at full resolution). ``num_conditions > 1``: the norm is conditional (``forward(x, condition)``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        relu: bool = True,
        upsample: str | None = None,
        num_conditions: int = 1,
    ) -> None:
        if upsample is not None:
            if kernel_size != 3 or stride != 1:
                raise ValueError(f"upsampling layers are 3x3 stride 1, got kernel {kernel_size}, stride {stride}")
            if upsample not in UPSAMPLING:
                raise ConfigError(f"model.upsample={upsample!r} is unknown; choose one of {UPSAMPLING}")
        if upsample == "nearest":
            layers: list[nn.Module] = [UpsampleConv2d(in_channels, out_channels)]
        elif upsample == "bilinear":
            layers = [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.ReflectionPad2d(1),
                nn.Conv2d(in_channels, out_channels, 3),
            ]
        else:
            layers = [nn.ReflectionPad2d(kernel_size // 2), nn.Conv2d(in_channels, out_channels, kernel_size, stride)]
        layers.append(instance_norm(out_channels, num_conditions))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SeparableConvNormAct(ConditionalSequential):
    """Reflection pad 1 -> depthwise 3x3 conv -> pointwise 1x1 conv -> instance norm -> optional ReLU: a
    depthwise-separable 3x3 layer (MobileNet, Howard et al. 2017), ``9 C + C^2`` multiply-adds per pixel instead of
    ``9 C^2`` (7.1x fewer at 64 channels). The depthwise conv has no bias (the pointwise conv's absorbs it)."""

    def __init__(self, channels: int, *, relu: bool = True, num_conditions: int = 1) -> None:
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1),
            instance_norm(channels, num_conditions),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv + instance-norm layers with an identity shortcut (He et al.); ``separable``: the convs are
    depthwise-separable (``SeparableConvNormAct``)."""

    def __init__(self, channels: int, num_conditions: int = 1, separable: bool = False) -> None:
        super().__init__()
        if separable:
            layers = [
                SeparableConvNormAct(channels, num_conditions=num_conditions),
                SeparableConvNormAct(channels, relu=False, num_conditions=num_conditions),
            ]
        else:
            layers = [
                ConvNormAct(channels, channels, 3, num_conditions=num_conditions),
                ConvNormAct(channels, channels, 3, relu=False, num_conditions=num_conditions),
            ]
        self.body = ConditionalSequential(*layers)

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return x + self.body(x, condition)


#: Decoder state-dict names in checkpoints written before the sub-pixel layers (when Upsample, ReflectionPad2d(1)
#: and ReflectionPad2d(4) were modules of their own) -> the names of the same parameters now.
_PLAIN_DECODER_KEYS = {
    "decoder.0.2.": "decoder.0.0.",
    "decoder.0.3.": "decoder.0.1.",
    "decoder.1.2.": "decoder.1.0.",
    "decoder.1.3.": "decoder.1.1.",
    "decoder.3.": "decoder.2.",
}


def _rename_plain_decoder_keys(state_dict: dict, prefix: str, *args: object) -> None:
    """Load-state-dict pre-hook: checkpoints written with the plain decoder layers load unchanged (same
    parameters, other module indices). Recognised by ``decoder.3.weight``, which only that layout has."""
    if f"{prefix}decoder.3.weight" not in state_dict:
        return
    for key in [k for k in state_dict if k.startswith(f"{prefix}decoder.")]:
        for old, new in _PLAIN_DECODER_KEYS.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
                break


def architecture(
    base_channels: int,
    residual_blocks: int,
    separable: bool = False,
    residual_output: bool = False,
    upsample: str = "nearest",
    input_noise: float = 0.0,
    feature_noise: bool = False,
) -> dict[str, int | bool | str | float]:
    """``TransformerNet.config`` without ``num_conditions``: the architecture as checkpoints record it. ``separable``,
    ``residual_output``, ``upsample``, ``input_noise`` and ``feature_noise`` appear only when they differ from the
    original network, so that checkpoints of the default network read as before."""
    config: dict[str, int | bool | str | float] = {"base_channels": base_channels, "residual_blocks": residual_blocks}
    if separable:
        config["separable"] = True
    if residual_output:
        config["residual_output"] = True
    if upsample != "nearest":
        config["upsample"] = upsample
    if input_noise:
        config["input_noise"] = float(input_noise)
    if feature_noise:
        config["feature_noise"] = True
    return config


#: ``input_noise``: side of the fixed noise pattern (pixels; the pattern repeats with this period) and the seed it is
#: drawn with (the pattern is also stored in checkpoints, as the buffer ``noise_pattern``).
NOISE_PERIOD = 512
NOISE_SEED = 1234
#: Per data-parallel rank, how far (rows, columns) its random places are shifted: odd, so ranks 0-511 all differ.
NOISE_STREAM_SHIFT = (131, 337)


#: ``residual_output``: the photo enters the output as ``logit(clamp(x, eps, 1 - eps))``; half a grey level of 8 bits,
#: so that ``sigmoid`` gives every 8-bit value back exactly.
LOGIT_EPS = 1.0 / 512.0


def rows_per_condition(row: Tensor, num_conditions: int, zero_last: bool = False) -> Tensor:
    """A tensor saved as one row ``[C]`` for every condition, as the table ``[num_conditions, C]`` of that row (the
    full-resolution noise scale before it was a row per condition, and its optimiser moments); ``zero_last``: the
    last row, an exact identity's, zero."""
    table = row.expand(num_conditions, -1).clone()
    if zero_last:
        table[-1] = 0.0
    return table


def logit(x: Tensor) -> Tensor:
    """``log(x / (1 - x))`` of ``x`` clamped to ``[LOGIT_EPS, 1 - LOGIT_EPS]`` (exported as plain ONNX ops)."""
    clamped = x.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS)
    return torch.log(clamped) - torch.log1p(-clamped)


class TransformerNet(nn.Module):
    """Feed-forward style network: RGB ``[B, 3, H, W]`` in [0, 1] -> stylised RGB of the same shape in [0, 1].

    Layout (default ``base_channels=32``, ``residual_blocks=5``): 9x9 conv 32, 3x3 stride-2 convs 64 and 128,
    five residual blocks of 128, two (nearest upsample x2 + 3x3 conv) stages 64 and 32, 9x9 conv to 3
    channels, sigmoid. The upsampling stages and the last conv are computed in exact sub-pixel forms
    (``nst_fast.models.subpixel``). Any ``H, W >= 5`` works: the input is reflect-padded to a multiple of 4 and the output
    cropped back, with no Python-side shape branches, so ``torch.onnx.export(dynamo=True)`` keeps H and W dynamic.

    ``separable``: depthwise-separable residual blocks (``SeparableConvNormAct``); with ``base_channels=16`` that is
    ``model=light``, about 7x fewer FLOPs than the default (bench/README.md, "A light network").

    ``num_conditions``: 1 (one style: plain instance norms, ``forward(x)``) or more (conditional instance norms,
    ``forward(x, condition)`` with mixing weights ``[B, num_conditions]``; the meaning of each condition, styles
    and identity, is kept by the training checkpoint).

    ``upsample``: ``nearest`` (the default: exact sub-pixel layers) or ``bilinear`` (smoother, plain layers).

    ``residual_output``: the output is ``sigmoid(d + g logit(x))`` with ``d`` the last convolution's output (which
    then has no bias) and ``g`` a learnt gain per condition (``photo_gain [num_conditions]``, mixed by the condition
    weights like the norms' parameters), instead of ``sigmoid(d)``. The gains start at 0, so a style starts as the
    plain network and takes as much of the photo as its costs ask for (a fixed gain of 1 kept the photo and barely
    reached the painting: docs/quality.md, RES). A condition with gain 1 and zero scale and shift in the last
    instance norm (``output_norm``) gives ``d = 0`` and back the photo exactly (the identity, pinned so by
    training); since the ReLU after that norm is positively homogeneous, mixing it with a style at strength ``s``
    gives ``sigmoid(s d_style + (1 - s + s g_style) logit(x))``: the strength control fades the style in from the
    photo itself.

    ``input_noise``: the standard deviation (in the input's [0, 1] units) of a fixed Gaussian noise pattern
    (``noise_pattern [1, 3, NOISE_PERIOD, NOISE_PERIOD]``, repeated over the image) added to the padded input; 0 (the
    default) adds none. The pattern gives the network a texture to paint strokes from in flat areas, where it
    otherwise falls back on a periodic mesh (docs/quality.md, fifth block). In training it starts at a random place
    for each batch; outside training at ``noise_offset`` (a buffer ``[2]``, row and column, 0 and 0): the same
    picture for the same photo every time, and tiles (``nst_fast.export.tiles``) pass their own place.

    ``feature_noise``: one channel of the same pattern is also added to the features of each upsampling stage of the
    decoder (at half and at full resolution, after its ReLU), times a learnt scale per feature channel that starts
    at 0 (StyleGAN's noise inputs, Karras et al. 2019): the full-resolution layers get a source of fine,
    aperiodic texture that the input's noise, seen through two stride-2 convolutions, cannot give them. At half
    resolution the pattern is read from half of ``noise_offset``. With several conditions the full-resolution scale
    is a table ``[num_conditions, C]`` mixed by the condition weights like the norms' parameters (one row per
    style): the noise enters after the last norm, so an identity row of zeros keeps the identity exact and the
    strength control's fade (above) exact too. Checkpoints with one shared row ``[C]`` load with it in every row.
    """

    def __init__(
        self,
        base_channels: int = 32,
        residual_blocks: int = 5,
        num_conditions: int = 1,
        separable: bool = False,
        residual_output: bool = False,
        upsample: str = "nearest",
        input_noise: float = 0.0,
        feature_noise: bool = False,
    ) -> None:
        super().__init__()
        if base_channels < 1 or residual_blocks < 0 or num_conditions < 1:
            raise ConfigError(
                f"base_channels and num_conditions must be >= 1 and residual_blocks >= 0, got {base_channels}, "
                f"{num_conditions} and {residual_blocks}"
            )
        if not 0.0 <= input_noise <= 1.0:
            raise ConfigError(
                f"model.input_noise={input_noise} is the noise's standard deviation in [0, 1] image units: use 0 "
                "(none) up to 1 (0.06 is what docs/quality.md measured best)"
            )
        self.config = architecture(
            base_channels, residual_blocks, separable, residual_output, upsample, input_noise, feature_noise
        )
        self.input_noise = float(input_noise)
        self.feature_noise = feature_noise
        #: Which copy of the network this is among data-parallel ranks (set by the training module): ranks seeded
        #: alike draw the same random places, so each shifts them by its own amount (``NOISE_STREAM_SHIFT``).
        self.noise_stream = 0
        if input_noise or feature_noise:
            generator = torch.Generator().manual_seed(NOISE_SEED)
            self.register_buffer("noise_pattern", torch.randn(1, 3, NOISE_PERIOD, NOISE_PERIOD, generator=generator))
            self.register_buffer("noise_offset", torch.zeros(2, dtype=torch.long), persistent=False)
        self.residual_output = residual_output
        if num_conditions > 1:
            self.config["num_conditions"] = num_conditions
        self.num_conditions = num_conditions
        c1, c2, c3 = base_channels, 2 * base_channels, 4 * base_channels
        k = num_conditions
        self.encoder = ConditionalSequential(
            ConvNormAct(3, c1, 9, num_conditions=k),
            ConvNormAct(c1, c2, 3, 2, num_conditions=k),
            ConvNormAct(c2, c3, 3, 2, num_conditions=k),
        )
        self.residuals = ConditionalSequential(*(ResidualBlock(c3, k, separable) for _ in range(residual_blocks)))
        self.decoder = ConditionalSequential(
            ConvNormAct(c3, c2, 3, upsample=upsample, num_conditions=k),
            ConvNormAct(c2, c1, 3, upsample=upsample, num_conditions=k),
            SpaceToDepthConv2d(c1, 3, 9, bias=not residual_output),
        )
        if feature_noise:
            self.noise_scale_half = nn.Parameter(torch.zeros(c2))
            self.noise_scale_full = nn.Parameter(torch.zeros(c1) if k == 1 else torch.zeros(k, c1))
            self._register_load_state_dict_pre_hook(self._noise_scale_per_condition)
        if residual_output:
            self.photo_gain = nn.Parameter(torch.zeros(num_conditions))
            self._register_load_state_dict_pre_hook(self._fixed_photo_gain)
        self._register_load_state_dict_pre_hook(_rename_plain_decoder_keys)

    def _fixed_photo_gain(self, state_dict: dict, prefix: str, *args: object) -> None:
        """Load-state-dict pre-hook: ``residual_output`` checkpoints written before the learnt gain added the whole
        photo (gain 1 for every condition), and load so."""
        if f"{prefix}photo_gain" not in state_dict and f"{prefix}decoder.2.weight" in state_dict:
            state_dict[f"{prefix}photo_gain"] = torch.ones(self.num_conditions)

    def _noise_scale_per_condition(self, state_dict: dict, prefix: str, *args: object) -> None:
        """Load-state-dict pre-hook: a full-resolution noise scale saved as one row ``[C]`` for every condition
        (before the table) loads into each row of ``[num_conditions, C]``: the same network."""
        key = f"{prefix}noise_scale_full"
        scale = state_dict.get(key)
        if self.num_conditions > 1 and scale is not None and scale.dim() == 1:
            state_dict[key] = rows_per_condition(scale, self.num_conditions)

    def _noise(self, height: int, width: int, stride: int = 1) -> Tensor:
        """``noise_pattern`` over ``[1, 3, height, width]``, repeated, from a random place in training and from
        ``noise_offset // stride`` otherwise (``stride``: the tensor's pixel in image pixels; gathered by index, so
        exports keep ``height`` and ``width`` dynamic)."""
        pattern = self.noise_pattern
        period = pattern.shape[-1]
        if self.training:
            shift = [self.noise_stream * step for step in NOISE_STREAM_SHIFT]
            offset = torch.randint(0, period, (2,), device=pattern.device) + torch.tensor(shift, device=pattern.device)
        else:
            offset = self.noise_offset // stride
        rows = (torch.arange(height, device=pattern.device) + offset[0]) % period
        columns = (torch.arange(width, device=pattern.device) + offset[1]) % period
        return pattern.index_select(2, rows).index_select(3, columns)

    def _scaled_noise(
        self, scale: Tensor, features: Tensor, channel: int, stride: int, condition: Tensor | None = None
    ) -> Tensor:
        """``feature_noise``: channel ``channel`` of the pattern over ``features``' grid, times ``scale [C]``, or
        times the table ``scale [K, C]`` mixed by ``condition [B, K]``."""
        noise = self._noise(features.shape[-2], features.shape[-1], stride)[:, channel : channel + 1]
        if scale.dim() == 2:
            return ((condition.float() @ scale)[:, :, None, None] * noise).to(features.dtype)
        return (scale[None, :, None, None] * noise).to(features.dtype)

    @property
    def output_norm(self) -> nn.Module:
        """The last instance norm (before the ReLU and the output convolution)."""
        return next(
            layer for layer in self.decoder[-2] if isinstance(layer, (InstanceNorm2d, ConditionalInstanceNorm2d))
        )

    def output_parameters(self) -> list[nn.Parameter]:
        """The last convolution's weight and bias: the only layer with no normalisation after it (its output goes
        straight into the sigmoid), so its learning rate sets how far one optimiser step moves the image."""
        return list(self.decoder[-1].parameters())

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        height, width = x.shape[-2], x.shape[-1]
        # Traced and compiled graphs skip these Python checks (a trace would freeze them at the example's size;
        # the TorchScript export scripts its own size check in front of the network).
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            if x.dim() != 4 or x.shape[1] != 3 or min(height, width) < MIN_INPUT_SIZE:
                raise ValueError(
                    f"TransformerNet expects RGB images [B, 3, H, W] with H, W >= {MIN_INPUT_SIZE}, got {tuple(x.shape)}"
                )
            if (condition is None) != (self.num_conditions == 1):
                raise ValueError(
                    f"this TransformerNet has {self.num_conditions} condition(s): pass condition weights "
                    f"[B, {self.num_conditions}] exactly when there are more than one"
                )
        pad_bottom = (SIZE_MULTIPLE - height % SIZE_MULTIPLE) % SIZE_MULTIPLE
        pad_right = (SIZE_MULTIPLE - width % SIZE_MULTIPLE) % SIZE_MULTIPLE
        photo = x
        x = F.pad(x, (0, pad_right, 0, pad_bottom), mode="reflect")
        if self.input_noise:
            x = x + (self.input_noise * self._noise(x.shape[-2], x.shape[-1])).to(x.dtype)
        features = self.residuals(self.encoder(x, condition), condition)
        if self.feature_noise:
            half = self.decoder[0](features, condition)
            half = half + self._scaled_noise(self.noise_scale_half, half, channel=1, stride=2)
            full = self.decoder[1](half, condition)
            full = full + self._scaled_noise(self.noise_scale_full, full, channel=0, stride=1, condition=condition)
            y = self.decoder[2](full)
        else:
            y = self.decoder(features, condition)
        y = y[:, :, :height, :width]
        if self.residual_output:
            gain = self.photo_gain if condition is None else (condition.float() * self.photo_gain).sum(dim=1)
            y = y + gain.to(y.dtype)[:, None, None, None] * logit(photo)
        return torch.sigmoid(y)


def add_conditions(network: TransformerNet, count: int, position: int) -> TransformerNet:
    """A copy of ``network`` with ``count`` new conditions inserted at ``position`` (after its styles, before an
    identity condition), for fine-tuning new styles into a trained network. The convolutions are copied; each
    norm's new rows start at the mean of its rows ``[0, position)`` (the trained styles: a generic style, a
    better start than the identity or the initial 1/0), the existing rows are kept.
    """
    if count < 1 or not 1 <= position <= network.num_conditions:
        raise ValueError(f"add {count} >= 1 conditions at position 1..{network.num_conditions}, got {position}")
    config = {key: value for key, value in network.config.items() if key != "num_conditions"}
    extended = TransformerNet(**config, num_conditions=network.num_conditions + count)
    state, targets = {}, extended.state_dict()
    for key, value in network.state_dict().items():
        if value.shape != targets[key].shape:  # a norm's scale or shift [C] or [K, C], or the photo gain [K]
            table = value.reshape(network.num_conditions, -1)
            new_rows = table[:position].mean(dim=0, keepdim=True).expand(count, -1)
            value = torch.cat([table[:position], new_rows, table[position:]]).reshape(targets[key].shape)
        state[key] = value
    extended.load_state_dict(state)
    return extended
