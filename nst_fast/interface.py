"""The exported interface of a trained network: what every export computes and what inference runs for a
training checkpoint. Single-condition networks take ``image`` ``[N, 3, H, W]`` in [0, 1]; multi-condition networks
take ``(image, style_weights [N, S])``, one weight per style, the identity (if any) getting ``1 - sum``.

Shared by ``nst_fast.export`` and ``nst_fast.stylize`` (checkpoints), so that neither imports the other.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nst_fast.checkpoint import CheckpointInfo


class StyleWeightsInput(nn.Module):
    """The exported interface of a multi-condition network: ``(image [N, 3, H, W], style_weights [N, S])``, the
    network's condition weights being the style weights followed, for a network with the identity condition,
    by ``1 - sum(style_weights)``."""

    def __init__(self, network: nn.Module, identity: bool) -> None:
        super().__init__()
        self.network = network
        self.identity = identity

    def forward(self, image: Tensor, style_weights: Tensor) -> Tensor:
        condition = style_weights
        if self.identity:
            condition = torch.cat([style_weights, 1.0 - style_weights.sum(dim=1, keepdim=True)], dim=1)
        return self.network(image, condition)


def exported_interface(network: nn.Module, info: CheckpointInfo) -> nn.Module:
    """What the files compute: the network itself for one condition, else ``(image, style_weights)``."""
    return network if info_conditions(info) == 1 else StyleWeightsInput(network, info.identity)


def info_conditions(info: CheckpointInfo) -> int:
    """Number of conditions of the checkpoint's network (1 for single-style networks without identity)."""
    return int(info.transformer.get("num_conditions", 1))
