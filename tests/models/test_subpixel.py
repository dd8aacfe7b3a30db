"""The sub-pixel layers against the plain layers they stand for, computed independently with torch.nn.functional."""

import pytest
import torch
import torch.nn.functional as F

from nst_fast.models.subpixel import SpaceToDepthConv2d, UpsampleConv2d


def plain_upsample_conv(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    upsampled = F.interpolate(x, scale_factor=2, mode="nearest")
    return F.conv2d(F.pad(upsampled, (1, 1, 1, 1), mode="reflect"), conv.weight, conv.bias)


def plain_padded_conv(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    pad = conv.kernel_size[0] // 2
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), conv.weight, conv.bias)


LAYOUTS = [torch.contiguous_format, torch.channels_last]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 9)])
@pytest.mark.parametrize("bias", [True, False])
def test_upsample_conv_equals_upsample_pad_conv(layout: torch.memory_format, size: tuple[int, int], bias: bool) -> None:
    torch.manual_seed(0)
    conv = UpsampleConv2d(5, 4, bias=bias).double()
    x = torch.randn(2, 5, *size, dtype=torch.float64).contiguous(memory_format=layout)
    out = conv(x)
    assert out.shape == (2, 4, 2 * size[0], 2 * size[1])
    torch.testing.assert_close(out, plain_upsample_conv(x, conv), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", [(8, 8), (12, 20), (28, 16)])
def test_space_to_depth_conv_equals_pad_conv(layout: torch.memory_format, size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    conv = SpaceToDepthConv2d(6, 3, 9).double()
    x = torch.randn(2, 6, *size, dtype=torch.float64).contiguous(memory_format=layout)
    torch.testing.assert_close(conv(x), plain_padded_conv(x, conv), rtol=1e-12, atol=1e-12)


def test_space_to_depth_conv_other_kernel_sizes_and_no_bias() -> None:
    torch.manual_seed(2)
    for kernel_size in (1, 5, 13):
        conv = SpaceToDepthConv2d(2, 3, kernel_size, bias=False).double()
        x = torch.randn(1, 2, 16, 12, dtype=torch.float64)
        torch.testing.assert_close(conv(x), plain_padded_conv(x, conv), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="kernel_size"):
        SpaceToDepthConv2d(2, 3, 3)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("make", "plain", "size"),
    [
        (lambda: UpsampleConv2d(3, 2), plain_upsample_conv, (3, 4)),
        (lambda: SpaceToDepthConv2d(2, 3, 9), plain_padded_conv, (8, 12)),
    ],
    ids=["upsample", "space_to_depth"],
)
def test_gradients_equal_the_plain_layers(layout, make, plain, size) -> None:
    torch.manual_seed(3)
    conv = make().double()
    x = torch.randn(2, conv.in_channels, *size, dtype=torch.float64).contiguous(memory_format=layout)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(conv, (x,))
    upstream = torch.randn(2, conv.out_channels, *conv(x).shape[-2:], dtype=torch.float64)
    grads = torch.autograd.grad((conv(x) * upstream).sum(), (x, conv.weight, conv.bias))
    expected = torch.autograd.grad((plain(x, conv) * upstream).sum(), (x, conv.weight, conv.bias))
    for got, want in zip(grads, expected, strict=False):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_eager_output_and_gradient_keep_the_input_layout(layout: torch.memory_format) -> None:
    torch.manual_seed(5)
    x = torch.randn(2, 3, 8, 12).contiguous(memory_format=layout).requires_grad_(True)
    for conv in (UpsampleConv2d(3, 4), SpaceToDepthConv2d(3, 2, 9)):
        out = conv(x)
        out.sum().backward()
        assert out.is_contiguous(memory_format=layout)
        assert x.grad.is_contiguous(memory_format=layout)
        x.grad = None


def test_space_to_depth_conv_names_the_size_it_needs() -> None:
    with pytest.raises(ValueError, match="multiples of 4"):
        SpaceToDepthConv2d(2, 3, 9)(torch.randn(1, 2, 8, 10))


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_compiled_and_traced_forms_equal_the_plain_layers(layout: torch.memory_format) -> None:
    # torch.compile (forward and backward), torch.jit.trace and ONNX export take the graph-friendly interleave.
    torch.manual_seed(4)
    up, last = UpsampleConv2d(3, 4), SpaceToDepthConv2d(4, 3, 9)
    both = torch.nn.Sequential(up, last)
    x = torch.randn(2, 3, 4, 6).contiguous(memory_format=layout).requires_grad_(True)
    upstream = torch.randn(2, 3, 8, 12)
    expected = plain_padded_conv(plain_upsample_conv(x, up), last)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (x, up.weight, last.weight))
    compiled = torch.compile(both, fullgraph=True)(x)
    compiled_grads = torch.autograd.grad((compiled * upstream).sum(), (x, up.weight, last.weight))
    with torch.no_grad():
        traced = torch.jit.trace(both, x.detach())(x.detach())
    torch.testing.assert_close(compiled, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(traced, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(compiled_grads, expected_grads, strict=False):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
