"""Exact sub-pixel reformulations of the two costliest convolutions of the transformation network.

Both are ``nn.Conv2d`` subclasses with the ordinary ``weight [O, I, k, k]`` and ``bias [O]`` (same parameters,
same state-dict entries, same maths); only the way the output is computed differs:

* ``UpsampleConv2d``: nearest x2 upsample -> reflection pad ``k // 2`` -> 3x3 conv. Each output pixel of
  phase ``(a, b)`` (row parity ``a``, column parity ``b``) sees only a 2x2 window of the low-resolution
  input, so the layer is one 2x2 convolution with ``4 O`` outputs at low resolution followed by an
  interleave: 4/9 of the multiply-adds, and no upsampled copy of the input.
* ``SpaceToDepthConv2d``: reflection pad ``k // 2`` -> stride-1 ``k x k`` conv to few channels (the 9x9 conv to
  RGB). With 3 output channels the convolution kernels vectorise badly (40-60 GFLOP/s instead of ~300 on
  AVX-512); on 4x4 blocks of the input it becomes a 3x3 conv from ``16 I`` to ``16 O`` channels, about 1.8x
  the multiply-adds (the zero taps) but 3-4x faster.

Eagerly, the interleave (``_InterleavePhases``) copies in the input's layout and the blocked conv runs
channels_last (``_space_to_depth`` copies whole channel vectors there); outputs keep the input's layout.
Captured graphs (ONNX export, tracing, ``torch.compile``) interleave with a depth-to-space and a crop instead,
which ONNX Runtime runs faster than the equivalent transposes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nst_fast.layout import is_channels_last

#: Low-resolution taps of a 3-tap nearest-upsampled kernel: phase 0 reads rows (i-1, i) with weights
#: (w0, w1 + w2); phase 1 reads rows (i, i+1) with (w0 + w1, w2). Shape [phase, low-res tap, 3x3 tap].
_UPSAMPLE_TAPS = ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0))
#: Block side of ``SpaceToDepthConv2d``; the network's activations are a multiple of 4 in size.
BLOCK = 4


def _phase_crops(height: int, width: int, channels: int) -> list[tuple[int, int, slice, slice, slice]]:
    """``(a, b, rows, columns, channel block)`` of each output phase in the ``[B, h + 1, w + 1, 4 C]`` phase view."""
    crops = []
    for a in (0, 1):
        for b in (0, 1):
            block = 2 * (1 - a) + (1 - b)
            crops.append(
                (a, b, slice(a, a + height), slice(b, b + width), slice(block * channels, (block + 1) * channels))
            )
    return crops


class _InterleavePhases(torch.autograd.Function):
    """``[B, 4 C, h + 1, w + 1]`` phases (block ``2a + b`` = phase ``(1 - a, 1 - b)``) -> ``[B, C, 2h, 2w]``:
    output pixel ``(2i + a, 2j + b)`` is window ``(i + a, j + b)`` of phase ``(a, b)``. The four crops are copied
    into an output in the layout of ``phases`` (channels_last or contiguous), one pass; the backward copies the
    output gradient back into one zero-bordered phase gradient (autograd's slicing backward would build and
    sum four full-size zero tensors)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, phases: Tensor, channels: int) -> Tensor:  # type: ignore[override]
        batch, _, rows, columns = phases.shape
        height, width = rows - 1, columns - 1
        ctx.phase_shape = phases.shape
        ctx.channels = channels
        ctx.channels_last = is_channels_last(phases)
        if ctx.channels_last:
            source = phases.permute(0, 2, 3, 1)
            out = source.new_empty(batch, height, 2, width, 2, channels)
            for a, b, row_range, column_range, block in _phase_crops(height, width, channels):
                out[:, :, a, :, b, :] = source[:, row_range, column_range, block]
            return out.view(batch, 2 * height, 2 * width, channels).permute(0, 3, 1, 2)
        out = phases.new_empty(batch, channels, height, 2, width, 2)
        for a, b, row_range, column_range, block in _phase_crops(height, width, channels):
            out[:, :, :, a, :, b] = phases[:, block, row_range, column_range]
        return out.view(batch, channels, 2 * height, 2 * width)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        batch, phase_channels, rows, columns = ctx.phase_shape
        height, width = rows - 1, columns - 1
        crops = _phase_crops(height, width, ctx.channels)
        if ctx.channels_last:
            grad_out = grad.permute(0, 2, 3, 1).reshape(batch, height, 2, width, 2, ctx.channels)
            grad_phases = grad.new_zeros(batch, rows, columns, phase_channels)
            for a, b, row_range, column_range, block in crops:
                grad_phases[:, row_range, column_range, block] = grad_out[:, :, a, :, b, :]
            return grad_phases.permute(0, 3, 1, 2), None
        grad_out = grad.reshape(batch, ctx.channels, height, 2, width, 2)
        grad_phases = grad.new_zeros(batch, phase_channels, rows, columns)
        for a, b, row_range, column_range, block in crops:
            grad_phases[:, block, row_range, column_range] = grad_out[:, :, :, a, :, b]
        return grad_phases, None


def _graph_mode() -> bool:
    """Whether the forward is being captured (ONNX export, ``torch.jit.trace``, ``torch.compile``) rather than run.
    (``torch.compiler.is_compiling()`` is true while exporting too.)"""
    return torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def _space_to_depth(x: Tensor) -> Tensor:
    """``[B, C, H, W]`` (H, W multiples of ``BLOCK``) -> ``[B, BLOCK^2 C, H / BLOCK, W / BLOCK]`` with channel
    ``(p BLOCK + q) C + c`` holding pixel ``(BLOCK Y + p, BLOCK X + q)`` of channel ``c``; channels_last result."""
    batch, channels, height, width = x.shape
    blocks = x.permute(0, 2, 3, 1).reshape(batch, height // BLOCK, BLOCK, width // BLOCK, BLOCK, channels)
    blocks = blocks.permute(0, 1, 3, 2, 4, 5).reshape(batch, height // BLOCK, width // BLOCK, BLOCK * BLOCK * channels)
    return blocks.permute(0, 3, 1, 2)


class UpsampleConv2d(nn.Conv2d):
    """``conv(reflection_pad(upsample_nearest_x2(x), 1))`` for a 3x3 stride-1 conv, computed at low resolution.

    ``[B, I, h, w]`` -> ``[B, O, 2h, 2w]``. Reflection padding of the upsampled image equals replicate padding
    of the low-resolution one, so the input is replicate-padded by 1 and convolved once with the four 2x2
    phase kernels stacked (``4 O`` outputs), then the phases are interleaved.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, bias=bias)
        self.register_buffer("taps", torch.tensor(_UPSAMPLE_TAPS), persistent=False)

    def phase_weight(self, channel_major: bool = False) -> Tensor:
        """The stacked phase kernels ``[4 O, I, 2, 2]``. Kernel ``(2a + b) O + o`` (``4 o + 2a + b`` when
        ``channel_major``) is output channel ``o`` of phase ``(1 - a, 1 - b)``, whose window starts at offset
        ``(1 - a, 1 - b)`` of the padded input."""
        taps = self.taps.flip(0).to(self.weight.dtype)
        equation = "apu,oiuv,bqv->oabipq" if channel_major else "apu,oiuv,bqv->aboipq"
        with torch.autocast(self.weight.device.type, enabled=False):  # sum the taps at the weights' precision
            kernels = torch.einsum(equation, taps, self.weight, taps)
        return kernels.reshape(4 * self.out_channels, self.in_channels, 2, 2)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, nearest upsample x2 + reflection pad 1 + 3x3 conv, bias={self.bias is not None}"

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling() and not torch.compiler.is_exporting():
            # torch.compile's meta kernel of replication_pad2d_backward gets channels_last strides wrong
            # (torch 2.14: "expected stride 1==256 at dim=1"), so compiled graphs pad by concatenation.
            rows = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)
            padded = torch.cat([rows[:, :, :, :1], rows, rows[:, :, :, -1:]], dim=3)
        else:
            padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        if _graph_mode():
            # Depth-to-space of all (h + 1) x (w + 1) windows puts the output at offset (1, 1): output pixel
            # (2i + a, 2j + b) is window (i + a, j + b) of phase (a, b).
            bias = None if self.bias is None else self.bias.repeat_interleave(4)
            shuffled = F.pixel_shuffle(F.conv2d(padded, self.phase_weight(channel_major=True), bias), 2)
            return F.pad(shuffled, (-1, -1, -1, -1))  # the crop as one ONNX Pad (two Slices copy twice)
        bias = None if self.bias is None else self.bias.repeat(4)
        return _InterleavePhases.apply(F.conv2d(padded, self.phase_weight(), bias), self.out_channels)


class SpaceToDepthConv2d(nn.Conv2d):
    """``conv(reflection_pad(x, k // 2))`` for a ``k x k`` stride-1 conv (``k = 1 + 4 n``), computed on 4x4 blocks.

    ``[B, I, H, W]`` with H, W multiples of 4 -> ``[B, O, H, W]``. The padded input is rearranged into
    ``16 I`` channels of 4x4 blocks; output block pixel ``(a, b)`` of channel ``o`` is channel ``16 o + 4 a + b``
    of a ``K x K`` conv (``K = ceil((k + 3) / 4)``, 3 for k = 9) whose kernel holds ``weight[o, c, u, v]`` at
    the block tap where ``4 dy + p - a = u`` and ``4 dx + q - b = v``, zero elsewhere.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        if kernel_size % BLOCK != 1:
            raise ValueError(
                f"SpaceToDepthConv2d needs kernel_size = 1 + a multiple of {BLOCK} (e.g. 9), got {kernel_size}"
            )
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)
        self.register_buffer("block_taps", self._block_taps(kernel_size), persistent=False)

    @staticmethod
    def _block_taps(kernel_size: int) -> Tensor:
        """Index into the flattened ``k*k`` taps (``k*k`` = the zero tap) for ``[a, b, p, q, dy, dx]``."""
        span = (kernel_size + 2 * (BLOCK - 1)) // BLOCK
        index = torch.full((BLOCK, BLOCK, BLOCK, BLOCK, span, span), kernel_size * kernel_size, dtype=torch.long)
        for a in range(BLOCK):
            for b in range(BLOCK):
                for p in range(BLOCK):
                    for q in range(BLOCK):
                        for dy in range(span):
                            for dx in range(span):
                                u, v = BLOCK * dy + p - a, BLOCK * dx + q - b
                                if 0 <= u < kernel_size and 0 <= v < kernel_size:
                                    index[a, b, p, q, dy, dx] = u * kernel_size + v
        return index

    def block_weight(self) -> Tensor:
        """The block kernel ``[16 O, 16 I, K, K]`` (output ``16 o + 4 a + b``, input ``(4 p + q) I + c``)."""
        out_channels, in_channels = self.out_channels, self.in_channels
        flat = F.pad(self.weight.reshape(out_channels, in_channels, -1), (0, 1))  # the zero tap at index k*k
        span = self.block_taps.shape[-1]
        gathered = flat[:, :, self.block_taps]  # [O, I, a, b, p, q, dy, dx]
        gathered = gathered.permute(0, 2, 3, 4, 5, 1, 6, 7)  # [O, a, b, p, q, I, dy, dx]
        return gathered.reshape(out_channels * BLOCK * BLOCK, BLOCK * BLOCK * in_channels, span, span)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, reflection pad {self.kernel_size[0] // 2} + "
            f"{self.kernel_size[0]}x{self.kernel_size[1]} conv on {BLOCK}x{BLOCK} blocks, bias={self.bias is not None}"
        )

    def forward(self, x: Tensor) -> Tensor:
        if not _graph_mode() and (x.shape[-2] % BLOCK or x.shape[-1] % BLOCK):
            raise ValueError(f"SpaceToDepthConv2d needs H and W multiples of {BLOCK}, got {tuple(x.shape[-2:])}")
        pad = self.kernel_size[0] // 2
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        bias = None if self.bias is None else self.bias.repeat_interleave(BLOCK * BLOCK)
        out = F.pixel_shuffle(F.conv2d(_space_to_depth(padded), self.block_weight(), bias), BLOCK)
        if _graph_mode() or is_channels_last(x):
            return out
        return out.contiguous()  # the input's layout (the blocked conv runs channels_last)
