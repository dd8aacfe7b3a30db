"""Hydra/OmegaConf glue: the ``${asset:...}`` resolver and range checks the schema cannot express."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
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


def _check_number(
    cfg: DictConfig, key: str, minimum: float, *, integer: bool = False, exclusive: bool = False, optional: bool = False
) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ConfigError(f"{key}={value!r} has the wrong type: it must be {kind}")
    if value < minimum or (exclusive and value == minimum):
        bound = f"> {minimum}" if exclusive else f">= {minimum}"
        raise ConfigError(f"{key}={value!r} is out of range: it must be {kind} {bound}")


def validate_train_config(cfg: DictConfig) -> None:
    """Reject wrongly typed or out-of-range values before anything is built, naming the key."""
    for key in ("content_weight", "style_weight", "tv_weight"):
        _check_number(cfg, f"loss.{key}", 0)
    if not cfg.loss.style_layers:
        raise ConfigError("loss.style_layers is empty: it must map at least one layer name to its weight lambda_l")
    for name in cfg.loss.style_layers:
        _check_number(cfg, f"loss.style_layers.{name}", 0)
    _check_number(cfg, "style.size", 0, integer=True, exclusive=True)
    _check_number(cfg, "data.image_size", 0, integer=True, exclusive=True)
    _check_number(cfg, "data.batch_size", 1, integer=True)
    _check_number(cfg, "data.num_workers", 0, integer=True)
    _check_number(cfg, "data.samples_per_epoch", 1, integer=True, optional=True)
    _check_number(cfg, "trainer.max_steps", 0, integer=True, exclusive=True)
    _check_number(cfg, "optimizer.lr", 0, exclusive=True)
    _check_number(cfg, "max_consecutive_nonfinite", 1, integer=True)
