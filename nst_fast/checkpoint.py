"""What nst-fast stores in a training checkpoint beyond Lightning's own keys, and how to read it back.

A Lightning ``.ckpt`` written by ``StyleTransferModule`` holds, next to ``state_dict`` and ``global_step``:
``checkpoint["nst_fast"] = {"format": 1, "version": ..., "transformer": {base_channels, residual_blocks},
"style": {"name": ..., "image": ...}}``. The transformation network's weights are the ``state_dict`` entries
under ``transformer.``. Reading a checkpoint for export or inference needs neither Lightning nor the VGG.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nst_fast import __version__
from nst_fast.errors import NstFastError
from nst_fast.models.transformer import TransformerNet

CHECKPOINT_KEY = "nst_fast"
CHECKPOINT_FORMAT = 1
STATE_PREFIX = "transformer."


class CheckpointError(NstFastError, ValueError):
    """A checkpoint that is missing, unreadable, or not an nst-fast checkpoint."""


@dataclass
class CheckpointInfo:
    """What a checkpoint says about its network and training."""

    transformer: dict[str, int]
    style: dict[str, Any] = field(default_factory=dict)
    global_step: int = 0
    version: str = ""


def checkpoint_metadata(transformer: TransformerNet, style: dict[str, Any]) -> dict[str, Any]:
    """The ``checkpoint["nst_fast"]`` entry for a network trained on ``style`` (name, image path, size)."""
    return {"format": CHECKPOINT_FORMAT, "version": __version__, "transformer": dict(transformer.config), "style": style}


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load an nst-fast checkpoint (tensors only, no code is unpickled) and check that it is one of ours.

    Raises ``CheckpointError`` naming the file when it is missing, corrupt, not ours or of another format.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a PyTorch file: {error}") from error
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{str(path)!r} is not an nst-fast checkpoint (no {CHECKPOINT_KEY!r} entry): "
            "pass a .ckpt written by `python train.py`"
        )
    meta = checkpoint[CHECKPOINT_KEY]
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{str(path)!r} has checkpoint format {found!r}; this version reads {CHECKPOINT_FORMAT}")
    return checkpoint


def load_transformer(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[TransformerNet, CheckpointInfo]:
    """Rebuild the trained ``TransformerNet`` (eval mode) from an nst-fast Lightning checkpoint.

    Raises ``CheckpointError`` with a message naming the file and what is wrong with it.
    """
    path = Path(path).expanduser()
    checkpoint = read_checkpoint(path, map_location)
    meta = checkpoint[CHECKPOINT_KEY]
    state = {
        key.removeprefix(STATE_PREFIX): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(STATE_PREFIX)
    }
    try:
        network = TransformerNet(**meta["transformer"])
        network.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{str(path)!r}: the weights do not fit a TransformerNet{meta.get('transformer')}: {error}"
        ) from error
    info = CheckpointInfo(
        transformer=dict(meta["transformer"]),
        style=dict(meta.get("style", {})),
        global_step=int(checkpoint.get("global_step", 0)),
        version=str(meta.get("version", "")),
    )
    return network.eval(), info
