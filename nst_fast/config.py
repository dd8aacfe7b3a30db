"""Hydra/OmegaConf glue: typed schemas for the config groups, the ``${asset:...}`` resolver, and range
checks that types cannot express.

The schemas are registered in Hydra's ConfigStore when this module is imported; the YAML files in
``conf/`` name them in their defaults lists, so an unknown key or a value of the wrong type is rejected by
Hydra itself, with its own message, before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from nst_fast.errors import ConfigError
from nst_fast.models.vgg import downsampling_factor, layer_names

#: The repository's ``conf/`` folder (the entry points pass it to Hydra).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


#: Keys of one style in ``conf/style/NAME.yaml`` (``NAME: {image: ..., size: ..., ...}``) and their defaults;
#: ``size`` defaults to the top-level ``style_size``.
STYLE_KEYS = {"image": None, "size": None, "style_weight": 1.0, "content_weight": 1.0}


@dataclass(frozen=True)
class StyleSpec:
    """One style of a run: ``name`` (the config key), ``image`` path, ``size`` (shorter side in pixels at which
    its Gram targets are computed), and its own multipliers of ``loss.style_weight`` and ``loss.content_weight``."""

    name: str
    image: str
    size: int
    style_weight: float = 1.0
    content_weight: float = 1.0

    def record(self) -> dict[str, Any]:
        """What a checkpoint records about this style."""
        return {"name": self.name, "image": self.image, "size": self.size}


@dataclass
class ModelSchema:
    """``conf/model/*``: the transformation network."""

    _target_: str = "nst_fast.models.TransformerNet"
    base_channels: int = 32
    residual_blocks: int = 5
    separable: bool = False


@dataclass
class LossSchema:
    """``conf/loss/*``: loss network and cost weights (see ``nst_fast.perceptual.PerceptualLoss``)."""

    _target_: str = "nst_fast.perceptual.PerceptualLoss"
    network: str = "vgg16"
    weights: str = "imagenet"
    content_layer: str = "relu2_2"
    content_weight: float = 1.0
    style_weight: float = 1.0
    style_layers: dict[str, float] = field(default_factory=dict)
    style_normalisation: str = "reference"
    tv_weight: float = 0.0
    stability_weight: float = 0.0
    stability_shift: float = 1.0
    stability_noise: float = 0.02


@dataclass
class DataSchema:
    """``conf/data/*``: content photos (see ``nst_fast.data.ContentDataModule``)."""

    _target_: str = "nst_fast.data.ContentDataModule"
    root: str = MISSING
    image_size: int = 256
    batch_size: int = 4
    num_workers: int = 2
    samples_per_epoch: Optional[int] = None  # noqa: UP045 - OmegaConf needs Optional, not "int | None"
    max_pixels: int = 16384 * 16384
    pin_memory: bool = True
    val_root: Optional[str] = None  # noqa: UP045
    val_size: int = 256


@dataclass
class TrainSchema:
    """Top level of ``conf/train.yaml``; the groups carry their own schemas."""

    style: Any = None  # name -> style (conf/style/*.yaml); several with 'style=[starry,wave]'
    model: Any = MISSING
    loss: Any = MISSING
    data: Any = MISSING
    trainer: Any = MISSING
    logger: Any = None
    callbacks: Any = None
    optimizer: Any = MISSING
    seed: int = 0
    ckpt_path: Optional[str] = None  # noqa: UP045
    channels_last: bool = True
    max_consecutive_nonfinite: int = 10
    compile: bool = False
    output_lr_scale: float = 1.0
    style_size: int = 512
    identity: Optional[bool] = None  # noqa: UP045
    finetune_from: Optional[str] = None  # noqa: UP045


def _store_schemas() -> None:
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainSchema)
    store.store(group="model", name="model_schema", node=ModelSchema)
    store.store(group="loss", name="loss_schema", node=LossSchema)
    store.store(group="data", name="data_schema", node=DataSchema)


_store_schemas()


def asset_path(relative: str) -> str:
    """Absolute path of a file bundled in ``nst_fast/assets`` (independent of the current directory)."""
    path = Path(str(resources.files("nst_fast") / "assets" / relative))
    if not path.exists():
        raise ConfigError(f"${{asset:{relative}}}: no bundled asset {relative!r} in {path.parent}")
    return str(path)


def style_names(styles: Any) -> str:
    """``starry`` or ``starry+wave+...`` for the selected styles (run folder names); ``none`` without any."""
    return "+".join(str(name) for name in styles) if styles else "none"


def register_resolvers() -> None:
    """Register ``${asset:styles/starry_night.jpg}`` and ``${style_names:${style}}``; safe to call more than once."""
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset_path)
    if not OmegaConf.has_resolver("style_names"):
        OmegaConf.register_new_resolver("style_names", style_names)


def style_specs(cfg: DictConfig) -> list[StyleSpec]:
    """The run's styles in the order selected (``style=[starry,wave]`` -> starry, wave), checked.

    Raises ``ConfigError`` naming the key for no style, an unknown key, a missing image or a bad value.
    """
    styles = cfg.get("style")
    if not styles:
        raise ConfigError(
            "no style selected: pass style=NAME, 'style=[NAME,NAME,...]' or a painting of your own with "
            "'style=[]' +style.NAME.image=/path/to/painting.jpg"
        )
    if not isinstance(styles, DictConfig):
        raise ConfigError(f"style={styles!r} must map style names to their settings (conf/style/*.yaml)")
    specs = []
    for name, node in styles.items():
        if not isinstance(node, DictConfig):
            raise ConfigError(f"style.{name}={node!r} must be a mapping with at least an image, e.g. +style.{name}.image=PATH")
        if name == "identity":
            raise ConfigError("style.identity: 'identity' names the identity condition; give the style another name")
        unknown = sorted(set(node) - set(STYLE_KEYS))
        if unknown:
            raise ConfigError(f"style.{name} has unknown key(s) {unknown}; valid keys are {sorted(STYLE_KEYS)}")
        if not node.get("image"):
            raise ConfigError(f"style.{name}.image is missing: pass +style.{name}.image=/path/to/painting.jpg")
        settings = {key: node.get(key, default) for key, default in STYLE_KEYS.items()}
        if settings["size"] is None:
            settings["size"] = cfg.style_size
        view = OmegaConf.create({"style": {name: settings}})
        _check_number(view, f"style.{name}.size", 0, integer=True, exclusive=True)
        for key in ("style_weight", "content_weight"):
            _check_number(view, f"style.{name}.{key}", 0)
        specs.append(StyleSpec(name=str(name), image=str(settings["image"]), size=int(settings["size"]),
                               style_weight=float(settings["style_weight"]), content_weight=float(settings["content_weight"])))
    return specs


def uses_identity(cfg: DictConfig, num_styles: int) -> bool:
    """Whether the network also learns the identity condition: ``identity`` if set, else with several styles."""
    return bool(cfg.identity) if cfg.get("identity") is not None else num_styles > 1


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
    for key in ("content_weight", "style_weight", "tv_weight", "stability_weight", "stability_shift",
                "stability_noise"):
        _check_number(cfg, f"loss.{key}", 0)
    if not cfg.loss.style_layers:
        raise ConfigError("loss.style_layers is empty: it must map at least one layer name to its weight lambda_l")
    for name in cfg.loss.style_layers:
        _check_number(cfg, f"loss.style_layers.{name}", 0)
    _check_number(cfg, "style_size", 0, integer=True, exclusive=True)
    style_specs(cfg)
    _check_number(cfg, "data.image_size", 0, integer=True, exclusive=True)
    _check_number(cfg, "data.batch_size", 1, integer=True)
    _check_number(cfg, "data.num_workers", 0, integer=True)
    _check_number(cfg, "data.samples_per_epoch", 1, integer=True, optional=True)
    _check_number(cfg, "data.val_size", 0, integer=True, exclusive=True)
    _check_number(cfg, "trainer.max_steps", 0, integer=True, exclusive=True)
    _check_number(cfg, "optimizer.lr", 0, exclusive=True)
    _check_number(cfg, "output_lr_scale", 0, exclusive=True)
    _check_number(cfg, "max_consecutive_nonfinite", 1, integer=True)
    _check_number(cfg, "trainer.log_every_n_steps", 1, integer=True, optional=True)
    _check_number(cfg, "model.base_channels", 1, integer=True)
    _check_number(cfg, "model.residual_blocks", 0, integer=True)
    _check_loss_layers(cfg)


def _check_loss_layers(cfg: DictConfig) -> None:
    """Layer names exist in the loss network, and crops and style image are large enough for the deepest one
    (at least 2x2 activations there): checked before any weights are loaded or downloaded."""
    network = cfg.loss.network
    names = layer_names(network)
    layers = [*cfg.loss.style_layers, cfg.loss.content_layer]
    unknown = [layer for layer in layers if layer not in names]
    if unknown:
        raise ConfigError(f"loss layers {unknown} do not exist in {network}; valid names are {names}")
    deepest = max(layers, key=names.index)
    minimum = 2 * downsampling_factor(network, deepest)
    sizes = {"data.image_size": cfg.data.image_size, **{f"style.{s.name}.size": s.size for s in style_specs(cfg)}}
    for key, value in sizes.items():
        if value < minimum:
            raise ConfigError(
                f"{key}={value} is too small for the deepest loss layer {deepest} of {network}: "
                f"it needs at least {minimum} pixels"
            )
