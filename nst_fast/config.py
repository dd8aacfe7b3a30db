"""Hydra/OmegaConf glue: the ``${asset:...}`` resolver and range checks the schema cannot express."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nst_fast.errors import ConfigError

#: The repository's ``conf/`` folder (the entry points pass it to Hydra).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def asset_path(relative: str) -> str:
    """Absolute path of a file bundled in ``nst_fast/assets`` (independent of the current directory)."""
    path = Path(str(resources.files("nst_fast") / "assets" / relative))
    if not path.exists():
        raise ConfigError(f"${{asset:{relative}}}: no bundled asset {relative!r} in {path.parent}")
    return str(path)


def register_resolvers() -> None:
    """Register ``${asset:styles/starry_night.jpg}``; safe to call more than once."""
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset_path)


def _require(cfg: DictConfig, key: str, condition: Any, requirement: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r} is out of range: it must be {requirement}")


def validate_train_config(cfg: DictConfig) -> None:
    """Reject out-of-range values before anything is built, naming the key."""
    loss = cfg.loss
    for key in ("content_weight", "style_weight", "tv_weight"):
        _require(cfg, f"loss.{key}", loss[key] >= 0, ">= 0")
    _require(cfg, "loss.style_layers", len(loss.style_layers) > 0, "a non-empty mapping layer -> lambda_l")
    for name, weight in loss.style_layers.items():
        _require(cfg, f"loss.style_layers.{name}", weight >= 0, ">= 0")
    _require(cfg, "style.size", cfg.style.size > 0, "a positive number of pixels")
    _require(cfg, "data.image_size", cfg.data.image_size > 0, "a positive number of pixels")
    _require(cfg, "data.batch_size", cfg.data.batch_size >= 1, ">= 1")
    _require(cfg, "data.num_workers", cfg.data.num_workers >= 0, ">= 0")
    samples = cfg.data.get("samples_per_epoch")
    _require(cfg, "data.samples_per_epoch", samples is None or samples >= 1, "null or >= 1")
    _require(cfg, "trainer.max_steps", cfg.trainer.max_steps > 0, "> 0")
    _require(cfg, "optimizer.lr", cfg.optimizer.lr > 0, "> 0")
    _require(cfg, "max_consecutive_nonfinite", cfg.max_consecutive_nonfinite >= 1, ">= 1")
