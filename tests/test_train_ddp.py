"""Two-process CPU DDP (gloo) through Lightning's launcher and Hydra's run directory."""

from pathlib import Path

import torch

from helpers import events, run_train


def test_two_process_cpu_ddp(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(
        "experiment=smoke", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=600,
    )
    # Both ranks trained: each wrote its own job log from the module's start-of-training message.
    assert "rank 0 of 2 training" in (run_dir / "train.log").read_text()
    assert "rank 1 of 2 training" in (run_dir / "train_ddp_process_1.log").read_text()
    # Only rank 0 writes TensorBoard events and checkpoints.
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"step_000003.ckpt", "step_000006.ckpt", "last.ckpt"}
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    throughput = events(run_dir).Scalars("perf/images_per_s")
    assert throughput and all(event.value > 0 for event in throughput)
