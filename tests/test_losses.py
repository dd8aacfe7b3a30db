"""Costs checked against hand-written loops over i, j, k, k' and against autograd in float64."""

import itertools

import pytest
import torch

from nst_fast.losses import (
    StyleLoss,
    content_cost,
    gram_matrix,
    perturb,
    scaled_gram,
    stability_cost,
    style_cost,
    style_layer_cost,
    style_layer_cost_from_gram,
    total_variation,
    translate,
)


def loop_gram(a: torch.Tensor) -> torch.Tensor:
    """G[k, k'] = sum_i sum_j a[i, j, k] a[i, j, k'] for one sample a: [C, H, W], by explicit loops."""
    channels, height, width = a.shape
    gram = torch.zeros(channels, channels, dtype=torch.float64)
    for k, k2 in itertools.product(range(channels), repeat=2):
        total = 0.0
        for i in range(height):
            for j in range(width):
                total += float(a[k, i, j]) * float(a[k2, i, j])
        gram[k, k2] = total
    return gram


def loop_layer_cost(a_s: torch.Tensor, a_g: torch.Tensor) -> float:
    """J_style[l] for single samples, each Gram scaled by its own 1/(2 n_H n_W n_C)."""
    c_s, h_s, w_s = a_s.shape
    c_g, h_g, w_g = a_g.shape
    g_s = loop_gram(a_s) / (2 * c_s * h_s * w_s)
    g_g = loop_gram(a_g) / (2 * c_g * h_g * w_g)
    total = 0.0
    for k, k2 in itertools.product(range(c_s), repeat=2):
        total += (float(g_s[k, k2]) - float(g_g[k, k2])) ** 2
    return total


def test_gram_matrix_matches_loops() -> None:
    a = torch.randn(2, 3, 4, 5)
    gram = gram_matrix(a)
    assert gram.shape == (2, 3, 3)
    for b in range(2):
        torch.testing.assert_close(gram[b].double(), loop_gram(a[b]), rtol=1e-5, atol=1e-5)


def test_gram_matrix_channels_last_matches_loops_and_keeps_layout_in_gradient() -> None:
    torch.manual_seed(5)
    a = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    gram = gram_matrix(a)
    for b in range(2):
        torch.testing.assert_close(gram[b], loop_gram(a[b]))
    a.requires_grad_(True)
    assert torch.autograd.gradcheck(gram_matrix, (a,))
    weights = torch.randn(2, 3, 3, dtype=torch.float64)
    (gram_matrix(a) * weights).sum().backward()
    # d/da sum_kk' w_kk' G_kk' = (w + w^T) a, written out per channel.
    expected = torch.einsum("bkl,blhw->bkhw", weights + weights.transpose(1, 2), a.detach())
    torch.testing.assert_close(a.grad, expected)
    assert a.grad.is_contiguous(memory_format=torch.channels_last)


def test_gram_is_unnormalised_and_not_centred() -> None:
    a = torch.ones(1, 2, 3, 3)
    assert torch.equal(gram_matrix(a), torch.full((1, 2, 2), 9.0))


def test_style_layer_cost_matches_formula_same_size() -> None:
    torch.manual_seed(0)
    a_s, a_g = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    expected = loop_layer_cost(a_s[0], a_g[0])
    # Written exactly as the reference formula: 1/(2 nH nW nC)^2 * sum (G_S - G_G)^2.
    formula = float(((gram_matrix(a_s) - gram_matrix(a_g)) ** 2).sum()) / (2 * 4 * 4 * 3) ** 2
    assert style_layer_cost(a_s, a_g).item() == pytest.approx(expected, rel=1e-5)
    assert formula == pytest.approx(expected, rel=1e-5)


def test_style_layer_cost_different_sizes_and_broadcast() -> None:
    torch.manual_seed(1)
    a_s = torch.rand(1, 3, 6, 5)
    a_g = torch.rand(3, 3, 4, 4)
    cost = style_layer_cost(a_s, a_g)
    assert cost.shape == (3,)
    for b in range(3):
        assert cost[b].item() == pytest.approx(loop_layer_cost(a_s[0], a_g[b]), rel=1e-5)


def test_precomputed_gram_variant_equals_direct() -> None:
    a_s, a_g = torch.rand(1, 4, 8, 8), torch.rand(2, 4, 5, 7)
    torch.testing.assert_close(style_layer_cost_from_gram(scaled_gram(a_s), a_g), style_layer_cost(a_s, a_g))


def test_identical_activations_cost_zero() -> None:
    a = torch.rand(2, 4, 6, 6)
    assert torch.all(style_layer_cost(a, a) == 0)
    assert torch.all(content_cost(a, a) == 0)


def test_named_normalisations_relate_to_reference() -> None:
    torch.manual_seed(2)
    a_s, a_g = torch.rand(1, 8, 6, 6), torch.rand(2, 8, 6, 6)
    reference = style_layer_cost(a_s, a_g)
    # The common PyTorch example: Gram / (C H W), then MSE over the C*C entries.
    g_s = gram_matrix(a_s) / (8 * 6 * 6)
    g_g = gram_matrix(a_g) / (8 * 6 * 6)
    example = ((g_g - g_s) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(style_layer_cost(a_s, a_g, "mean"), example)
    torch.testing.assert_close(example, reference * 4 / 8**2)
    energy = style_layer_cost(a_s, a_g, "energy")
    torch.testing.assert_close(energy, reference / (scaled_gram(a_s) ** 2).sum())


def test_energy_normalisation_is_scale_invariant() -> None:
    a_s, a_g = torch.rand(1, 4, 5, 5), torch.rand(2, 4, 5, 5)
    torch.testing.assert_close(style_layer_cost(a_s, a_g, "energy"), style_layer_cost(30 * a_s, 30 * a_g, "energy"))
    torch.testing.assert_close(
        style_layer_cost(30 * a_s, 30 * a_g), style_layer_cost(a_s, a_g) * 30**4, rtol=1e-4, atol=0
    )


def test_unknown_normalisation_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown style normalisation 'gatys'"):
        style_layer_cost(torch.rand(1, 2, 3, 3), torch.rand(1, 2, 3, 3), "gatys")  # type: ignore[arg-type]


def test_style_cost_weights_layers() -> None:
    torch.manual_seed(3)
    style = {"a": torch.rand(1, 2, 4, 4), "b": torch.rand(1, 3, 2, 2)}
    generated = {"a": torch.rand(2, 2, 4, 4), "b": torch.rand(2, 3, 2, 2)}
    grams = {name: scaled_gram(value) for name, value in style.items()}
    total, per_layer = style_cost(grams, generated, {"a": 2.0, "b": 0.5})
    expected = 2.0 * style_layer_cost(style["a"], generated["a"]) + 0.5 * style_layer_cost(style["b"], generated["b"])
    torch.testing.assert_close(total, expected)
    assert set(per_layer) == {"a", "b"}
    with pytest.raises(KeyError, match="style layer 'c' missing"):
        style_cost(grams, generated, {"c": 1.0})


def test_style_loss_module_keeps_grams_as_buffers() -> None:
    style = {"relu1_2": torch.rand(1, 2, 4, 4)}
    module = StyleLoss(style, {"relu1_2": 1.0})
    assert "gram_relu1_2" in dict(module.named_buffers())
    generated = {"relu1_2": torch.rand(3, 2, 4, 4)}
    total, _ = module(generated)
    torch.testing.assert_close(total, style_layer_cost(style["relu1_2"], generated["relu1_2"]))


def test_content_cost_is_per_sample_mean_square() -> None:
    a_c = torch.zeros(2, 2, 2, 2)
    a_g = torch.zeros(2, 2, 2, 2)
    a_g[1, 0, 0, 0] = 4.0
    torch.testing.assert_close(content_cost(a_c, a_g), torch.tensor([0.0, 16.0 / 8]))
    with pytest.raises(ValueError, match="differ in shape"):
        content_cost(a_c, torch.zeros(2, 2, 3, 2))


def test_energy_content_cost_is_relative_to_the_photos_own_energy() -> None:
    a_c = torch.zeros(2, 1, 2, 2)
    a_c[0] = 2.0  # energy mean(a_C^2) = 4
    a_c[1, 0, 0, 0] = 2.0  # energy 1: a photo with little structure
    a_g = a_c.clone()
    a_g[:, 0, 1, 1] += 1.0  # the same change to both: squared difference 1 over 4 values
    torch.testing.assert_close(content_cost(a_c, a_g), torch.tensor([0.25, 0.25]))
    torch.testing.assert_close(content_cost(a_c, a_g, "energy"), torch.tensor([0.25 / 4.0, 0.25 / 1.0]))
    # Scale-free: scaling every activation leaves it unchanged (the reference cost grows by the square).
    torch.testing.assert_close(content_cost(3 * a_c, 3 * a_g, "energy"), content_cost(a_c, a_g, "energy"))
    # A black photo has no energy: the floor keeps the cost finite.
    assert torch.isfinite(content_cost(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), "energy")).all()
    with pytest.raises(ValueError, match="unknown content normalisation 'max'"):
        content_cost(a_c, a_g, "max")  # type: ignore[arg-type]


def test_total_variation_known_image() -> None:
    constant = torch.full((1, 3, 4, 4), 0.3)
    assert total_variation(constant).item() == 0.0
    stripes = torch.zeros(1, 1, 2, 4)
    stripes[..., 1::2] = 1.0  # columns 0 1 0 1: every horizontal neighbour differs by 1, vertical ones by 0
    assert total_variation(stripes).item() == pytest.approx(1.0)


def test_gram_stays_float32_under_autocast() -> None:
    a = torch.rand(2, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gram = gram_matrix(a.bfloat16())
        cost = style_layer_cost(a[:1], a.bfloat16())
    assert gram.dtype == torch.float32 and cost.dtype == torch.float32


def test_gradients_float64() -> None:
    torch.manual_seed(4)
    a_s = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    a_c = torch.rand(2, 3, 3, 5, dtype=torch.float64)
    a_g = torch.rand(2, 3, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gram_matrix, (a_g,))
    for normalisation in ("reference", "mean", "energy"):
        assert torch.autograd.gradcheck(lambda g, n=normalisation: style_layer_cost(a_s, g, n), (a_g,))
    for normalisation in ("reference", "energy"):
        assert torch.autograd.gradcheck(lambda g, n=normalisation: content_cost(a_c, g, n), (a_g,))
    assert torch.autograd.gradcheck(total_variation, (a_g,))


def test_style_loss_with_several_styles_picks_each_samples_target() -> None:
    torch.manual_seed(3)
    layers = {"a": 1.0, "b": 0.5}
    styles = [
        {"a": torch.rand(1, 4, 6, 5), "b": torch.rand(1, 6, 3, 3)},
        {"a": torch.rand(1, 4, 9, 8), "b": torch.rand(1, 6, 4, 5)},
    ]
    generated = {"a": torch.rand(3, 4, 5, 5), "b": torch.rand(3, 6, 3, 3)}
    together = StyleLoss(styles, layers, "energy")
    cost, per_layer = together(generated, torch.tensor([1, 0, 1]))
    for sample, style in enumerate([1, 0, 1]):
        alone, alone_layers = StyleLoss(styles[style], layers, "energy")(
            {k: v[sample : sample + 1] for k, v in generated.items()}
        )
        torch.testing.assert_close(cost[sample : sample + 1], alone)
        for name in layers:
            torch.testing.assert_close(per_layer[name][sample : sample + 1], alone_layers[name])
    with pytest.raises(ValueError, match="pass style_index"):
        together(generated)


def test_translate_half_pixel_and_whole_pixel_by_hand() -> None:
    image = torch.tensor([[[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]]])  # [1, 1, 2, 3]
    moved, valid = translate(image, torch.tensor([[0.0, 0.5]]))  # output (i, j) = input at (i, j + 0.5)
    torch.testing.assert_close(moved, torch.tensor([[[[0.5, 1.5, 2.0], [3.5, 4.5, 5.0]]]]))
    torch.testing.assert_close(valid, torch.tensor([[[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]]]))
    moved, valid = translate(image, torch.tensor([[-1.0, 0.0]]))  # one row down: row 0 samples row -1
    torch.testing.assert_close(moved[0, 0, 1], image[0, 0, 0])
    torch.testing.assert_close(valid[0, 0, :, 0], torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shift must be \[B, 2\]"):
        translate(image, torch.zeros(2))


def test_stability_cost_by_hand() -> None:
    output = torch.tensor([[[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]]])
    perturbed_output = torch.tensor([[[[1.0, 1.5, 9.0], [3.5, 4.5, 9.0]]]])  # column 2 is outside the valid region
    # Panned output: [[0.5, 1.5, -], [3.5, 4.5, -]]; differences on the 4 valid pixels: 0.5, 0, 0, 0.
    cost = stability_cost(perturbed_output, output, torch.tensor([[0.0, 0.5]]))
    torch.testing.assert_close(cost, torch.tensor([0.25 / 4]))
    with pytest.raises(ValueError, match="differ in shape"):
        stability_cost(perturbed_output[..., :2], output, torch.zeros(1, 2))


def test_stability_cost_is_zero_for_a_pan_equivariant_noise_free_network() -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    mix = torch.nn.Conv2d(3, 3, 1).double()  # pointwise and linear: commutes with bilinear resampling
    perturbed, shift = perturb(images, max_shift=1.5, noise_std=0.0)
    assert shift.abs().max() <= 1.5 and (shift != shift.round()).all(), "sub-pixel shifts"
    with torch.no_grad():
        cost = stability_cost(mix(perturbed), mix(images), shift)
    assert cost.abs().max() < 1e-12
    noisy, shift = perturb(images, max_shift=1.5, noise_std=0.05)
    with torch.no_grad():
        assert (stability_cost(mix(noisy), mix(images), shift) > 1e-4).all(), "noise the network passes on costs"


def test_stability_cost_gradients_reach_both_outputs() -> None:
    torch.manual_seed(1)
    output = torch.rand(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    perturbed_output = torch.rand(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    shift = torch.tensor([[0.3, -0.7], [-1.2, 0.4]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p, o: stability_cost(p, o, shift), (perturbed_output, output))
    stability_cost(perturbed_output, output, shift).sum().backward()
    assert output.grad.abs().sum() > 0 and perturbed_output.grad.abs().sum() > 0


def test_stability_cost_channels_last_equals_contiguous() -> None:
    torch.manual_seed(2)
    output, perturbed_output = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 6, 6)
    shift = torch.tensor([[0.5, 0.25], [-0.75, 1.0]])
    last = torch.channels_last
    torch.testing.assert_close(
        stability_cost(perturbed_output.contiguous(memory_format=last), output.contiguous(memory_format=last), shift),
        stability_cost(perturbed_output, output, shift),
    )
