"""Training variants users reach for: bf16 autocast on CPU, channels_last, compile, input noise, multirun."""

from pathlib import Path

import pytest
import torch
from helpers import events, run_train

from nst_fast.checkpoint import load_transformer

pytestmark = pytest.mark.slow  # each test trains in a subprocess


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.precision=bf16-mixed"],
        ["module.channels_last=false"],
        ["module.compile=true"],
        ["model.input_noise=0.06", "model.feature_noise=true", "trainer.precision=bf16-mixed"],
    ],
)
def test_precision_and_layout_variants_train(tmp_path: Path, overrides: list[str]) -> None:
    run_dir = tmp_path / "run"
    run_train(
        "experiment=smoke",
        "trainer.max_steps=3",
        "callbacks.checkpoint.every_n_train_steps=100",
        f"hydra.run.dir={run_dir}",
        *overrides,
        cwd=tmp_path,
    )
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.ckpt"]
    network, _ = load_transformer(run_dir / "checkpoints" / "last.ckpt")  # same keys whatever the variant
    assert network.config.get("input_noise") == (0.06 if "model.input_noise=0.06" in overrides else None)
    assert network.config.get("feature_noise") == ("model.feature_noise=true" in overrides or None)
    assert network(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20, 20)
    losses = [event.value for event in events(run_dir).Scalars("train/loss")]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(value.dtype == torch.float32 for key, value in state.items() if key.startswith("transformer."))


def test_multirun_gives_each_job_its_own_directory(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_train(
        "-m",
        "experiment=smoke",
        "trainer.max_steps=2",
        "style=starry,wave",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_starry", "1_wave"]
    for job in jobs:
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents.*"))
