"""The LightningModule's step: costs logged, non-finite steps skipped, repeated ones stop the run."""

import logging

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from helpers import compose_train_config

from nst_fast.train import build_module


def loader(images: list[torch.Tensor]) -> DataLoader:
    return DataLoader([{"image": image, "skipped": []} for image in images], batch_size=None)


def make_module(*overrides: str):
    cfg = compose_train_config("experiment=smoke", *overrides)
    return build_module(cfg)


def fit(module, images: list[torch.Tensor]) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=len(images), accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=loader(images))
    return trainer


def test_nonfinite_step_is_skipped_and_named(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    module = make_module()
    good = torch.rand(2, 3, 32, 32)
    bad = good.clone()
    bad[0, 0, 0, 0] = float("nan")
    fit(module, [good])
    before = {k: v.clone() for k, v in module.transformer.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="nst_fast.module"):
        trainer = fit(module, [bad])
    assert "non-finite loss at step 0" in caplog.text and "style=" in caplog.text and "content=" in caplog.text
    after = module.transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step leaves the weights alone"
    assert module.consecutive_nonfinite == 1 and trainer.state.finished


def test_repeated_nonfinite_steps_stop_the_run() -> None:
    module = make_module("max_consecutive_nonfinite=2")
    nan = torch.full((2, 3, 32, 32), float("nan"))
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 1: total=nan, content=nan, style=nan.*2 such steps in a row"):
        fit(module, [nan, nan, nan])


def test_costs_follow_the_configured_weights() -> None:
    torch.manual_seed(0)
    module = make_module("loss.content_weight=2.0", "loss.style_weight=3.0", "loss.tv_weight=5.0")
    costs = module.compute_costs(torch.rand(2, 3, 32, 32))
    expected = 2.0 * costs.content + 3.0 * costs.style + 5.0 * costs.total_variation
    torch.testing.assert_close(costs.total, expected)
    layers = module.loss.style_layers
    torch.testing.assert_close(costs.style, sum(layers[name] * cost for name, cost in costs.style_layers.items()))
