"""Scale-free quality measures of stylised images, for comparing recipes, networks and exports on held-out photos.

Plain torch on activations and images (no Lightning, no Hydra). The training objective's totals depend on the
loss network's scale and on the weights being compared, so they cannot rank recipes; these measures can:

* ``relative_style_error``: per layer, ``||G_S - G_G||^2 / ||G_S||^2`` with each Gram scaled by its own
  ``1 / (2 n_H n_W n_C)`` as in the reference cost (``nst_fast.losses.scaled_gram``), averaged over the layers.
  0 is the painting's statistics exactly; a photo is typically 0.6-1.
* ``relative_content_error``: ``mean((F(y) - F(x))^2) / mean(F(x)^2)`` at one layer: 0 is the photo's features
  exactly; 1 is as far from them as they are from zero.
* ``mesh_index``: how much more periodic texture at periods of 2 and 4 pixels (the strides of the network's
  two upsampling stages and of the loss network's first two poolings) the output has than its photo. For each
  image, the luminance's power spectrum along rows and along columns (Hann window, averaged over the other
  axis) is read at frequencies 1/2 and 1/4 cycles per pixel; each peak is divided by the median of its
  neighbouring frequencies (``MESH_NEIGHBOURS`` bins each side, the window's main lobe left out). The index
  is the mean of the four output/photo ratios: 1 is no more periodic texture than the photo, a visible mesh
  is about 1.5 or more.
* ``psnr``: of strength 0 against the photo, and of exports against their float model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from nst_fast.losses import scaled_gram

#: Layers of the relative style error (Johnson et al.'s style layers of VGG-16).
STYLE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
#: Layer of the relative content error.
CONTENT_LAYER = "relu2_2"
#: Periods in pixels whose spectral peaks make the mesh index.
MESH_PERIODS: tuple[int, ...] = (2, 4)
#: Neighbouring frequency bins on each side of a peak whose median is its reference level.
MESH_NEIGHBOURS = 12
#: Bins on each side of a peak that belong to it (the Hann window's main lobe), left out of the reference.
MESH_LOBE = 2


def relative_style_error(
    style_features: Mapping[str, Tensor], generated_features: Mapping[str, Tensor], layers: Iterable[str] = STYLE_LAYERS
) -> Tensor:
    """Mean over ``layers`` of ``||G_S - G_G||^2 / ||G_S||^2``, one value per generated image ``[B]``.

    ``style_features``: layer -> activations of the style image ``[1, C, H_s, W_s]``; ``generated_features``:
    layer -> activations ``[B, C, H, W]`` (sizes may differ from the style's: each Gram is scaled by its own size).
    """
    errors = []
    for layer in layers:
        style_gram = scaled_gram(style_features[layer])
        generated_gram = scaled_gram(generated_features[layer])
        difference = (style_gram - generated_gram).double().square().sum(dim=(1, 2))
        errors.append(difference / style_gram.double().square().sum(dim=(1, 2)))
    if not errors:
        raise ValueError("relative_style_error needs at least one layer")
    return torch.stack(errors).mean(dim=0)


def relative_content_error(photo_features: Tensor, generated_features: Tensor) -> Tensor:
    """``mean((F(y) - F(x))^2) / mean(F(x)^2)`` over ``C, H, W``, one value per image ``[B]``; both ``[B, C, H, W]``."""
    if photo_features.shape != generated_features.shape:
        raise ValueError(
            f"photo features {tuple(photo_features.shape)} and generated features "
            f"{tuple(generated_features.shape)} differ in shape"
        )
    photo, generated = photo_features.double(), generated_features.double()
    return (generated - photo).square().mean(dim=(1, 2, 3)) / photo.square().mean(dim=(1, 2, 3))


def luminance(images: Tensor) -> Tensor:
    """BT.601 luma of RGB images ``[B, 3, H, W]`` in [0, 1]: ``[B, H, W]`` (float64)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images [B, 3, H, W], got shape {tuple(images.shape)}")
    red, green, blue = images.double().unbind(dim=1)
    return 0.299 * red + 0.587 * green + 0.114 * blue


def _axis_spectrum(luma: Tensor, dim: int) -> Tensor:
    """Power spectrum along ``dim`` (2: along rows, 1: along columns) of ``[B, H, W]``, averaged over the other
    spatial axis: ``[B, n // 2 + 1]``, bin ``k`` at ``k / n`` cycles per pixel."""
    length = luma.shape[dim]
    window = torch.hann_window(length, periodic=False, dtype=luma.dtype, device=luma.device)
    shape = [1, 1, 1]
    shape[dim] = length
    centred = luma - luma.mean(dim=dim, keepdim=True)
    power = torch.fft.rfft(centred * window.view(shape), dim=dim).abs().square()
    other = 1 if dim == 2 else 2
    return power.mean(dim=other)


def periodic_peaks(
    images: Tensor, periods: Sequence[int] = MESH_PERIODS, neighbours: int = MESH_NEIGHBOURS, lobe: int = MESH_LOBE
) -> Tensor:
    """Spectral peak over its surroundings at each period, along rows and along columns: ``[B, 2, P]``.

    ``images``: RGB ``[B, 3, H, W]`` in [0, 1], ``H, W >= 4 * max(periods) * ...`` (at least ``2 (neighbours + lobe)``
    bins below each peak). For period ``p`` the peak is the largest power within ``lobe`` bins of ``n / p``;
    its reference is the median power of the bins from ``lobe + 1`` to ``lobe + neighbours`` away on either side
    (one side at the Nyquist frequency, period 2).
    """
    luma = luminance(images)
    result = torch.empty(images.shape[0], 2, len(periods), dtype=luma.dtype, device=luma.device)
    for axis, dim in enumerate((2, 1)):
        spectrum = _axis_spectrum(luma, dim)
        length, top = luma.shape[dim], spectrum.shape[1] - 1
        for index, period in enumerate(periods):
            centre = round(length / period)
            if centre - lobe - neighbours < 1:
                raise ValueError(
                    f"a side of {length} px is too short to measure period {period} with {neighbours} neighbouring bins"
                )
            peak = spectrum[:, max(centre - lobe, 1) : min(centre + lobe, top) + 1].amax(dim=1)
            around = [
                k
                for offset in range(lobe + 1, lobe + neighbours + 1)
                for k in (centre - offset, centre + offset)
                if 1 <= k <= top
            ]
            result[:, axis, index] = peak / spectrum[:, around].median(dim=1).values.clamp_min(1e-30)
    return result


def mesh_index(output: Tensor, photo: Tensor) -> Tensor:
    """Periodic texture at periods 2 and 4 of ``output`` relative to ``photo`` (module docstring), ``[B]``.

    Both ``[B, 3, H, W]`` in [0, 1], same size. 1: no more mesh than the photo; larger: a mesh."""
    if output.shape != photo.shape:
        raise ValueError(f"output {tuple(output.shape)} and photo {tuple(photo.shape)} differ in shape")
    return (periodic_peaks(output) / periodic_peaks(photo)).flatten(1).mean(dim=1)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB of images in [0, 1], one value per image ``[B]`` (inf when equal)."""
    mse = (a.double() - b.double()).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse)
