"""LightningModule: trains a ``TransformerNet`` against a ``PerceptualLoss`` for one style image."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from nst_fast.checkpoint import CHECKPOINT_KEY, checkpoint_metadata
from nst_fast.errors import NonFiniteLossError
from nst_fast.models.transformer import TransformerNet
from nst_fast.perceptual import Costs, PerceptualLoss

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
#: Prefix of the frozen VGG weights in the state dict; they are not stored in checkpoints (rebuilt from config).
LOSS_NETWORK_PREFIX = "loss.features."


class StyleTransferModule(pl.LightningModule):
    """Owns the transformation network, the frozen loss network and the style targets.

    ``style_image``: ``[1, 3, H, W]`` in [0, 1], already at ``style.size``; its Grams are computed once here.
    ``optimizer``: a factory ``params -> Optimizer`` (Hydra ``_partial_``). ``style``: name/image/size,
    stored in checkpoints for export. ``channels_last``: NHWC memory layout for both networks.
    ``max_consecutive_nonfinite``: steps with a NaN/inf loss are skipped; this many in a row stop the run.
    ``compile``: ``torch.compile`` both networks in place (state dict keys unchanged) when fitting starts.
    """

    def __init__(
        self,
        transformer: TransformerNet,
        loss: PerceptualLoss,
        style_image: Tensor,
        optimizer: OptimizerFactory,
        style: dict[str, Any],
        channels_last: bool = False,
        max_consecutive_nonfinite: int = 10,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.loss = loss
        self.optimizer_factory = optimizer
        self.style = dict(style)
        self.channels_last = channels_last
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.compile_networks = compile
        self.consecutive_nonfinite = 0
        self.skip_update = False
        self.skipped_files: set[str] = set()
        self.loss.set_style(style_image)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, content: Tensor) -> Tensor:
        """Stylise ``[B, 3, H, W]`` images in [0, 1]."""
        return self.transformer(self._layout(content))

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def compute_costs(self, content: Tensor) -> Costs:
        """Stylise a batch and measure all cost terms (used by training and by the benchmarks)."""
        content = self._layout(content)
        target = self.loss.content_target(content)
        generated = self.transformer(content)
        return self.loss(target, generated)

    def configure_model(self) -> None:
        if self.compile_networks:
            self.transformer.compile()
            self.loss.features.compile()

    def on_train_start(self) -> None:
        log.info("rank %d of %d training on %s", self.global_rank, self.trainer.world_size, self.device)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        self._report_skipped(batch.get("skipped", []))
        costs = self.compute_costs(batch["image"])
        finite = bool(torch.isfinite(costs.total).item())
        # Every rank must take the same decision, or DDP's gradient all-reduce hangs.
        finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            return self._skip_nonfinite(costs)
        self.consecutive_nonfinite = 0
        batch_size = batch["image"].shape[0]
        metrics = {
            "train/content": costs.content,
            "train/style": costs.style,
            "train/total_variation": costs.total_variation,
        }
        for name, cost in costs.style_layers.items():
            metrics[f"train/style_layer/{name}"] = cost
            # What each layer adds to the total: compare these when choosing lambda_l.
            metrics[f"train/style_weighted/{name}"] = self.loss.style_weight * self.loss.style_layers[name] * cost
        self.log_dict(metrics, batch_size=batch_size, sync_dist=False)
        self.log("train/loss", costs.total, prog_bar=True, batch_size=batch_size)
        return costs.total

    def _skip_nonfinite(self, costs: Costs) -> Tensor:
        """Count and report a non-finite step; its loss still goes through backward (under DDP every rank must
        take part in the gradient all-reduce, and Lightning refuses a ``None`` there), and ``optimizer_step``
        then leaves the weights and the optimiser state alone."""
        self.consecutive_nonfinite += 1
        self.skip_update = True
        terms = ", ".join(
            f"{name}={value.item():.4g}"
            for name, value in [("total", costs.total), ("content", costs.content), ("style", costs.style),
                                ("total_variation", costs.total_variation), *costs.style_layers.items()]
        )
        message = f"non-finite loss at step {self.global_step}: {terms}"
        if self.consecutive_nonfinite >= self.max_consecutive_nonfinite:
            raise NonFiniteLossError(
                f"{message}; {self.consecutive_nonfinite} such steps in a row, stopping. The checkpoints written so "
                "far are kept: resume from the last one with a lower learning rate or loss weights"
            )
        log.warning("%s; skipping this step (%d in a row)", message, self.consecutive_nonfinite)
        return costs.total

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Callable[[], Any] | None = None
    ) -> None:
        """Run the closure (training step and backward), then step the optimiser unless the step's loss was not
        finite: ``training_step`` takes that decision on all ranks together."""
        loss = optimizer_closure() if optimizer_closure is not None else None
        if self.skip_update:
            self.skip_update = False
            return
        optimizer.step(closure=lambda: loss)

    def _report_skipped(self, reports: list[str]) -> None:
        for report in reports:
            if report not in self.skipped_files:
                self.skipped_files.add(report)
                log.warning("skipped unreadable training image %s", report)
        if reports or self.skipped_files:
            self.log("data/skipped_files", float(len(self.skipped_files)), batch_size=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.transformer.parameters())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = checkpoint_metadata(self.transformer, self.style)
        checkpoint["state_dict"] = {
            key: value for key, value in checkpoint["state_dict"].items() if not key.startswith(LOSS_NETWORK_PREFIX)
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The frozen VGG weights are not in the file: take the ones this run was configured with.
        for key, value in self.loss.features.state_dict().items():
            checkpoint["state_dict"].setdefault(LOSS_NETWORK_PREFIX + key, value)
