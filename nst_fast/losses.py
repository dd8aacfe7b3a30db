"""Style, content and total-variation costs for feed-forward style transfer.

Pure functions on tensors (no Lightning, no Hydra) plus small ``nn.Module`` wrappers.

Notation: a layer's activations ``a`` are ``[B, C, H, W]`` (``n_C = C``, ``n_H = H``, ``n_W = W``).

Reference style cost (the one this package is built around)::

    G[k, k']     = sum_i sum_j a[i, j, k] * a[i, j, k']                  (gram_matrix)
    J_style[l]   = 1 / (2 n_H n_W n_C)^2 * sum_k sum_k' (G_S - G_G)^2    (style_layer_cost)
    J_style      = sum_l lambda_l * J_style[l]                           (style_cost)
    J            = alpha * J_content + beta * J_style + tv_weight * TV (+ stability_weight * J_stab)

When the style image and the generated image differ in size, each Gram is scaled by its own
``1 / (2 n_H n_W n_C)`` before the difference (``scaled_gram``); with equal sizes this is exactly the
formula above.

Other normalisations (``StyleNormalisation``), for comparison with other implementations:

* ``"reference"``: as above.
* ``"mean"``: the common PyTorch example. Gram divided by ``C*H*W``, then the mean of the squared
  differences over the ``C*C`` entries. Since ``G/(C H W) = 2 * G/(2 C H W)``, it equals
  ``4 / C^2 * J_style[l]`` (reference), so reference weights are ``lambda_l = 4/C^2 * lambda_mean``.
* ``"energy"``: the reference cost divided by the style target's own energy
  ``sum_kk' (G_S / (2 n_H n_W n_C))^2``. Scaling every activation of the loss network by ``s`` scales the
  reference cost by ``s^4`` but leaves this one unchanged, so weights carry over between loss networks
  (e.g. torchvision's VGG and a Caffe-scale VGG) and layers start on a comparable footing.

Content normalisations (``ContentNormalisation``):

* ``"reference"``: ``J_content`` = mean over ``C, H, W`` of ``(a_G - a_C)^2`` (Johnson et al.).
* ``"energy"``: that divided by the photo's own ``mean(a_C^2)``, per sample: the relative content error of
  ``nst_fast.quality``. A photo with little structure (mist, night, sky) has small activations, so under the
  reference cost texture painted over it costs little; relative to its own energy it costs as much as on a
  busy photo.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nst_fast.layout import is_channels_last

StyleNormalisation = Literal["reference", "mean", "energy"]
STYLE_NORMALISATIONS: tuple[str, ...] = ("reference", "mean", "energy")
ContentNormalisation = Literal["reference", "energy"]
CONTENT_NORMALISATIONS: tuple[str, ...] = ("reference", "energy")
#: Floor of the photo's activation energy under ``"energy"`` content normalisation (a black photo has none).
CONTENT_ENERGY_FLOOR = 1e-6


def _check_activations(name: str, a: Tensor) -> None:
    if a.dim() != 4:
        raise ValueError(f"{name} must be [B, C, H, W] activations, got shape {tuple(a.shape)}")


def _at_least_float32(t: Tensor) -> Tensor:
    """Half-precision tensors become float32; float32 and float64 pass through (float64 for gradcheck)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class _Gram(torch.autograd.Function):
    """``G = A A^T`` for ``A = a`` as ``[B, C, H*W]``, with the symmetric backward ``dA = (dG + dG^T) A``: one
    batched matmul instead of autograd's two plus their sum. ``A`` is taken as the free view of ``a``'s layout
    (``[B, H*W, C]`` transposed for channels_last), and the gradient comes back in that layout, so it adds to
    the loss network's own gradient without layout conversions."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, a: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a)
        batch, channels = a.shape[:2]
        if is_channels_last(a):
            rows = a.permute(0, 2, 3, 1).reshape(batch, -1, channels)  # [B, HW, C], a view
            return torch.bmm(rows.transpose(1, 2), rows)
        rows = a.reshape(batch, channels, -1)
        return torch.bmm(rows, rows.transpose(1, 2))

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (a,) = ctx.saved_tensors
        batch, channels, height, width = a.shape
        symmetric = grad + grad.transpose(1, 2)
        if is_channels_last(a):
            rows = a.permute(0, 2, 3, 1).reshape(batch, -1, channels)
            return torch.bmm(rows, symmetric).reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        return torch.bmm(symmetric, a.reshape(batch, channels, -1)).reshape(a.shape)


def gram_matrix(a: Tensor) -> Tensor:
    """Unnormalised Gram matrix ``G[b, k, k'] = sum_ij a[b, k, i, j] * a[b, k', i, j]``.

    ``a``: ``[B, C, H, W]``, any memory layout. Returns ``[B, C, C]`` in float32 (float64 for float64 input),
    also under autocast: bf16/fp16 sums over ``H*W`` products lose precision or overflow.
    """
    _check_activations("a", a)
    with torch.autocast(device_type=a.device.type, enabled=False):
        return _Gram.apply(_at_least_float32(a))


def scaled_gram(a: Tensor) -> Tensor:
    """Gram matrix divided by ``2 n_H n_W n_C`` (float32 ``[B, C, C]``): the form the reference cost compares."""
    _check_activations("a", a)
    channels, height, width = a.shape[1:]
    return gram_matrix(a) / (2.0 * channels * height * width)


def style_layer_cost_from_gram(
    style_gram: Tensor, a_generated: Tensor, normalisation: StyleNormalisation = "reference"
) -> Tensor:
    """Layer style cost against a precomputed style target; one value per generated sample, ``[B]``.

    ``style_gram``: ``scaled_gram`` of the style activations, ``[1, C, C]`` (broadcast) or ``[B, C, C]``.
    ``a_generated``: ``[B, C, H, W]`` activations of the generated images (any ``H, W``).
    ``normalisation``: see the module docstring; ``"reference"`` is ``J_style[l]``.
    """
    _check_activations("a_generated", a_generated)
    if style_gram.dim() != 3 or style_gram.shape[-1] != a_generated.shape[1]:
        raise ValueError(
            f"style_gram {tuple(style_gram.shape)} does not match activations {tuple(a_generated.shape)}: "
            "expected [1 or B, C, C] with C the channel count of the activations"
        )
    generated_gram = scaled_gram(a_generated)
    style_gram = style_gram.to(generated_gram.dtype)
    difference = style_gram - generated_gram
    cost = difference.square().sum(dim=(1, 2))
    if normalisation == "reference":
        return cost
    if normalisation == "mean":
        channels = a_generated.shape[1]
        return cost * (4.0 / channels**2)
    if normalisation == "energy":
        return cost / style_gram.square().sum(dim=(1, 2)).clamp_min(torch.finfo(cost.dtype).tiny)
    raise ValueError(f"unknown style normalisation {normalisation!r}; choose one of {STYLE_NORMALISATIONS}")


def style_layer_cost(a_style: Tensor, a_generated: Tensor, normalisation: StyleNormalisation = "reference") -> Tensor:
    """Layer style cost ``J_style[l](S, G)``, ``[B]``.

    ``a_style``: ``[1 or B, C, H_s, W_s]`` (batch 1 broadcasts); ``a_generated``: ``[B, C, H, W]``. Sizes
    may differ: each Gram is scaled by its own ``1/(2 n_H n_W n_C)``.
    """
    return style_layer_cost_from_gram(scaled_gram(a_style), a_generated, normalisation)


def style_cost(
    style_grams: Mapping[str, Tensor],
    generated_features: Mapping[str, Tensor],
    layer_weights: Mapping[str, float],
    normalisation: StyleNormalisation = "reference",
) -> tuple[Tensor, dict[str, Tensor]]:
    """``J_style = sum_l lambda_l * J_style[l]`` over the layers named in ``layer_weights``.

    ``style_grams``: layer name -> ``scaled_gram`` of the style image; ``generated_features``: layer name ->
    activations of the generated batch; ``layer_weights``: layer name -> ``lambda_l``.
    Returns the weighted total ``[B]`` and the unweighted per-layer costs ``{name: [B]}``.
    """
    if not layer_weights:
        raise ValueError("layer_weights is empty: name at least one style layer")
    per_layer: dict[str, Tensor] = {}
    total: Tensor | None = None
    for name, weight in layer_weights.items():
        if name not in style_grams or name not in generated_features:
            raise KeyError(
                f"style layer {name!r} missing: style targets have {sorted(style_grams)}, "
                f"generated features have {sorted(generated_features)}"
            )
        per_layer[name] = style_layer_cost_from_gram(style_grams[name], generated_features[name], normalisation)
        weighted = weight * per_layer[name]
        total = weighted if total is None else total + weighted
    assert total is not None
    return total, per_layer


def content_cost(a_content: Tensor, a_generated: Tensor, normalisation: ContentNormalisation = "reference") -> Tensor:
    """Feature reconstruction cost, one value per sample ``[B]``: mean over ``C, H, W`` of ``(a_G - a_C)^2``
    (``"reference"``), or that over the photo's ``mean(a_C^2)`` (``"energy"``, module docstring)."""
    _check_activations("a_content", a_content)
    _check_activations("a_generated", a_generated)
    if a_content.shape != a_generated.shape:
        raise ValueError(f"content {tuple(a_content.shape)} and generated {tuple(a_generated.shape)} differ in shape")
    if normalisation not in CONTENT_NORMALISATIONS:
        raise ValueError(f"unknown content normalisation {normalisation!r}; choose one of {CONTENT_NORMALISATIONS}")
    with torch.autocast(device_type=a_generated.device.type, enabled=False):
        target = _at_least_float32(a_content)
        cost = (_at_least_float32(a_generated) - target).square().mean(dim=(1, 2, 3))
        if normalisation == "energy":
            cost = cost / target.square().mean(dim=(1, 2, 3)).clamp_min(CONTENT_ENERGY_FLOOR)
        return cost


def total_variation(x: Tensor) -> Tensor:
    """Smoothness penalty, ``[B]``: mean squared difference between vertical neighbours plus that between
    horizontal neighbours, over channels and pixels. ``x``: ``[B, C, H, W]`` images in [0, 1]; independent of
    image size, so one weight works at any resolution."""
    _check_activations("x", x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = _at_least_float32(x)
        vertical = (x[:, :, 1:, :] - x[:, :, :-1, :]).square().mean(dim=(1, 2, 3))
        horizontal = (x[:, :, :, 1:] - x[:, :, :, :-1]).square().mean(dim=(1, 2, 3))
    return vertical + horizontal


def translate(images: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """Move the view over ``images`` by a (sub-)pixel ``shift``, resampling bilinearly: a camera pan.

    ``images``: ``[B, C, H, W]``; ``shift``: ``[B, 2]`` pixels ``(dy, dx)`` per sample. Output pixel ``(i, j)`` is
    the input sampled at ``(i + dy, j + dx)`` (so the content moves by ``(-dy, -dx)``), in float32 (float64 for
    float64 input). Returns the moved images ``[B, C, H, W]`` and a float mask ``[B, 1, H, W]``, 1 where the
    sample point lies inside the input (border pixels are repeated elsewhere, masked 0).
    """
    _check_activations("images", images)
    if shift.shape != (images.shape[0], 2):
        raise ValueError(f"shift must be [B, 2] (dy, dx) pixels for {images.shape[0]} images, got {tuple(shift.shape)}")
    with torch.autocast(device_type=images.device.type, enabled=False):
        images = _at_least_float32(images)
        shift = shift.to(images.dtype)
        height, width = images.shape[-2:]
        rows = torch.arange(height, dtype=images.dtype, device=images.device).view(1, height, 1) + shift[:, 0].view(
            -1, 1, 1
        )
        cols = torch.arange(width, dtype=images.dtype, device=images.device).view(1, 1, width) + shift[:, 1].view(
            -1, 1, 1
        )
        rows, cols = torch.broadcast_tensors(rows, cols)  # [B, H, W] source coordinates in pixels
        # align_corners=True: -1 and 1 are the centres of the first and last pixels.
        grid = torch.stack([2.0 * cols / max(width - 1, 1) - 1.0, 2.0 * rows / max(height - 1, 1) - 1.0], dim=-1)
        moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
        valid = (rows >= 0) & (rows <= height - 1) & (cols >= 0) & (cols <= width - 1)
    return moved, valid.unsqueeze(1).to(moved.dtype)


def perturb(
    images: Tensor, max_shift: float, noise_std: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """A panned, noisy copy of each image, as the next frame of a shaky video would give it.

    ``images``: ``[B, C, H, W]`` in [0, 1]. Each sample gets its own shift ``(dy, dx)`` drawn uniformly from
    ``[-max_shift, max_shift]`` pixels (sub-pixel in general; ``translate``) and Gaussian noise of standard
    deviation ``noise_std`` (in [0, 1] units: 0.02 is about 5/255), clamped to [0, 1].
    Returns the perturbed images (float32) and the shifts ``[B, 2]``.
    """
    batch = images.shape[0]
    shift = (torch.rand(batch, 2, generator=generator, device=images.device) * 2.0 - 1.0) * max_shift
    moved, _ = translate(images, shift)
    noise = torch.randn(moved.shape, generator=generator, device=images.device, dtype=moved.dtype) * noise_std
    return (moved + noise).clamp(0.0, 1.0), shift


def stability_cost(perturbed_output: Tensor, output: Tensor, shift: Tensor) -> Tensor:
    """Output stability (Gupta et al. 2017), one value per sample ``[B]``: the mean squared difference, over
    channels and the pixels valid after the shift, between the output for the perturbed input
    (``perturb``: panned by ``shift``, plus noise) and the output for the clean input panned the same way::

        J_stab = sum_ij m_ij sum_c (f(P(x))_cij - T_s(f(x))_cij)^2 / (C sum_ij m_ij)

    with ``T_s`` = ``translate`` by ``shift`` and ``m`` its valid mask. Zero for a network that commutes with
    the pan and ignores the noise; images in [0, 1], so it is in squared intensity units. Both sides keep their
    gradients (the clean output is pulled towards stability too). ``perturbed_output``, ``output``:
    ``[B, C, H, W]``; ``shift``: ``[B, 2]`` pixels ``(dy, dx)``.

    Why this form: Gupta et al. (2017) trace flicker to the network amplifying small input changes, and train
    with a term that asks the output for a noisy copy of the image to equal the output for the image. Video
    frames also move: our network downsamples by 4, so a texture need not move with a 1-px pan, and the
    target here is the clean output moved by the same (sub-)pixel pan. Flow-based terms (Ruder et al. 2016,
    Huang et al. 2017) need video training data; this one needs only the photos.
    """
    _check_activations("perturbed_output", perturbed_output)
    if perturbed_output.shape != output.shape:
        raise ValueError(
            f"perturbed output {tuple(perturbed_output.shape)} and output {tuple(output.shape)} differ in shape"
        )
    target, valid = translate(output, shift)
    with torch.autocast(device_type=output.device.type, enabled=False):
        squared = (_at_least_float32(perturbed_output) - target).square() * valid
        pixels = valid.sum(dim=(1, 2, 3)).clamp_min(1.0) * output.shape[1]
        return squared.sum(dim=(1, 2, 3)) / pixels


class StyleLoss(nn.Module):
    """Holds the style targets (scaled Grams of one or more style images) as buffers and computes ``style_cost``.

    ``style_features``: for one style, layer name -> activations of the style image ``[1, C, H_s, W_s]``; for
    several, a sequence of such mappings, one per style (their sizes may differ). The Grams are computed once
    here and stacked per layer, ``[S, C, C]``. ``layer_weights``: ``lambda_l`` per layer.
    """

    def __init__(
        self,
        style_features: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]],
        layer_weights: Mapping[str, float],
        normalisation: StyleNormalisation = "reference",
    ) -> None:
        super().__init__()
        if normalisation not in STYLE_NORMALISATIONS:
            raise ValueError(f"unknown style normalisation {normalisation!r}; choose one of {STYLE_NORMALISATIONS}")
        styles = [style_features] if isinstance(style_features, Mapping) else list(style_features)
        if not styles:
            raise ValueError("StyleLoss needs the features of at least one style image")
        self.layer_weights = dict(layer_weights)
        self.normalisation: StyleNormalisation = normalisation
        self.num_styles = len(styles)
        for name in self.layer_weights:
            grams = [scaled_gram(features[name].detach()) for features in styles]
            self.register_buffer(f"gram_{name}", torch.cat(grams))

    def style_grams(self) -> dict[str, Tensor]:
        """Layer name -> scaled style Grams ``[S, C, C]``, one per style."""
        return {name: getattr(self, f"gram_{name}") for name in self.layer_weights}

    def forward(
        self, generated_features: Mapping[str, Tensor], style_index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``style_cost`` of each generated sample against its style: ``style_index`` ``[B]`` (long, values in
        ``[0, S)``) picks each sample's target; ``None`` (one style only) compares every sample with it."""
        grams = self.style_grams()
        if style_index is not None:
            grams = {name: gram[style_index] for name, gram in grams.items()}
        elif self.num_styles != 1:
            raise ValueError(f"StyleLoss holds {self.num_styles} styles: pass style_index [B] to pick each sample's")
        return style_cost(grams, generated_features, self.layer_weights, self.normalisation)
