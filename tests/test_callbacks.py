"""Interrupted runs: SIGINT/SIGTERM save a checkpoint and exit cleanly; after kill -9 the run resumes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import REPO_ROOT, run_train


def start_long_run(run_dir: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "train.py"), "experiment=smoke", "trainer.max_steps=100000",
         f"hydra.run.dir={run_dir}"],
        cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"training exited early ({process.returncode}): {process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.2)


def step_of(checkpoint: Path) -> tuple[int, int]:
    state = torch.load(checkpoint, weights_only=True)
    return state["global_step"], int(state["optimizer_states"][0]["state"][0]["step"].item())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_checkpoint_and_exits_cleanly(tmp_path: Path, signum: int) -> None:
    run_dir = tmp_path / "run"
    process = start_long_run(run_dir, tmp_path)
    wait_for(run_dir / "checkpoints" / "step_000003.ckpt", process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum
    assert "Traceback" not in stderr
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"resume with ckpt_path={last}" in stderr
    step, optimiser_step = step_of(last)
    assert step >= 3 and optimiser_step == step
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    # Resume in the same run directory and train two more steps.
    run_train("experiment=smoke", f"ckpt_path={last}", f"trainer.max_steps={step + 2}", f"hydra.run.dir={run_dir}",
              cwd=tmp_path)
    assert step_of(last) == (step + 2, step + 2)


def test_resume_after_kill_9(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = start_long_run(run_dir, tmp_path)
    wait_for(run_dir / "checkpoints" / "step_000006.ckpt", process)
    process.kill()
    process.communicate(timeout=60)
    last = run_dir / "checkpoints" / "last.ckpt"
    step, optimiser_step = step_of(last)  # a complete, loadable file: never half-written
    # Lightning writes step_000006.ckpt before last.ckpt, so the kill may land between the two.
    assert step >= 3 and step % 3 == 0 and optimiser_step == step
    run_train("experiment=smoke", f"ckpt_path={last}", f"trainer.max_steps={step + 3}", f"hydra.run.dir={run_dir}",
              cwd=tmp_path)
    assert step_of(last) == (step + 3, step + 3)
