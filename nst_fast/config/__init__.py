"""Hydra/OmegaConf glue: where the configs live (``nst_fast/conf``, inside the package so that an installed wheel
trains and exports), the typed schemas (``schemas``), the resolvers, checks that types cannot express (``checks``)
and the renamed settings that old command lines may still use (``renames``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nst_fast.assets import asset_path
from nst_fast.config.checks import STYLE_KEYS, StyleSpec, style_specs, uses_identity, validate_train_config
from nst_fast.config.renames import translate_overrides
from nst_fast.config.schemas import store_schemas
from nst_fast.errors import ConfigError, MissingFileError

#: The package's ``conf/`` folder (the entry points pass it to Hydra).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"

__all__ = [
    "CONFIG_DIR",
    "STYLE_KEYS",
    "StyleSpec",
    "asset_resolver",
    "compose",
    "register_resolvers",
    "style_names",
    "style_specs",
    "translate_overrides",
    "uses_identity",
    "validate_train_config",
]


def asset_resolver(relative: str) -> str:
    """``${asset:styles/starry_night.jpg}``: the bundled file's absolute path (``nst_fast.assets``)."""
    try:
        return asset_path(relative)
    except MissingFileError as error:
        raise ConfigError(f"${{asset:{relative}}}: {error}") from error


def style_names(styles: Any) -> str:
    """``starry`` or ``starry+wave+...`` for the selected styles (run folder names); ``none`` without any."""
    return "+".join(str(name) for name in styles) if styles else "none"


def register_resolvers() -> None:
    """Register ``${asset:styles/starry_night.jpg}`` and ``${style_names:${style}}`` and the schemas; safe to call
    more than once."""
    store_schemas()
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset_resolver)
    if not OmegaConf.has_resolver("style_names"):
        OmegaConf.register_new_resolver("style_names", style_names)


def compose(config_name: str = "train", overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The config as the entry point would see it (without Hydra's runtime section), for tests and benchmarks."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))
