"""The training objective: VGG features of the generated image against a content target and the style
Grams, combined as ``J = alpha * J_content + beta * sum_l lambda_l J_style[l] + tv_weight * TV``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nst_fast.errors import ConfigError
from nst_fast.losses import STYLE_NORMALISATIONS, StyleLoss, StyleNormalisation, content_cost, total_variation
from nst_fast.models.vgg import VGGFeatures


@dataclass
class Costs:
    """Batch means of each term (scalars) and of each unweighted per-layer style cost."""

    total: Tensor
    content: Tensor
    style: Tensor
    total_variation: Tensor
    style_layers: dict[str, Tensor]


class PerceptualLoss(nn.Module):
    """Frozen VGG loss network plus the style targets; ``set_style`` must be called before ``forward``.

    ``network``: ``vgg16`` or ``vgg19``; ``weights``: ``imagenet``, a state-dict path, or ``none``.
    ``style_layers``: layer name -> ``lambda_l``. ``content_weight`` is ``alpha``, ``style_weight`` is ``beta``.
    """

    def __init__(
        self,
        style_layers: Mapping[str, float],
        content_layer: str = "relu2_2",
        content_weight: float = 1.0,
        style_weight: float = 1.0,
        tv_weight: float = 0.0,
        style_normalisation: StyleNormalisation = "reference",
        network: str = "vgg16",
        weights: str | os.PathLike = "imagenet",
    ) -> None:
        super().__init__()
        if style_normalisation not in STYLE_NORMALISATIONS:
            raise ConfigError(
                f"loss.style_normalisation={style_normalisation!r} is unknown; choose one of {STYLE_NORMALISATIONS}"
            )
        self.style_layers = {name: float(weight) for name, weight in style_layers.items()}
        self.content_layer = content_layer
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.tv_weight = float(tv_weight)
        self.style_normalisation: StyleNormalisation = style_normalisation
        self.features = VGGFeatures([*self.style_layers, content_layer], arch=network, weights=weights)
        self.style: StyleLoss | None = None

    @property
    def min_input_size(self) -> int:
        """Smallest image side for which the deepest layer still has 2x2 activations."""
        return self.features.min_input_size

    @torch.no_grad()
    def set_style(self, style_image: Tensor) -> None:
        """Compute the style Grams once from ``style_image`` ``[1, 3, H, W]`` in [0, 1] (kept as buffers)."""
        features = self.features(style_image, layers=self.style_layers)
        self.style = StyleLoss(features, self.style_layers, self.style_normalisation)

    @torch.no_grad()
    def content_target(self, content: Tensor) -> Tensor:
        """Content-layer activations of the content images; no autograd graph, and the VGG pass stops there."""
        return self.features(content, layers=[self.content_layer])[self.content_layer]

    def forward(self, content_features: Tensor, generated: Tensor) -> Costs:
        """Costs of ``generated`` ``[B, 3, H, W]`` against ``content_target`` features and the style."""
        if self.style is None:
            raise RuntimeError("PerceptualLoss.set_style(style_image) must be called before computing costs")
        features = self.features(generated)
        content = content_cost(content_features, features[self.content_layer]).mean()
        style, per_layer = self.style(features)
        style = style.mean()
        tv = total_variation(generated).mean()
        total = self.content_weight * content + self.style_weight * style + self.tv_weight * tv
        return Costs(
            total=total,
            content=content,
            style=style,
            total_variation=tv,
            style_layers={name: cost.mean() for name, cost in per_layer.items()},
        )
