"""The training job: compose the configured pieces and fit. ``train.py`` is a thin Hydra wrapper around
``train``; tests call it directly with a composed config."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from nst_fast.callbacks import FinalCheckpoint, last_checkpoint_path
from nst_fast.checkpoint import CHECKPOINT_KEY, read_checkpoint
from nst_fast.checkpoint_io import AtomicCheckpointIO
from nst_fast.config import validate_train_config
from nst_fast.data import ContentDataModule, load_style_image
from nst_fast.errors import ConfigError, MissingFileError, NstFastError
from nst_fast.module import StyleTransferModule
from nst_fast.perceptual import PerceptualLoss

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where the run wrote its checkpoint, how far it got, and whether a signal stopped it."""

    last_checkpoint: Path | None
    global_step: int
    interrupted_by: int | None
    stopped_at_once: bool = False


def instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets our own errors through: Hydra wraps whatever a constructor
    raises, which would turn a user's mistake (a missing weights file, being offline) into a traceback."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, NstFastError):
            cause = cause.__cause__
        if cause is not None:
            cause.__suppress_context__ = True  # keep its own __cause__ (e.g. the network error)
            raise cause  # noqa: B904
        raise


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` node of a config group holding named objects (callbacks, loggers)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def build_datamodule(cfg: DictConfig) -> ContentDataModule:
    """The content data, checked: the folder exists and holds at least one readable image."""
    datamodule: ContentDataModule = instantiate(cfg.data)
    datamodule.check()
    return datamodule


def style_info(cfg: DictConfig) -> dict[str, Any]:
    """What a checkpoint records about the style it was trained for."""
    return {"name": cfg.style.name, "image": str(cfg.style.image), "size": int(cfg.style.size)}


def check_resume(ckpt_path: str, cfg: DictConfig) -> dict[str, Any]:
    """Refuse to resume from a checkpoint that is not ours, or that was trained for another style or network:
    its style Grams and weights would silently override the config. Returns the checkpoint, read once."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"ckpt_path={ckpt_path!r} does not exist; pass a .ckpt written by an earlier run")
    checkpoint = read_checkpoint(path)
    meta = checkpoint[CHECKPOINT_KEY]
    # The style image's path may differ (another checkout or machine): name and size identify the style.
    style = meta.get("style", {})
    wanted = {
        "style": ({"name": style.get("name"), "size": style.get("size")},
                  {"name": cfg.style.name, "size": int(cfg.style.size)}),
        "transformer": (meta.get("transformer"), {"base_channels": cfg.model.base_channels,
                                                  "residual_blocks": cfg.model.residual_blocks}),
    }
    for key, (found, configured) in wanted.items():
        if found != configured:
            raise ConfigError(
                f"ckpt_path={ckpt_path!r} was trained with {key} {found}, but this run is configured for "
                f"{configured}: resume with the same style.* and model.* settings as the original run"
            )
    return checkpoint


def build_module(cfg: DictConfig) -> StyleTransferModule:
    """Transformation network, loss network and style targets, from the config."""
    style_image = load_style_image(cfg.style.image, cfg.style.size)
    loss: PerceptualLoss = instantiate(cfg.loss)
    return StyleTransferModule(
        transformer=instantiate(cfg.model),
        loss=loss,
        style_image=style_image,
        optimizer=instantiate(cfg.optimizer),
        style=style_info(cfg),
        channels_last=cfg.channels_last,
        max_consecutive_nonfinite=cfg.max_consecutive_nonfinite,
        compile=cfg.compile,
    )


#: Lightning's warning about what this package does on purpose: the loss network is frozen in eval mode.
_EVAL_MODE_WARNING = r"Found \d+ module\(s\) in eval mode at the start of training"


@contextmanager
def intended_lightning_warnings(module: StyleTransferModule) -> Iterator[None]:
    """Tell Lightning, the way its documentation gives for a single message (``warnings.filterwarnings``), that
    the frozen loss network is in eval mode on purpose: only while fitting, and only when nothing but the loss
    network is in eval mode."""
    frozen_only = all(name.startswith("loss.") for name, child in module.named_modules() if not child.training)
    with warnings.catch_warnings():
        if frozen_only:
            warnings.filterwarnings("ignore", message=_EVAL_MODE_WARNING)
        yield


def train(cfg: DictConfig) -> TrainResult:
    """Validate ``cfg``, build data, loggers, callbacks, trainer and module, and fit (resuming from
    ``cfg.ckpt_path``). Every check that does not need the loss network runs before its weights load."""
    validate_train_config(cfg)
    ckpt_path = cfg.get("ckpt_path")
    resumed = check_resume(ckpt_path, cfg) if ckpt_path is not None else None
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks"))
    checkpoint_io = AtomicCheckpointIO(preloaded={ckpt_path: resumed} if resumed is not None else None)
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=[checkpoint_io])
    datamodule.check_batches(trainer.num_nodes * trainer.num_devices)  # world_size is 1 until fit starts DDP
    module = build_module(cfg)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        experiment = getattr(logger, "experiment", None)
        if trainer.is_global_zero and hasattr(experiment, "add_text"):
            experiment.add_text("config", "```yaml\n" + OmegaConf.to_yaml(cfg, resolve=True) + "\n```", 0)
    interrupt = next((c for c in callbacks if isinstance(c, FinalCheckpoint)), None)
    try:
        with intended_lightning_warnings(module):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SystemExit:  # Lightning exits with status 1 after a KeyboardInterrupt (a second Ctrl-C)
        if interrupt is None or not interrupt.stopped_at_once:
            raise
    last = last_checkpoint_path(trainer)
    return TrainResult(
        last_checkpoint=last if last.is_file() else None,
        global_step=trainer.global_step,
        interrupted_by=interrupt.stopping_signal() if interrupt is not None else None,
        stopped_at_once=interrupt is not None and interrupt.stopped_at_once,
    )
