"""Wrappers around the trained network that give each traced export its graph: float16 inside with float32 norms,
and a size check that survives ``torch.jit.trace``. (The uint8 file wraps the float32 ONNX graph instead:
``nst_fast.export.writers.export_onnx_uint8``.)"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from nst_fast.models.transformer import MIN_INPUT_SIZE, TransformerNet


class Float32InstanceNorm(nn.Module):
    """An ``InstanceNorm2d`` that computes in float32 whatever its input's dtype, and returns that dtype."""

    def __init__(self, norm: nn.InstanceNorm2d) -> None:
        super().__init__()
        self.norm = norm.float()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.float()).to(x.dtype)


class Float16Transformer(nn.Module):
    """float32 ``[N, 3, H, W]`` -> float16 network (instance norms in float32) -> float32. Conditional instance
    norms keep their float32 parameters and compute in float32 themselves."""

    def __init__(self, network: TransformerNet) -> None:
        super().__init__()
        network = copy.deepcopy(network).float()
        for module in list(network.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.InstanceNorm2d):
                    setattr(module, name, Float32InstanceNorm(child))
                elif isinstance(child, nn.Conv2d):
                    child.half()
        self.network = network
        self.num_conditions = network.num_conditions

    def forward(self, image: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.network(image.half(), condition).float()


@torch.jit.script_if_tracing
def _checked_size(x: Tensor, minimum: int) -> Tensor:
    """``x`` if it is ``[B, 3, H, W]`` with ``H, W >= minimum``; scripted when traced, so that the check stays
    in a traced graph instead of being evaluated once at the traced example's size."""
    if x.dim() != 4 or x.size(1) != 3 or x.size(2) < minimum or x.size(3) < minimum:
        raise ValueError(
            "TransformerNet expects RGB images [B, 3, H, W] with H, W >= " + str(minimum) + ", got " + str(x.size())
        )
    return x


class SizeCheckedTransformer(nn.Module):
    """The network behind the input check that ``torch.jit.trace`` would otherwise freeze at the example's size."""

    def __init__(self, network: TransformerNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.network(_checked_size(image, MIN_INPUT_SIZE), condition)
