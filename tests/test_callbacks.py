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

pytestmark = pytest.mark.slow  # signals and kill -9 against training subprocesses


def start_long_run(run_dir: Path, cwd: Path, *overrides: str, wrapper: list[str] = ()) -> subprocess.Popen:
    """``train.py`` for 100000 smoke steps in the background; its output goes to files (``output_of``), not to
    pipes nobody reads, which would fill up and block it."""
    out = (cwd / "stdout.txt").open("w")
    err = (cwd / "stderr.txt").open("w")
    return subprocess.Popen(
        [
            sys.executable,
            *wrapper,
            str(REPO_ROOT / "train.py"),
            "experiment=smoke",
            "trainer.max_steps=100000",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=out,
        stderr=err,
        text=True,
    )


def output_of(cwd: Path) -> str:
    """What the background run wrote to stderr so far."""
    return (cwd / "stderr.txt").read_text()


def wait_for(path: Path, process: subprocess.Popen, cwd: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"training exited early ({process.returncode}): {output_of(cwd)[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def step_of(checkpoint: Path) -> tuple[int, int]:
    state = torch.load(checkpoint, weights_only=True)
    return state["global_step"], int(state["optimizer_states"][0]["state"][0]["step"].item())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_checkpoint_and_exits_cleanly(tmp_path: Path, signum: int) -> None:
    run_dir = tmp_path / "run"
    process = start_long_run(run_dir, tmp_path)
    wait_for(run_dir / "checkpoints" / "step_000003.ckpt", process, tmp_path)
    process.send_signal(signum)
    process.wait(timeout=120)
    stderr = output_of(tmp_path)
    assert process.returncode == 128 + signum
    assert "Traceback" not in stderr
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"resume with ckpt_path={last}" in stderr
    step, optimiser_step = step_of(last)
    assert step >= 3 and optimiser_step == step
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    # Resume in the same run directory and train two more steps.
    run_train(
        "experiment=smoke",
        f"ckpt_path={last}",
        f"trainer.max_steps={step + 2}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert step_of(last) == (step + 2, step + 2)


#: Runs train.py (argv[2:]) with torch.save writing its 4th file only half, then waiting to be killed:
#: with a smoke run saving every 3 steps, that is last.ckpt at step 6 (after step_000003, last, step_000006).
HALF_WRITTEN_SAVE = """
import io, os, runpy, sys, time
import torch
marker, calls, real_save = sys.argv.pop(1), [], torch.save
def save(obj, f, *args, **kwargs):
    calls.append(1)
    if len(calls) != 4:
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    handle = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
    handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    handle.flush()
    open(marker, "w").close()
    time.sleep(600)
torch.save = save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_kill_9_during_a_save_leaves_complete_checkpoints(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    marker = tmp_path / "mid_save"
    process = start_long_run(run_dir, tmp_path, wrapper=["-c", HALF_WRITTEN_SAVE, str(marker)])
    wait_for(marker, process, tmp_path)  # last.ckpt's second save is half written: kill -9 now
    process.kill()
    process.wait(timeout=60)
    checkpoints = run_dir / "checkpoints"
    for path in checkpoints.glob("*.ckpt"):
        step_of(path)  # every file named .ckpt is complete and loads
    last = checkpoints / "last.ckpt"
    assert step_of(last) == (3, 3), "last.ckpt still holds the previous complete save"
    run_train("experiment=smoke", f"ckpt_path={last}", "trainer.max_steps=5", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert step_of(last) == (5, 5)
    assert not list(checkpoints.glob("*.tmp")), "the killed writer's leftover is removed by the next save"


#: Runs train.py (argv[2:]) with its fifth training step taking a minute, after touching the marker (argv[1]):
#: signals sent after the marker appears land inside that step.
SLOW_FIFTH_STEP = """
import runpy, sys, time
from pathlib import Path
from nst_fast.module import StyleTransferModule
marker, real_step = Path(sys.argv.pop(1)), StyleTransferModule.training_step
def training_step(self, batch, batch_idx):
    if self.global_step == 4:
        marker.touch()
        time.sleep(60)
    return real_step(self, batch, batch_idx)
StyleTransferModule.training_step = training_step
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    marker = tmp_path / "in_step_5"
    process = start_long_run(run_dir, tmp_path, wrapper=["-c", SLOW_FIFTH_STEP, str(marker)])
    wait_for(marker, process, tmp_path)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=50)  # well before the step's minute is up
    stderr = output_of(tmp_path)
    assert process.returncode == 130, stderr[-3000:]
    assert "stopped at once by a second Ctrl-C during step 5, not saved" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert step_of(run_dir / "checkpoints" / "last.ckpt") == (3, 3), "last.ckpt still holds the step-3 save"
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        step_of(path)


def train_in_process(run_dir: Path, *overrides: str):
    """``nst_fast.train.train`` on the smoke config in this process, writing into ``run_dir``."""
    from helpers import compose_train_config

    from nst_fast.train import train

    cfg = compose_train_config(
        "experiment=smoke",
        f"trainer.default_root_dir={run_dir}",
        f"callbacks.checkpoint.dirpath={run_dir / 'checkpoints'}",
        f"logger.tensorboard.save_dir={run_dir}",
        "callbacks.progress=null",
        *overrides,
    )
    return train(cfg)


def test_last_checkpoint_written_once_and_resume_reads_the_checkpoint_once(tmp_path: Path, monkeypatch) -> None:
    from nst_fast.checkpoint_io import AtomicCheckpointIO

    saved: list[str] = []
    real_save = AtomicCheckpointIO.save_checkpoint

    def recording_save(self, checkpoint, path, *args, **kwargs):
        saved.append(Path(path).name)
        real_save(self, checkpoint, path, *args, **kwargs)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording_save)
    # Step 6 is both a periodic save (every 3 steps, with save_last) and the end of the run.
    train_in_process(tmp_path / "run")
    assert saved == ["step_000003.ckpt", "last.ckpt", "step_000006.ckpt", "last.ckpt"]
    assert step_of(tmp_path / "run" / "checkpoints" / "last.ckpt") == (6, 6)

    loads: list[str] = []
    real_load = torch.load
    monkeypatch.setattr(
        torch, "load", lambda f, *a, **k: (loads.append(str(getattr(f, "name", f))), real_load(f, *a, **k))[1]
    )
    saved.clear()
    result = train_in_process(
        tmp_path / "resumed", f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}", "trainer.max_steps=8"
    )
    assert len(loads) == 1, f"the checkpoint is read once, not {len(loads)} times: {loads}"
    assert result.global_step == 8 and saved == ["last.ckpt"]  # ends between periodic saves: FinalCheckpoint writes it
    assert step_of(tmp_path / "resumed" / "checkpoints" / "last.ckpt") == (8, 8)
