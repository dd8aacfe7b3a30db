"""The scale-free quality measures against hand computations and known images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nst_fast.quality import (
    luminance,
    mesh_index,
    periodic_peaks,
    psnr,
    relative_content_error,
    relative_style_error,
)


def _gram_loop(a: np.ndarray) -> np.ndarray:
    """``G[k, k'] = sum_ij a[k, i, j] a[k', i, j] / (2 H W C)`` by explicit loops (one image ``[C, H, W]``)."""
    channels, height, width = a.shape
    gram = np.zeros((channels, channels))
    for k in range(channels):
        for other in range(channels):
            for i in range(height):
                for j in range(width):
                    gram[k, other] += a[k, i, j] * a[other, i, j]
    return gram / (2 * channels * height * width)


def test_relative_style_error_matches_a_loop_over_layers() -> None:
    generator = torch.Generator().manual_seed(0)
    style = {"a": torch.rand(1, 3, 5, 4, generator=generator), "b": torch.rand(1, 2, 3, 3, generator=generator)}
    generated = {"a": torch.rand(2, 3, 4, 6, generator=generator), "b": torch.rand(2, 2, 2, 3, generator=generator)}
    expected = []
    for sample in range(2):
        per_layer = []
        for layer in ("a", "b"):
            target = _gram_loop(style[layer][0].double().numpy())
            gram = _gram_loop(generated[layer][sample].double().numpy())
            per_layer.append(((target - gram) ** 2).sum() / (target**2).sum())
        expected.append(sum(per_layer) / 2)
    result = relative_style_error(style, generated, ["a", "b"])
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6)


def test_relative_style_error_is_zero_for_the_style_and_scale_free() -> None:
    features = {"a": torch.rand(1, 4, 6, 6)}
    assert float(relative_style_error(features, features, ["a"])) == pytest.approx(0.0, abs=1e-12)
    other = {"a": torch.rand(1, 4, 6, 6)}
    scaled_style, scaled_other = {"a": 30 * features["a"]}, {"a": 30 * other["a"]}
    assert float(relative_style_error(scaled_style, scaled_other, ["a"])) == pytest.approx(
        float(relative_style_error(features, other, ["a"])), rel=1e-5
    )


def test_relative_content_error_against_numpy() -> None:
    photo, generated = torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5)
    expected = [
        ((generated[i].numpy() - photo[i].numpy()) ** 2).mean() / (photo[i].numpy() ** 2).mean() for i in range(2)
    ]
    np.testing.assert_allclose(relative_content_error(photo, generated).numpy(), expected, rtol=1e-6)
    assert float(relative_content_error(photo, photo)[0]) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        relative_content_error(photo, generated[:, :, :3])


def _smooth_photo(height: int = 96, width: int = 128, seed: int = 0) -> torch.Tensor:
    """A smooth random image (noise blurred by an area down/upsampling), like a photo's falling spectrum."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=generator)
    fine = 0.02 * torch.rand(1, 3, height, width, generator=generator)
    return (
        torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False) + fine
    ).clamp(0, 1)


def test_mesh_index_is_one_for_the_photo_and_rises_with_a_period_four_mesh() -> None:
    photo = _smooth_photo()
    assert float(mesh_index(photo, photo)) == pytest.approx(1.0)
    rows = torch.arange(photo.shape[-2]).view(-1, 1)
    cols = torch.arange(photo.shape[-1]).view(1, -1)
    mesh = 0.05 * torch.cos(math.pi / 2 * (rows + cols)).expand(1, 3, -1, -1)  # diagonal, period 4 along both axes
    assert float(mesh_index((photo + mesh).clamp(0, 1), photo)) > 5.0
    checker = 0.05 * torch.cos(math.pi * cols).expand(1, 3, photo.shape[-2], -1)  # period 2 along rows
    assert float(mesh_index((photo + checker).clamp(0, 1), photo)) > 5.0


def test_mesh_index_ignores_texture_at_other_periods() -> None:
    photo = _smooth_photo(width=256, seed=1)  # period 3 lies outside the neighbourhoods of periods 2 and 4 here
    cols = torch.arange(photo.shape[-1]).view(1, -1)
    texture = 0.05 * torch.cos(2 * math.pi * cols / 3).expand(1, 3, photo.shape[-2], -1)  # period 3
    assert float(mesh_index((photo + texture).clamp(0, 1), photo)) == pytest.approx(1.0, abs=0.1)


def test_periodic_peaks_refuses_images_too_small_to_measure() -> None:
    with pytest.raises(ValueError, match="too short"):
        periodic_peaks(torch.rand(1, 3, 16, 16))


def test_luminance_and_psnr_known_values() -> None:
    grey = torch.full((1, 3, 2, 2), 0.5)
    assert torch.allclose(luminance(grey), torch.full((1, 2, 2), 0.5, dtype=torch.float64))
    assert float(psnr(grey, grey + 0.1)) == pytest.approx(20.0)
    assert math.isinf(float(psnr(grey, grey)))
