"""The training objective: VGG features of the generated image against a content target and the style
Grams, combined as ``J = alpha * J_content + beta * sum_l lambda_l J_style[l] + tv_weight * TV``; the module
adds ``stability_weight * J_stab`` (``nst_fast.losses.stability_cost``), which needs a second pass of the
transformation network, not of the loss network."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nst_fast.errors import ConfigError
from nst_fast.losses import (
    CONTENT_NORMALISATIONS,
    STYLE_NORMALISATIONS,
    ContentNormalisation,
    StyleLoss,
    StyleNormalisation,
    content_cost,
    total_variation,
)
from nst_fast.models.vgg import VGGFeatures

#: ``style_index`` value of a sample trained as the identity (content cost only: give back the photo).
IDENTITY = -1


@dataclass
class Costs:
    """Batch means of each term (scalars) and of each unweighted per-layer style cost, and per-sample costs.

    Style terms average over the samples trained for a style (identity samples have no style cost).
    ``sample_content``, ``sample_style``: ``[B]`` unweighted costs per sample (style 0 for identity samples),
    for per-style curves.
    """

    total: Tensor
    content: Tensor
    style: Tensor
    total_variation: Tensor
    style_layers: dict[str, Tensor]
    sample_content: Tensor
    sample_style: Tensor
    #: Mean ``stability_cost`` (unweighted) when the step computed it, else ``None``.
    stability: Tensor | None = None


class PerceptualLoss(nn.Module):
    """Frozen VGG loss network plus the style targets; ``set_styles`` must be called before ``forward``.

    ``network``: ``vgg16`` or ``vgg19``; ``weights``: ``imagenet``, a state-dict path, or ``none``; ``pooling``:
    ``max`` or ``average`` (``VGGFeatures``).
    ``style_layers``: layer name -> ``lambda_l``. ``content_weight`` is ``alpha``, ``style_weight`` is ``beta``;
    each style may multiply them by its own factors (``set_styles``). ``stability_weight`` (0: off),
    ``stability_shift`` (largest pan in pixels) and ``stability_noise`` (noise standard deviation, images in
    [0, 1]) configure the stability term that ``StyleTransferModule`` adds (see ``nst_fast.losses.perturb``).
    ``jitter``: in training, the loss network sees the photo and the generated image both cropped at a random
    offset of ``0 .. jitter - 1`` pixels per step (``StyleTransferModule``), so that the transformation network's
    pixel grid (it upsamples by 4) does not stay aligned with the loss network's pooling grid; 0 or 1: off.
    """

    def __init__(
        self,
        style_layers: Mapping[str, float],
        content_layer: str = "relu2_2",
        content_weight: float = 1.0,
        style_weight: float = 1.0,
        tv_weight: float = 0.0,
        style_normalisation: StyleNormalisation = "reference",
        content_normalisation: ContentNormalisation = "reference",
        network: str = "vgg16",
        weights: str | os.PathLike = "imagenet",
        pooling: str = "max",
        stability_weight: float = 0.0,
        stability_shift: float = 1.0,
        stability_noise: float = 0.02,
        jitter: int = 0,
    ) -> None:
        super().__init__()
        if style_normalisation not in STYLE_NORMALISATIONS:
            raise ConfigError(
                f"loss.style_normalisation={style_normalisation!r} is unknown; choose one of {STYLE_NORMALISATIONS}"
            )
        if content_normalisation not in CONTENT_NORMALISATIONS:
            raise ConfigError(
                f"loss.content_normalisation={content_normalisation!r} is unknown; choose one of "
                f"{CONTENT_NORMALISATIONS}"
            )
        self.style_layers = {name: float(weight) for name, weight in style_layers.items()}
        self.content_layer = content_layer
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.tv_weight = float(tv_weight)
        self.style_normalisation: StyleNormalisation = style_normalisation
        self.content_normalisation: ContentNormalisation = content_normalisation
        self.stability_weight = float(stability_weight)
        self.stability_shift = float(stability_shift)
        self.stability_noise = float(stability_noise)
        self.jitter = int(jitter)
        self.features = VGGFeatures([*self.style_layers, content_layer], arch=network, weights=weights, pooling=pooling)
        self.style: StyleLoss | None = None

    @property
    def min_input_size(self) -> int:
        """Smallest image side for which the deepest layer still has 2x2 activations."""
        return self.features.min_input_size

    @torch.no_grad()
    def set_styles(
        self,
        style_images: Sequence[Tensor],
        style_weights: Sequence[float] | None = None,
        content_weights: Sequence[float] | None = None,
    ) -> None:
        """Compute the style Grams once from each ``[1, 3, H, W]`` image in [0, 1] (sizes may differ; kept as
        buffers). ``style_weights``/``content_weights``: per-style multipliers of ``beta``/``alpha`` (default 1)."""
        count = len(style_images)
        style_weights = [1.0] * count if style_weights is None else list(style_weights)
        content_weights = [1.0] * count if content_weights is None else list(content_weights)
        if count == 0 or len(style_weights) != count or len(content_weights) != count:
            raise ValueError(
                f"set_styles needs one or more style images and as many weights: got {count} images, "
                f"{len(style_weights)} style weights and {len(content_weights)} content weights"
            )
        features = [self.features(image, layers=self.style_layers) for image in style_images]
        self.style = StyleLoss(features, self.style_layers, self.style_normalisation)
        device = style_images[0].device
        # Per style, then the identity (style 0, content alpha): indexed by style_index, IDENTITY = -1 = last.
        self.register_buffer("_beta", torch.tensor([*style_weights, 0.0], device=device), persistent=False)
        self.register_buffer("_alpha", torch.tensor([*content_weights, 1.0], device=device), persistent=False)

    @torch.no_grad()
    def content_target(self, content: Tensor) -> Tensor:
        """Content-layer activations of the content images; no autograd graph, and the VGG pass stops there."""
        return self.features(content, layers=[self.content_layer])[self.content_layer]

    def forward(self, content_features: Tensor, generated: Tensor, style_index: Tensor | None = None) -> Costs:
        """Costs of ``generated`` ``[B, 3, H, W]`` against ``content_target`` features and the styles.

        ``style_index``: ``[B]`` long, each sample's style in ``[0, S)`` or ``IDENTITY`` (content cost only, no
        style or total-variation term); ``None`` means style 0 for every sample.
        """
        if self.style is None:
            raise RuntimeError("PerceptualLoss.set_styles(style_images) must be called before computing costs")
        batch = generated.shape[0]
        if style_index is None:
            style_index = torch.zeros(batch, dtype=torch.long, device=generated.device)
        styled = style_index != IDENTITY
        features = self.features(generated)
        content = content_cost(content_features, features[self.content_layer], self.content_normalisation)
        style, per_layer = self.style(features, style_index.clamp_min(0))
        style = torch.where(styled, style, torch.zeros_like(style))
        tv = total_variation(generated)
        per_sample = (
            self.content_weight * self._alpha[style_index] * content
            + self.style_weight * self._beta[style_index] * style
            + self.tv_weight * styled.to(tv.dtype) * tv
        )
        styled_count = styled.sum().clamp_min(1)

        def styled_mean(cost: Tensor) -> Tensor:
            return torch.where(styled, cost, torch.zeros_like(cost)).sum() / styled_count

        return Costs(
            total=per_sample.mean(),
            content=content.mean(),
            style=styled_mean(style),
            total_variation=styled_mean(tv),
            style_layers={name: styled_mean(cost) for name, cost in per_layer.items()},
            sample_content=content.detach(),
            sample_style=style.detach(),
        )
