"""Lightning callbacks: preview images, throughput, graceful interrupts and a whole-run progress bar."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from torchvision.utils import make_grid

from nst_fast.errors import ConfigError

log = logging.getLogger(__name__)


def _tensorboard(trainer: pl.Trainer) -> Any | None:
    """The TensorBoard ``SummaryWriter`` of the trainer's loggers, or ``None``."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class ImageLogger(Callback):
    """Every ``every_n_steps`` steps, log a grid of a fixed set of content images (top row) above their
    stylised versions, one row per condition of the network (each style in order, then the identity), to
    TensorBoard as ``preview``; the style images once, as ``style`` (one style) or ``style/<name>``. After each
    validation (``data.val_root``), the same grid of the first ``num_images`` held-out photos as ``val/preview``.

    ``num_images`` content images come from the datamodule's ``preview_images`` at ``size`` pixels.
    """

    def __init__(self, every_n_steps: int = 500, num_images: int = 4, size: int = 256) -> None:
        if every_n_steps < 1 or num_images < 1 or size < 5:
            raise ConfigError(
                f"callbacks.images: every_n_steps={every_n_steps} and num_images={num_images} must be >= 1, "
                f"size={size} >= 5"
            )
        self.every_n_steps = every_n_steps
        self.num_images = num_images
        self.size = size
        self.content: torch.Tensor | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or _tensorboard(trainer) is None:
            return
        self.content = trainer.datamodule.preview_images(self.num_images, self.size)
        from nst_fast.data import load_style_image

        for style in pl_module.styles:
            if Path(style.get("image", "")).is_file():  # a fine-tuned network's base styles may live elsewhere
                tag = "style" if len(pl_module.styles) == 1 else f"style/{style['name']}"
                _tensorboard(trainer).add_image(tag, load_style_image(style["image"], self.size)[0], 0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.content is None or step % self.every_n_steps != 0:
            return
        self.log_preview(trainer, pl_module, step, self.content, "preview")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.content is not None and trainer.global_step % self.every_n_steps != 0:
            self.log_preview(trainer, pl_module, trainer.global_step, self.content, "preview")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        held_out = getattr(trainer.datamodule, "val_images", None)
        if trainer.sanity_checking or not trainer.is_global_zero or held_out is None or _tensorboard(trainer) is None:
            return
        self.log_preview(trainer, pl_module, trainer.global_step, held_out[: self.num_images], "val/preview")

    @torch.no_grad()
    def log_preview(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int, images: torch.Tensor, tag: str
    ) -> None:
        """Log ``images`` ``[N, 3, H, W]`` (top row) above their stylised versions, one row per condition."""
        content = images.to(pl_module.device)
        rows = [content]
        for condition in range(len(pl_module.condition_names)):
            conditions = torch.full((len(content),), condition, dtype=torch.long, device=pl_module.device)
            rows.append(pl_module(content, conditions).float().clamp(0, 1))
        grid = make_grid(torch.cat(rows), nrow=len(content), padding=2)
        _tensorboard(trainer).add_image(tag, grid.cpu(), step)


class Throughput(Callback):
    """Logs training throughput ``perf/images_per_s`` (all devices together) over each logging interval."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.images = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.images += batch["image"].shape[0] * trainer.world_size
        if trainer.global_step % trainer.log_every_n_steps == 0 and self.start is not None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
            elapsed = time.perf_counter() - self.start
            pl_module.log("perf/images_per_s", self.images / elapsed, batch_size=1)
            self.start, self.images = time.perf_counter(), 0


class FinalCheckpoint(Callback):
    """Saves ``last.ckpt`` when training ends: at ``max_steps``, or early on Ctrl-C (SIGINT) or SIGTERM,
    which finish the current step first. So ``last.ckpt`` always holds the final state of the run.

    A second Ctrl-C interrupts at once. Under DDP a signal on any rank stops all of them together.
    ``stopping_signal()`` tells the caller which signal stopped the run (``None`` if none did).
    """

    def __init__(self) -> None:
        self.signal_received: int | None = None
        self.stopping = False
        self.stopped_at_once = False
        self._previous: dict[int, Any] = {}
        self._saved_at_step: int | None = None
        self._muted: tuple[Any, Any] | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signal_received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        # Only set a flag: logging here could re-enter a stream that the progress bar is writing to.
        self.signal_received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.signal_received, self.stopping = None, False
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                return

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if not self.stopping and trainer.strategy.reduce_boolean_decision(self.signal_received is not None, all=False):
            self.stopping = True
            trainer.should_stop = True
            name = signal.Signals(self.signal_received).name if self.signal_received else "a signal on another rank"
            log.warning("received %s: stopping after step %d and saving a checkpoint", name, trainer.global_step)

    def stopping_signal(self) -> int | None:
        """The signal that stopped training; SIGTERM when it reached another DDP rank only; ``None`` if none."""
        if not self.stopping:
            return None
        return self.signal_received or signal.SIGTERM

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.stopped_at_once = isinstance(exception, KeyboardInterrupt)
        self._restore_handlers()

    def _mute_final_save_last(self, trainer: pl.Trainer) -> None:
        """``ModelCheckpoint(save_last=True)`` writes last.ckpt again when training ends if it has saved nothing
        in this run (Lightning >= 2.5; it runs after this callback): switch its ``save_last`` off until teardown."""
        callback = trainer.checkpoint_callback
        if callback is not None and callback.save_last:
            self._muted = (callback, callback.save_last)
            callback.save_last = False

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._saved_at_step = trainer.global_step

    def _last_is_current(self, trainer: pl.Trainer, path: Path) -> bool:
        """Whether ``ModelCheckpoint`` (``save_last``) already wrote ``path`` at this global step: a checkpoint
        was saved at this step, and its last-checkpoint path is ours."""
        callback = trainer.checkpoint_callback
        last = getattr(callback, "last_model_path", "") if callback is not None and callback.save_last else ""
        return self._saved_at_step == trainer.global_step and bool(last) and Path(last) == path

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_handlers()
        if self._muted is not None:
            callback, save_last = self._muted
            callback.save_last, self._muted = save_last, None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()
        path = last_checkpoint_path(trainer)
        if not self._last_is_current(trainer, path):  # written once, not again right after ModelCheckpoint
            trainer.save_checkpoint(path, weights_only=False)
            self._mute_final_save_last(trainer)
        if trainer.is_global_zero:
            if self.stopping:
                log.warning("interrupted at step %d; checkpoint saved to %s", trainer.global_step, path)
            else:
                log.info("finished at step %d; checkpoint saved to %s", trainer.global_step, path)


def last_checkpoint_path(trainer: pl.Trainer) -> Path:
    """``last.ckpt`` in the checkpoint callback's folder (or the run's root folder without one)."""
    callback = trainer.checkpoint_callback
    directory = Path(callback.dirpath) if callback is not None and callback.dirpath else Path(trainer.default_root_dir)
    return directory / "last.ckpt"


class StepProgressBar(TQDMProgressBar):
    """One progress bar for the whole run (global step out of ``max_steps``, with ETA), instead of one per epoch."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.current_epoch == 0 or self.train_progress_bar.total != trainer.max_steps:
            self.train_progress_bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
            self.train_progress_bar.initial = trainer.global_step
            self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_description("Training")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if trainer.global_step % self.refresh_rate == 0 or trainer.global_step == trainer.max_steps:
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
