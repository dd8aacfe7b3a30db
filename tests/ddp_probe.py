"""Two-process CPU DDP run for ``test_train_ddp.py`` (not a test itself): ``python tests/ddp_probe.py OUT``.

Each rank trains the smoke network for three steps on its own batches; at step 1 rank 1's batch holds a NaN
while rank 0's is finite. Each rank saves what it saw to ``OUT/rank<N>.pt``: its weights after every step,
its count of consecutive non-finite steps after every step, and how many updates Adam made.
"""

import os
import sys
from datetime import timedelta
from pathlib import Path

import pytorch_lightning as pl
import torch
from helpers import compose_train_config
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.strategies import DDPStrategy
from torch.utils.data import DataLoader

from nst_fast.train import build_module


class Record(Callback):
    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []
        self.nonfinite: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights.append({k: v.detach().clone() for k, v in pl_module.transformer.state_dict().items()})
        self.nonfinite.append(pl_module.consecutive_nonfinite)


def batches(rank: int) -> list[dict]:
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own images
    images = [torch.rand(2, 3, 32, 32, generator=generator) for _ in range(3)]
    if rank == 1:
        images[1][0, 0, 0, 0] = float("nan")
    return [{"image": image, "skipped": []} for image in images]


def main(out: Path) -> None:
    pl.seed_everything(0)
    module = build_module(compose_train_config("experiment=smoke"))
    record = Record()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(timeout=timedelta(seconds=60), broadcast_buffers=False),
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[record],
    )
    rank = int(os.environ.get("LOCAL_RANK", 0))
    trainer.fit(module, train_dataloaders=DataLoader(batches(rank), batch_size=None))
    adam_steps = {int(state["step"]) for state in trainer.optimizers[0].state.values()}
    torch.save(
        {
            "weights": record.weights,
            "nonfinite": record.nonfinite,
            "adam_steps": adam_steps,
            "rank": trainer.global_rank,
        },
        out / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
