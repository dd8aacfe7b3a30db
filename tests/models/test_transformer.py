import pytest
import torch
from helpers import small_network
from torch import nn

from nst_fast.models import TransformerNet
from nst_fast.models.transformer import ConditionalInstanceNorm2d, add_conditions


@pytest.fixture(scope="module")
def net() -> TransformerNet:
    torch.manual_seed(0)
    return TransformerNet(base_channels=8, residual_blocks=2).eval()


@pytest.mark.parametrize("size", [(5, 5), (6, 7), (31, 17), (181, 243), (64, 64)])
def test_output_has_input_size_and_range(net: TransformerNet, size: tuple[int, int]) -> None:
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1


def test_crop_keeps_content_aligned(net: TransformerNet) -> None:
    # The padded region only extends the image at the bottom/right: the top-left of an odd-sized image
    # must match the same region of a run on the image that needs no padding, away from the seam.
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        full = net(x)
        cropped = net(x[:, :, :63, :63])
    # Instance norm statistics differ slightly with the size, so compare loosely, far from the border.
    assert (full[:, :, :32, :32] - cropped[:, :, :32, :32]).abs().mean() < 0.02


def test_default_architecture_matches_johnson() -> None:
    net = TransformerNet()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs[:3]] == [32, 64, 128]
    assert convs[0].kernel_size == (9, 9) and convs[-1].kernel_size == (9, 9) and convs[-1].out_channels == 3
    assert [c.stride for c in convs[1:3]] == [(2, 2), (2, 2)]
    assert len(net.residuals) == 5
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in net.modules()) == 2 + 1 + 10 + 2 + 0 + 0
    assert sum(p.numel() for p in net.parameters()) == 1_679_235
    assert net.config == {"base_channels": 32, "residual_blocks": 5}


def test_too_small_input_is_a_clear_error(net: TransformerNet) -> None:
    with pytest.raises(ValueError, match="H, W >= 5"):
        net(torch.rand(1, 3, 4, 40))


def test_gradients_flow(net: TransformerNet) -> None:
    x = torch.rand(1, 3, 21, 19)
    net.train()
    net(x).mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    net.eval()


def test_channels_last_norm_matches_instance_norm() -> None:
    torch.manual_seed(2)
    from nst_fast.models.transformer import InstanceNorm2d

    norm = InstanceNorm2d(6, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 9, 7) * 3 + 1
    expected = torch.nn.functional.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
    out = norm(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm(x), expected)


def test_channels_last_network_matches_contiguous(net: TransformerNet) -> None:
    x = torch.rand(1, 3, 30, 26)
    with torch.no_grad():
        contiguous = net(x)
        channels_last = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    net.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(channels_last, contiguous, rtol=1e-4, atol=1e-4)


def test_checkpoints_with_the_plain_decoder_layout_load(net: TransformerNet) -> None:
    # Before the sub-pixel layers the decoder was [Upsample, ReflectionPad2d, Conv2d, norm, ReLU] x 2,
    # ReflectionPad2d(4), Conv2d: the same parameters under other indices.
    old_names = {
        "decoder.0.0.": "decoder.0.2.",
        "decoder.0.1.": "decoder.0.3.",
        "decoder.1.0.": "decoder.1.2.",
        "decoder.1.1.": "decoder.1.3.",
        "decoder.2.": "decoder.3.",
    }
    state = {}
    for key, value in net.state_dict().items():
        for new, old in old_names.items():
            if key.startswith(new):
                key = old + key[len(new) :]
                break
        state[key] = value.clone()
    assert "decoder.3.weight" in state and "decoder.0.2.weight" in state
    fresh = TransformerNet(base_channels=8, residual_blocks=2).eval()
    fresh.load_state_dict(state)
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_output_keeps_the_input_layout(net: TransformerNet, layout: torch.memory_format) -> None:
    x = torch.rand(1, 3, 24, 32).contiguous(memory_format=layout)
    with torch.no_grad():
        y = net(x)
    assert y.is_contiguous(memory_format=layout)


# --- Conditional instance normalisation -------------------------------------------------------------------------


def hand_conditional_norm(
    x: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Per image and channel, in loops: (x - mean) / sqrt(var + eps) * sum_k w_k scale_k + sum_k w_k shift_k."""
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            plane = x[b, c].double()
            mean = plane.sum() / plane.numel()
            var = ((plane - mean) ** 2).sum() / plane.numel()
            gamma = sum(float(weights[b, k]) * float(scale[k, c]) for k in range(weights.shape[1]))
            beta = sum(float(weights[b, k]) * float(shift[k, c]) for k in range(weights.shape[1]))
            out[b, c] = ((plane - mean) / torch.sqrt(var + eps) * gamma + beta).to(x.dtype)
    return out


@pytest.mark.parametrize("channels_last", [False, True])
def test_conditional_norm_matches_a_hand_computation(channels_last: bool) -> None:
    torch.manual_seed(0)
    norm = ConditionalInstanceNorm2d(5, num_conditions=3)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 5, 7, 6) * 3 + 1
    weights = torch.tensor([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = norm(x, weights)
    torch.testing.assert_close(
        got, hand_conditional_norm(x, weights, norm.weight.detach(), norm.bias.detach()), rtol=1e-5, atol=1e-5
    )
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_one_hot_condition_is_a_plain_instance_norm_with_that_row() -> None:
    torch.manual_seed(1)
    norm = ConditionalInstanceNorm2d(4, num_conditions=3)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    plain = nn.InstanceNorm2d(4, affine=True)
    with torch.no_grad():
        plain.weight.copy_(norm.weight[2])
        plain.bias.copy_(norm.bias[2])
    x = torch.randn(3, 4, 9, 8)
    torch.testing.assert_close(norm(x, torch.eye(3)[[2, 2, 2]]), plain(x))


def test_blending_mixes_the_norm_parameters() -> None:
    # The network at weights w equals a one-condition network whose norms hold sum_k w_k (scale_k, shift_k).
    network = small_network(num_conditions=3)
    weights = torch.tensor([0.5, 0.2, 0.3])
    mixed = TransformerNet(8, 1).eval()
    state = {
        key: (weights[:, None] * value).sum(0) if value.dim() == 2 and value.shape[0] == 3 else value
        for key, value in network.state_dict().items()
    }
    mixed.load_state_dict(state)
    x = torch.rand(2, 3, 21, 18)
    with torch.no_grad():
        torch.testing.assert_close(network(x, weights.expand(2, -1)), mixed(x), rtol=1e-5, atol=1e-5)


def test_each_image_of_a_batch_takes_its_own_condition() -> None:
    network = small_network(num_conditions=3)
    x = torch.rand(2, 3, 16, 20)
    rows = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.4, 0.6]])
    with torch.no_grad():
        together = network(x, rows)
        apart = torch.cat([network(x[:1], rows[:1]), network(x[1:], rows[1:])])
    torch.testing.assert_close(together, apart)


def test_single_condition_network_is_unchanged() -> None:
    network = TransformerNet(8, 1)
    assert network.config == {"base_channels": 8, "residual_blocks": 1}
    assert not any(isinstance(m, ConditionalInstanceNorm2d) for m in network.modules())
    assert all(
        v.dim() == 1 for k, v in network.state_dict().items() if k.endswith(".2.weight") and "decoder.2" not in k
    )
    with pytest.raises(ValueError, match="1 condition"):
        network(torch.rand(1, 3, 8, 8), torch.ones(1, 1))


def test_conditional_network_needs_weights_of_the_right_shape() -> None:
    network = small_network(num_conditions=3)
    assert network.config == {"base_channels": 8, "residual_blocks": 1, "num_conditions": 3}
    with pytest.raises(ValueError, match=r"pass condition weights \[B, 3\]"):
        network(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"condition weights must be \[B, 3\]"):
        network(torch.rand(1, 3, 8, 8), torch.ones(1, 2))


def test_add_conditions_keeps_the_old_ones_and_starts_new_ones_at_the_styles_mean() -> None:
    network = small_network(num_conditions=3)  # two styles and the identity
    extended = add_conditions(network, count=2, position=2)
    assert extended.num_conditions == 5
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        for old, new in ((0, 0), (1, 1), (2, 4)):
            torch.testing.assert_close(extended(x, torch.eye(5)[[new]]), network(x, torch.eye(3)[[old]]))
        mean_of_styles = network(x, torch.tensor([[0.5, 0.5, 0.0]]))
        torch.testing.assert_close(extended(x, torch.eye(5)[[2]]), mean_of_styles)
        torch.testing.assert_close(extended(x, torch.eye(5)[[3]]), mean_of_styles)
    single = add_conditions(TransformerNet(8, 1).eval(), count=1, position=1)
    assert single.num_conditions == 2


def test_separable_layer_is_the_full_conv_with_the_composed_kernel() -> None:
    # A depthwise 3x3 conv then a pointwise 1x1 conv is one 3x3 conv whose kernel is
    # full[o, i] = pointwise[o, i] * depthwise[i]: compute that conv directly and compare.
    from nst_fast.models.transformer import SeparableConvNormAct

    torch.manual_seed(0)
    layer = SeparableConvNormAct(6, relu=False).eval()
    _, depthwise, pointwise, norm = layer
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    full = pointwise.weight[:, :, 0, 0, None, None] * depthwise.weight[:, 0][None]
    x = torch.rand(2, 6, 11, 9)
    with torch.no_grad():
        conv = torch.nn.functional.conv2d(
            torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"), full, pointwise.bias
        )
        want = torch.nn.functional.instance_norm(conv, weight=norm.weight, bias=norm.bias, eps=norm.eps)
        got = layer(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert depthwise.bias is None and depthwise.groups == 6


def test_light_network_needs_a_quarter_of_the_flops_or_less() -> None:
    from helpers import compose_train_config
    from hydra.utils import instantiate
    from torch.utils.flop_counter import FlopCounterMode

    light = instantiate(compose_train_config("model=light").model).eval()
    assert light.config == {"base_channels": 16, "residual_blocks": 5, "separable": True}
    x = torch.rand(1, 3, 128, 128)

    def flops(network: TransformerNet) -> int:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            network(x)
        return counter.get_total_flops()

    assert flops(TransformerNet().eval()) >= 4 * flops(light)
    assert sum(p.numel() for p in light.parameters()) * 10 < 1_679_235


def test_light_network_takes_conditions_and_gradients_reach_every_weight() -> None:
    torch.manual_seed(0)
    network = TransformerNet(8, 2, num_conditions=3, separable=True)
    x = torch.rand(2, 3, 23, 18)
    y = network(x, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]))
    assert y.shape == x.shape
    y.mean().backward()
    assert all(p.grad is not None for p in network.parameters())
    assert network.config == {"base_channels": 8, "residual_blocks": 2, "separable": True, "num_conditions": 3}
    extended = add_conditions(network, 1, 2)
    assert extended.config["separable"] and extended.num_conditions == 4


def test_residual_output_paints_on_the_photo_and_records_itself() -> None:
    from nst_fast.models.transformer import LOGIT_EPS, logit

    torch.manual_seed(0)
    network = TransformerNet(8, 1, num_conditions=2, residual_output=True).eval()
    assert network.config == {"base_channels": 8, "residual_blocks": 1, "residual_output": True, "num_conditions": 2}
    assert network.decoder[-1].bias is None  # the photo's own logit takes the place of a bias
    x = torch.rand(2, 3, 21, 30)
    with torch.no_grad():
        norm = network.output_norm
        norm.weight.zero_()
        norm.bias.zero_()  # zero scale and shift in the last norm: d = 0, the output is sigmoid(gain * logit(x))
        assert torch.equal(network(x, torch.tensor([[1.0, 0.0], [0.0, 1.0]])), torch.full_like(x, 0.5))  # gains 0
        network.photo_gain.copy_(torch.tensor([0.3, 1.0]))
        y = network(x, torch.tensor([[0.0, 1.0], [0.25, 0.75]]))
    clamped = x.clamp(LOGIT_EPS, 1 - LOGIT_EPS)
    assert torch.allclose(y[0], clamped[0], atol=1e-6)  # gain 1: the photo itself
    mixed_gain = 0.25 * 0.3 + 0.75 * 1.0  # the gains mix like the norms' parameters
    expected = 1.0 / (1.0 + ((1.0 - clamped[1]) / clamped[1]) ** mixed_gain)
    assert torch.allclose(y[1], expected, atol=1e-6)
    assert torch.allclose(torch.sigmoid(logit(clamped)), clamped, atol=1e-6)
    plain = TransformerNet(8, 1)
    assert "residual_output" not in plain.config and plain.decoder[-1].bias is not None


def test_residual_output_checkpoints_before_the_learnt_gain_load_with_the_whole_photo() -> None:
    torch.manual_seed(0)
    network = TransformerNet(8, 1, num_conditions=3, residual_output=True)
    state = {key: value for key, value in network.state_dict().items() if key != "photo_gain"}
    rebuilt = TransformerNet(**network.config)
    rebuilt.load_state_dict(state)
    assert rebuilt.photo_gain.tolist() == [1.0, 1.0, 1.0]  # the fixed gain those checkpoints were trained with


def test_added_conditions_start_from_the_styles_photo_gain() -> None:
    network = TransformerNet(8, 1, num_conditions=3, residual_output=True)
    with torch.no_grad():
        network.photo_gain.copy_(torch.tensor([0.2, 0.4, 1.0]))  # two styles and the identity
    extended = add_conditions(network, 1, 2)
    assert extended.photo_gain.tolist() == pytest.approx([0.2, 0.4, 0.3, 1.0])


def test_bilinear_upsampling_is_recorded_and_keeps_the_size() -> None:
    torch.manual_seed(0)
    network = TransformerNet(8, 1, upsample="bilinear").eval()
    assert network.config == {"base_channels": 8, "residual_blocks": 1, "upsample": "bilinear"}
    assert any(isinstance(layer, nn.Upsample) and layer.mode == "bilinear" for layer in network.decoder.modules())
    with torch.no_grad():
        assert network(torch.rand(2, 3, 23, 30)).shape == (2, 3, 23, 30)
    rebuilt = TransformerNet(**network.config)
    rebuilt.load_state_dict(network.state_dict())  # the recorded config rebuilds the same parameters
    with pytest.raises(Exception, match="model.upsample='cubic' is unknown"):
        TransformerNet(8, 1, upsample="cubic")


def _tiled_pattern(pattern: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The pattern repeated with NumPy over ``[top, top + height) x [left, left + width)`` (an independent tiling)."""
    import numpy as np

    period = pattern.shape[-1]
    reps = (1, 1, (top + height) // period + 1, (left + width) // period + 1)
    return torch.from_numpy(np.tile(pattern.numpy(), reps)[:, :, top : top + height, left : left + width])


def test_input_noise_adds_the_recorded_pattern_repeated_over_the_image() -> None:
    from nst_fast.models.transformer import NOISE_PERIOD

    torch.manual_seed(0)
    noisy = TransformerNet(8, 1, input_noise=0.1).eval()
    assert noisy.config == {"base_channels": 8, "residual_blocks": 1, "input_noise": 0.1}
    pattern = noisy.state_dict()["noise_pattern"]  # stored in checkpoints: the same pattern whatever torch draws
    assert pattern.shape == (1, 3, NOISE_PERIOD, NOISE_PERIOD)
    assert abs(pattern.mean().item()) < 0.01 and abs(pattern.std().item() - 1.0) < 0.01
    assert torch.equal(TransformerNet(8, 1, input_noise=0.3).noise_pattern, pattern), "one fixed pattern"
    plain = TransformerNet(8, 1).eval()
    assert plain.load_state_dict(noisy.state_dict(), strict=False).unexpected_keys == ["noise_pattern"]
    x = torch.rand(1, 3, 601, 533)  # taller and wider than the period; padded to 604 x 536, the noise after that
    padded = torch.nn.functional.pad(x, (0, 3, 0, 3), mode="reflect")
    with torch.no_grad():
        want = plain(padded + 0.1 * _tiled_pattern(pattern, 0, 0, 604, 536))[:, :, :601, :533]
        assert torch.allclose(noisy(x), want, atol=1e-6)
        noisy.noise_offset.copy_(torch.tensor([300, 470]))  # where a tile starts
        want = plain(padded + 0.1 * _tiled_pattern(pattern, 300, 470, 604, 536))[:, :, :601, :533]
        assert torch.allclose(noisy(x), want, atol=1e-6)
    assert "input_noise" not in plain.config and not hasattr(plain, "noise_pattern")


def test_input_noise_starts_at_a_random_place_in_training() -> None:
    network = TransformerNet(8, 1, input_noise=0.06).train()
    period = network.noise_pattern.shape[-1]
    torch.manual_seed(3)
    first, second = network._noise(40, 36), network._noise(40, 36)
    assert not torch.equal(first, second)
    for noise in (first, second):  # each is a window of the repeated pattern
        top, left = torch.nonzero(network.noise_pattern[0, 0] == noise[0, 0, 0, 0])[0].tolist()
        assert torch.equal(noise, _tiled_pattern(network.noise_pattern, top, left, 40, 36)), (top, left, period)


def test_input_noise_leaves_the_exact_identity_the_photo() -> None:
    from nst_fast.models.transformer import LOGIT_EPS

    torch.manual_seed(0)
    network = TransformerNet(8, 1, num_conditions=2, residual_output=True, input_noise=0.5).eval()
    with torch.no_grad():
        network.output_norm.weight[1].zero_()
        network.output_norm.bias[1].zero_()
        network.photo_gain.copy_(torch.tensor([0.0, 1.0]))
        x = torch.rand(1, 3, 21, 30)
        y = network(x, torch.tensor([[0.0, 1.0]]))
    assert torch.allclose(y, x.clamp(LOGIT_EPS, 1 - LOGIT_EPS), atol=1e-6), (
        "the noise reaches the network, not the photo"
    )


def test_each_data_parallel_rank_reads_the_pattern_at_its_own_places() -> None:
    from nst_fast.models.transformer import NOISE_STREAM_SHIFT

    network = TransformerNet(8, 1, input_noise=0.06).train()
    windows = []
    for rank in (0, 1):
        network.noise_stream = rank
        torch.manual_seed(5)  # ranks are seeded alike
        windows.append(network._noise(24, 20))
    big = _tiled_pattern(network.noise_pattern, 0, 0, 1100, 1100)
    top, left = torch.nonzero(network.noise_pattern[0, 0] == windows[0][0, 0, 0, 0])[0].tolist()
    row, column = top + NOISE_STREAM_SHIFT[0], left + NOISE_STREAM_SHIFT[1]
    assert torch.equal(windows[1], big[:, :, row : row + 24, column : column + 20])


def test_feature_noise_adds_the_pattern_to_each_upsampled_stage_with_learnt_scales() -> None:
    torch.manual_seed(0)
    network = TransformerNet(8, 1, feature_noise=True).eval()
    assert network.config == {"base_channels": 8, "residual_blocks": 1, "feature_noise": True}
    plain = TransformerNet(8, 1).eval()
    plain.load_state_dict(network.state_dict(), strict=False)
    x = torch.rand(1, 3, 42, 57)
    with torch.no_grad():
        assert torch.equal(network(x), plain(x)), "the scales start at 0: the plain network"
        network.noise_scale_half.uniform_(-1, 1)
        network.noise_scale_full.uniform_(-1, 1)
        network.noise_offset.copy_(torch.tensor([200, 120]))  # a tile's place; at half resolution (100, 60)
        pattern = network.noise_pattern
        padded = torch.nn.functional.pad(x, (0, 3, 0, 2), mode="reflect")  # to 44 x 60
        half = plain.decoder[0](plain.residuals(plain.encoder(padded)))
        half = half + network.noise_scale_half[None, :, None, None] * _tiled_pattern(pattern, 100, 60, 22, 30)[:, 1:2]
        full = plain.decoder[1](half)
        full = full + network.noise_scale_full[None, :, None, None] * _tiled_pattern(pattern, 200, 120, 44, 60)[:, 0:1]
        want = torch.sigmoid(plain.decoder[2](full))[:, :, :42, :57]
        assert torch.allclose(network(x), want, atol=1e-6)
        network.train()
        assert not torch.equal(network(x), network(x)), "in training the pattern moves"


def test_feature_noise_with_conditions_mixes_a_full_resolution_scale_per_condition() -> None:
    """Several conditions: the full-resolution scale is a table ``[K, C]`` mixed by the condition weights (a blend
    adds the blend of the rows); a saved single row ``[C]`` loads into every row (the network it was)."""
    torch.manual_seed(0)
    network = TransformerNet(8, 1, num_conditions=3, feature_noise=True).eval()
    assert network.noise_scale_full.shape == (3, 8) and network.noise_scale_half.shape == (16,)
    x = torch.rand(1, 3, 40, 48)
    blend = torch.tensor([[0.25, 0.75, 0.0]])
    with torch.no_grad():
        network.noise_scale_full.uniform_(-1, 1)
        rows = network.noise_scale_full.clone()
        mixed = network(x, blend)
        network.noise_scale_full.copy_((0.25 * rows[0] + 0.75 * rows[1]).expand(3, -1))
        assert torch.allclose(network(x, blend), mixed, atol=1e-6), "the blend of the rows"
        network.noise_scale_full.copy_(rows)
        network.noise_scale_full[2] += 5.0
        assert torch.equal(network(x, blend), mixed), "a row the blend leaves out does not count"
    shared = {**network.state_dict(), "noise_scale_full": rows[1]}
    loaded = TransformerNet(8, 1, num_conditions=3, feature_noise=True)
    loaded.load_state_dict(shared)
    assert torch.equal(loaded.noise_scale_full, rows[1].expand(3, -1))


@pytest.mark.parametrize("sigma", [-0.01, 1.5])
def test_input_noise_out_of_range_is_refused(sigma: float) -> None:
    with pytest.raises(Exception, match=f"model.input_noise={sigma} is the noise's standard deviation"):
        TransformerNet(8, 1, input_noise=sigma)


def test_added_conditions_keep_the_noise_pattern() -> None:
    network = TransformerNet(8, 1, num_conditions=2, input_noise=0.06)
    with torch.no_grad():
        network.noise_pattern.mul_(2.0)  # as a checkpoint's pattern would be loaded
    extended = add_conditions(network, 1, 1)
    assert extended.config["input_noise"] == 0.06 and extended.num_conditions == 3
    assert torch.equal(extended.noise_pattern, network.noise_pattern)
