"""Helpers shared by the training tests: run train.py, read TensorBoard event files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_train(*overrides: str, cwd: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python train.py OVERRIDES`` from ``cwd`` (not the repo: nothing may depend on the current directory)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), *overrides],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def events(run_dir: Path) -> EventAccumulator:
    """The TensorBoard events of a run, loaded (all scalars and images kept)."""
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator
