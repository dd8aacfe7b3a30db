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

from nst_fast.assets import BUNDLED_CHECKPOINTS, bundled_checkpoint
from nst_fast.callbacks import FinalCheckpoint, last_checkpoint_path
from nst_fast.checkpoint import checkpoint_info, load_transformer, read_checkpoint
from nst_fast.checkpoint_io import AtomicCheckpointIO
from nst_fast.config import StyleSpec, style_specs, uses_identity, validate_train_config
from nst_fast.data import ContentDataModule, load_style_image
from nst_fast.errors import ConfigError, MissingFileError, NstFastError
from nst_fast.models.transformer import TransformerNet, add_conditions, architecture
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


@dataclass
class NetworkPlan:
    """The transformation network a run trains and what its conditions mean.

    ``styles``: checkpoint records (name, image, size) in condition order, then the identity if ``identity``;
    ``specs``: the styles this run trains (their targets go into the loss); ``trained``: their condition
    indices when fine-tuning, ``None`` when the run trains all conditions.
    """

    network: TransformerNet
    styles: list[dict[str, Any]]
    identity: bool
    specs: list[StyleSpec]
    trained: list[int] | None = None


def _model_config(cfg: DictConfig) -> dict[str, int | bool | str | float]:
    """The configured network's architecture as ``TransformerNet.config`` records it (without ``num_conditions``)."""
    return architecture(
        cfg.model.base_channels,
        cfg.model.residual_blocks,
        cfg.model.get("separable", False),
        cfg.model.get("residual_output", False),
        cfg.model.get("upsample", "nearest"),
        cfg.model.get("input_noise", 0.0),
        cfg.model.get("feature_noise", False),
    )


def finetune_base(spec: str) -> Path:
    """``finetune_from``: a checkpoint file, or the name of a bundled model (``nst_fast.assets.BUNDLED_CHECKPOINTS``)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if spec in BUNDLED_CHECKPOINTS:
        return bundled_checkpoint(spec)
    raise MissingFileError(
        f"finetune_from={spec!r} does not exist; pass a .ckpt written by an earlier run or a "
        f"bundled model ({', '.join(BUNDLED_CHECKPOINTS)})"
    )


def plan_network(cfg: DictConfig) -> NetworkPlan:
    """A new network with one condition per configured style (plus the identity), or, with ``finetune_from``,
    the trained network from that checkpoint with the configured styles added as new conditions that alone
    will be trained."""
    specs = style_specs(cfg)
    base_path = cfg.get("finetune_from")
    if base_path is None:
        identity = uses_identity(cfg, len(specs))
        network = instantiate(cfg.model, num_conditions=len(specs) + int(identity))
        return NetworkPlan(network, [spec.record() for spec in specs], identity, specs)
    path = finetune_base(str(base_path))
    base, info = load_transformer(path)
    clash = [spec.name for spec in specs if spec.name in info.style_names]
    if clash:
        raise ConfigError(
            f"finetune_from={base_path!r} already has style(s) {clash} (it has {info.condition_names}): "
            "fine-tune styles under new names"
        )
    base_model = {key: value for key, value in info.transformer.items() if key != "num_conditions"}
    if base_model != _model_config(cfg):
        raise ConfigError(
            f"finetune_from={base_path!r} is a TransformerNet{base_model}, but this run is configured for "
            f"{_model_config(cfg)}: set model.* as the base network's"
            + (f" (model={base_path} for the bundled model)" if str(base_path) in BUNDLED_CHECKPOINTS else "")
        )
    if cfg.get("identity") is not None and bool(cfg.identity) != info.identity:
        raise ConfigError(
            f"identity={cfg.identity} but finetune_from={base_path!r} was trained with identity={info.identity}: "
            "a fine-tuned network keeps its base's conditions (leave identity unset)"
        )
    first = len(info.styles)
    network = add_conditions(base, len(specs), first)
    log.info("fine-tuning %s into %s (conditions %s)", [s.name for s in specs], base_path, info.condition_names)
    return NetworkPlan(
        network.train(),
        info.styles + [spec.record() for spec in specs],
        info.identity,
        specs,
        trained=list(range(first, first + len(specs))),
    )


def _style_list(styles: list[dict[str, Any]], identity: bool) -> list[str]:
    """``name@size`` per style (and ``identity``): how a resume check names a network's conditions."""
    return [f"{style.get('name')}@{style.get('size')}" for style in styles] + (["identity"] if identity else [])


def check_resume(ckpt_path: str, cfg: DictConfig, plan: NetworkPlan) -> dict[str, Any]:
    """Refuse to resume from a checkpoint that is not ours, or that was trained for other styles (names, sizes,
    order, identity) or another network: its style Grams and weights would silently override the config.
    Returns the checkpoint, read once."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"ckpt_path={ckpt_path!r} does not exist; pass a .ckpt written by an earlier run")
    checkpoint = read_checkpoint(path)
    info = checkpoint_info(checkpoint)
    # The style images' paths may differ (another checkout or machine): names and sizes identify the styles.
    found, configured = _style_list(info.styles, info.identity), _style_list(plan.styles, plan.identity)
    if found != configured:
        raise ConfigError(
            f"ckpt_path={ckpt_path!r} was trained for the styles {found}, but this run is configured for "
            f"{configured}: resume with the same style selection, style sizes and identity as the original run"
        )
    names = info.condition_names  # the same conditions as the plan's: checked above
    found_trained = info.trained if info.trained is not None else names
    trained = names if plan.trained is None else [names[c] for c in plan.trained]
    if found_trained != trained:
        raise ConfigError(
            f"ckpt_path={ckpt_path!r} trained the conditions {found_trained}, but this run would train {trained}: "
            "resume a fine-tuning run with the same finetune_from and style, and a full run without finetune_from"
        )
    if info.transformer != plan.network.config:
        raise ConfigError(
            f"ckpt_path={ckpt_path!r} was trained with transformer {info.transformer}, but this run is configured "
            f"for {plan.network.config}: resume with the same model.* settings as the original run"
        )
    return checkpoint


def build_module(cfg: DictConfig, plan: NetworkPlan | None = None) -> StyleTransferModule:
    """Transformation network, loss network and style targets, from the config (and ``plan_network``'s plan)."""
    plan = plan or plan_network(cfg)
    style_images = [load_style_image(spec.image, spec.size, f"style.{spec.name}.image") for spec in plan.specs]
    loss: PerceptualLoss = instantiate(cfg.loss)
    loss.set_styles(
        style_images, [spec.style_weight for spec in plan.specs], [spec.content_weight for spec in plan.specs]
    )
    return instantiate(
        cfg.module,
        transformer=plan.network,
        loss=loss,
        styles=plan.styles,
        identity=plan.identity,
        trained_conditions=plan.trained,
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
    pl.seed_everything(cfg.seed, workers=True)
    plan = plan_network(cfg)
    ckpt_path = cfg.get("ckpt_path")
    resumed = check_resume(ckpt_path, cfg, plan) if ckpt_path is not None else None
    datamodule = build_datamodule(cfg)
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks"))
    checkpoint_io = AtomicCheckpointIO(preloaded={ckpt_path: resumed} if resumed is not None else None)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=[checkpoint_io]
    )
    datamodule.check_batches(trainer.num_nodes * trainer.num_devices)  # world_size is 1 until fit starts DDP
    module = build_module(cfg, plan)
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
