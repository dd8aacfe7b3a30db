"""Memory-layout helper shared by the costs and the networks (plain torch)."""

from __future__ import annotations

import torch
from torch import Tensor


def is_channels_last(x: Tensor) -> bool:
    """Whether ``x`` is a 4-d tensor in channels_last (NHWC) memory, and not also contiguous (NCHW): for the
    size-1 dims where both hold, code that picks a layout-specific path should take the ordinary one."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
