"""What nst-fast stores in a training checkpoint beyond Lightning's own keys, and how to read it back.

A Lightning ``.ckpt`` written by ``StyleTransferModule`` holds, next to ``state_dict`` and ``global_step``:
``checkpoint["nst_fast"] = {"format": 1, "version": ..., "transformer": {base_channels, residual_blocks[,
num_conditions]}, "styles": [{"name", "image", "size"}, ...], "identity": bool, "style": <the first style>}``.
The network's conditions are the styles in that order, then the identity if ``identity``. Checkpoints written
before multi-style networks have ``"style"`` only (one style, no identity). The transformation network's weights
are the ``state_dict`` entries under ``transformer.``. Reading a checkpoint for export or inference needs neither
Lightning nor the VGG.
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
from nst_fast.models.transformer import TransformerNet, rows_per_condition

CHECKPOINT_KEY = "nst_fast"
#: Name of the identity condition (content cost only: gives back the photo) in logs and metadata.
IDENTITY_NAME = "identity"
CHECKPOINT_FORMAT = 1
STATE_PREFIX = "transformer."


class CheckpointError(NstFastError, ValueError):
    """A checkpoint that is missing, unreadable, or not an nst-fast checkpoint."""


@dataclass
class CheckpointInfo:
    """What a checkpoint says about its network and training: ``styles`` in condition order, then the identity
    condition if ``identity``."""

    transformer: dict[str, int]
    styles: list[dict[str, Any]] = field(default_factory=list)
    identity: bool = False
    global_step: int = 0
    version: str = ""
    trained: list[str] | None = None

    @property
    def style(self) -> dict[str, Any]:
        """The first (for single-style networks: the) style."""
        return self.styles[0] if self.styles else {}

    @property
    def style_names(self) -> list[str]:
        return [str(style.get("name", "")) for style in self.styles]

    @property
    def condition_names(self) -> list[str]:
        """The network's conditions in order: style names, then ``identity`` if it has one."""
        return self.style_names + ([IDENTITY_NAME] if self.identity else [])


def checkpoint_metadata(
    transformer: TransformerNet,
    styles: list[dict[str, Any]] | dict[str, Any],
    identity: bool = False,
    trained: list[str] | None = None,
) -> dict[str, Any]:
    """The ``checkpoint["nst_fast"]`` entry for a network trained on ``styles`` (each: name, image path, size;
    one style may be passed as a dict), plus the identity condition if ``identity``. ``trained``: the names of
    the conditions the run trains (fewer than all when fine-tuning; ``None``: all)."""
    styles = [styles] if isinstance(styles, dict) else [dict(style) for style in styles]
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": __version__,
        "transformer": dict(transformer.config),
        "styles": styles,
        "identity": bool(identity),
        "style": styles[0] if styles else {},
    }
    if trained is not None:
        meta["trained"] = list(trained)
    return meta


def checkpoint_info(checkpoint: dict[str, Any]) -> CheckpointInfo:
    """What an nst-fast checkpoint (as read by ``read_checkpoint``) says; old single-style ones included."""
    meta = checkpoint[CHECKPOINT_KEY]
    styles = meta.get("styles")
    if styles is None:
        styles = [meta["style"]] if meta.get("style") else []
    return CheckpointInfo(
        transformer=dict(meta["transformer"]),
        styles=[dict(style) for style in styles],
        identity=bool(meta.get("identity", False)),
        global_step=int(checkpoint.get("global_step", 0)),
        version=str(meta.get("version", "")),
        trained=list(meta["trained"]) if meta.get("trained") is not None else None,
    )


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


def pin_identity_noise(state: dict[str, torch.Tensor], key: str, num_conditions: int) -> None:
    """A full-resolution noise scale saved as one row ``[C]`` for every condition (before it was a table per
    condition) becomes the table ``[num_conditions, C]`` with that row everywhere but the last condition's, the
    exact identity's, which is zero: the identity gives back the photo exactly, the styles are unchanged. Changes
    ``state`` in place; a table is left as it is."""
    scale = state.get(key)
    if scale is not None and scale.dim() == 1 and num_conditions > 1:
        state[key] = rows_per_condition(scale, num_conditions, zero_last=True)


def load_transformer(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[TransformerNet, CheckpointInfo]:
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
        info = checkpoint_info(checkpoint)
        if info.identity and network.residual_output:
            pin_identity_noise(state, "noise_scale_full", network.num_conditions)
        network.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{str(path)!r}: the weights do not fit a TransformerNet{meta.get('transformer')}: {error}"
        ) from error
    if network.num_conditions > 1 and len(info.condition_names) != network.num_conditions:
        raise CheckpointError(
            f"{str(path)!r}: the network has {network.num_conditions} conditions but the checkpoint names "
            f"{len(info.condition_names)} ({', '.join(info.condition_names)})"
        )
    return network.eval(), info


def slim_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Write the part of a training checkpoint that inference and fine-tuning need (the transformation network's
    weights, the step and ``nst_fast``'s record; no optimiser state) to ``target``, for shipping a model. Paintings
    bundled with the package are recorded relative to its assets (``styles/X.jpg``), so that every install finds
    them. Returns ``target``."""
    checkpoint = read_checkpoint(source)
    meta = dict(checkpoint[CHECKPOINT_KEY])
    styles = []
    for style in checkpoint_info(checkpoint).styles:
        image = Path(str(style.get("image", "")))
        parts = image.parts
        inside = [i for i in range(1, len(parts)) if parts[i - 1] == "nst_fast" and parts[i] == "assets"]
        if inside:
            style = {**style, "image": Path(*parts[inside[-1] + 1 :]).as_posix()}
        styles.append(style)
    meta["styles"], meta["style"] = styles, styles[0] if styles else {}
    slim = {
        "state_dict": {key: value for key, value in checkpoint["state_dict"].items() if key.startswith(STATE_PREFIX)},
        "global_step": checkpoint.get("global_step", 0),
        CHECKPOINT_KEY: meta,
    }
    target = Path(target)
    torch.save(slim, target)
    return target
