"""A resumed run continues its epoch: the batches after the checkpoint hold exactly the samples and crops the
uninterrupted run drew (photo folders here; streamed sets in test_train_stream.py)."""

from pathlib import Path

import pytest
from helpers import logged_batches, run_train

pytestmark = pytest.mark.slow


def test_folder_data_resumes_mid_epoch_and_at_an_epoch_end_exactly(tmp_path: Path) -> None:
    # 8 samples per epoch at batch 2: epochs of 4 steps; checkpoints every 2 steps (mid-epoch 2, epoch end 4).
    common = [
        "experiment=smoke",
        "data.num_workers=2",
        "callbacks.checkpoint.every_n_train_steps=2",
        "hydra.verbose=nst_fast.data",
    ]
    run_train(*common, f"hydra.run.dir={tmp_path / 'full'}", cwd=tmp_path)
    full = logged_batches(tmp_path / "full")
    assert sorted(full) == [(0, step) for step in range(1, 7)]
    epoch_one = [crop.split(":")[0] for step in range(1, 5) for crop in full[0, step]]
    assert sorted(epoch_one, key=int) == [str(index) for index in range(8)], "an epoch is one pass over its samples"
    for start in (2, 4):
        run_dir = tmp_path / f"from{start}"
        checkpoint = tmp_path / "full" / "checkpoints" / f"step_{start:06d}.ckpt"
        run_train(*common, f"ckpt_path={checkpoint}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        resumed = logged_batches(run_dir)
        assert sorted(resumed) == [(0, step) for step in range(start + 1, 7)]
        assert all(resumed[key] == full[key] for key in resumed), (start, resumed, full)
