"""Atomic checkpoint writes: complete files only, usual permissions, no temporary leftovers."""

import os
from pathlib import Path

import pytest
import torch

from nst_fast.checkpoint_io import atomic_torch_save


def test_atomic_save_replaces_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    stale = path.parent / ".last.ckpt.abc123.tmp"  # left by a writer killed mid-save
    stale.write_bytes(b"partial")
    old_umask = os.umask(0o022)
    try:
        atomic_torch_save({"step": 1}, path)
        atomic_torch_save({"step": 2}, path)
    finally:
        os.umask(old_umask)
    assert torch.load(path, weights_only=True) == {"step": 2}
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_failed_save_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
