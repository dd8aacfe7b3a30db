"""Two-process CPU DDP (gloo) through Lightning's launcher and Hydra's run directory."""

import re
from pathlib import Path

import pytest
import torch
from helpers import events, run_train
from image_factory import gradient
from PIL import Image

pytestmark = pytest.mark.slow  # two-process DDP training runs


def first_batch(log: str, rank: int) -> list[tuple[int, str]]:
    """``(sample index, crop)`` pairs of a rank's first batch, from its log line."""
    line = re.search(rf"rank {rank} first batch \(index:file@left,top\): (.*)", log)
    assert line, f"no first-batch line for rank {rank}"
    return [(int(item.split(":")[0]), item.split("@")[1]) for item in line.group(1).split("; ")]


def test_two_process_cpu_ddp(tmp_path: Path) -> None:
    # One wide photo: every sample is that file, so the crops alone tell the ranks' batches apart.
    (tmp_path / "photos").mkdir()
    Image.fromarray(gradient(400, 80)).save(tmp_path / "photos" / "wide.png")
    run_dir = tmp_path / "run"
    run_train(
        "experiment=smoke",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data=folder",
        f"data.root={tmp_path / 'photos'}",
        "data.samples_per_epoch=8",
        "data.num_workers=2",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        timeout=540,
    )
    # Both ranks trained: each wrote its own job log from the module's start-of-training message.
    logs = [(run_dir / "train.log").read_text(), (run_dir / "train_ddp_process_1.log").read_text()]
    assert "rank 0 of 2 training" in logs[0]
    assert "rank 1 of 2 training" in logs[1]
    # The distributed sampler gives each rank other samples, and each rank draws its own crops.
    batches = [first_batch(log, rank) for rank, log in enumerate(logs)]
    assert not {index for index, _ in batches[0]} & {index for index, _ in batches[1]}
    assert [crop for _, crop in batches[0]] != [crop for _, crop in batches[1]], batches
    # Only rank 0 writes TensorBoard events and checkpoints.
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {
        "step_000003.ckpt",
        "step_000006.ckpt",
        "last.ckpt",
    }
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    throughput = events(run_dir).Scalars("perf/images_per_s")
    assert throughput and all(event.value > 0 for event in throughput)


def test_ddp_synchronises_gradients_and_skips_a_nonfinite_step_on_every_rank(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from helpers import REPO_ROOT

    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "ddp_probe.py"), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    # Step 1: only rank 1's loss is NaN, yet both ranks skip it (one decision for all, or the all-reduce hangs).
    for rank in ranks:
        assert rank["nonfinite"] == [0, 1, 0], rank["rank"]
        assert rank["adam_steps"] == {2}, "two optimiser updates: none for the skipped step"
        assert all(torch.equal(rank["weights"][0][k], rank["weights"][1][k]) for k in rank["weights"][0])
    # Different batches on each rank, yet the same weights after every step: gradients are averaged across ranks.
    for step in range(3):
        first, second = ranks[0]["weights"][step], ranks[1]["weights"][step]
        assert all(torch.equal(first[k], second[k]) for k in first), f"ranks diverged at step {step}"
    assert not all(torch.equal(ranks[0]["weights"][2][k], ranks[0]["weights"][0][k]) for k in ranks[0]["weights"][0])
