"""Checkpoint writing that never leaves a half-written file: write a temporary file, fsync, rename."""

from __future__ import annotations

import glob
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` it into place: a reader (or a
    run killed mid-write) sees either the old complete file or the new complete file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of a writer killed mid-save (kill -9) are never complete: remove them.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    tmp_name = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    # O_EXCL: a fresh file; mode 0o666 lets the process umask decide the permissions, as for any file.
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        tmp_name.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable, where the filesystem allows fsync on a directory
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO plugin using ``atomic_torch_save`` for local files.

    ``preloaded``: ``{path: checkpoint}`` already read (the resume check reads the file to validate it):
    Lightning's load of that path gets it instead of reading and unpickling the file a second time.
    """

    def __init__(self, preloaded: dict[str | os.PathLike, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.preloaded = {Path(path).expanduser().resolve(): value for path, value in (preloaded or {}).items()}

    def load_checkpoint(self, path: str | os.PathLike, *args: Any, **kwargs: Any) -> dict[str, Any]:
        checkpoint = self.preloaded.pop(Path(path).expanduser().resolve(), None)
        return checkpoint if checkpoint is not None else super().load_checkpoint(path, *args, **kwargs)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        atomic_torch_save(checkpoint, path)
